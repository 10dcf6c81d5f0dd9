#!/usr/bin/env python3
"""Builds the vodfarm Grafana dashboard, helm/vodfarm/files/grafana/vodfarm.json.

The JSON is generated, not edited by hand: change the panels here, then run
    python3 deploy/grafana/build_dashboard.py
`--check` exits 1 when the committed JSON differs from what this script
builds (scripts/helm_check.py runs it, so the two cannot drift).

Every metric a panel reads must be exported by some role's /metrics:
tests/it/metrics.rs checks that against live processes.
"""
import json
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                   "helm", "vodfarm", "files", "grafana", "vodfarm.json")

DS = {"type": "prometheus", "uid": "${datasource}"}
panels = []
pid = [0]
y = [0]
x = [0]
rowh = [0]

def nid():
    pid[0] += 1
    return pid[0]

def row(title):
    if x[0] != 0:
        y[0] += rowh[0]; x[0] = 0
    panels.append({"type": "row", "title": title, "id": nid(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1; rowh[0] = 0

def place(w, h):
    if x[0] + w > 24:
        y[0] += rowh[0]; x[0] = 0; rowh[0] = 0
    g = {"h": h, "w": w, "x": x[0], "y": y[0]}
    x[0] += w; rowh[0] = max(rowh[0], h)
    return g

def targets(ts):
    out = []
    for i, t in enumerate(ts):
        expr, legend = t
        out.append({"datasource": DS, "expr": expr, "legendFormat": legend,
                    "refId": chr(ord("A") + i), "range": True})
    return out

def ts(title, desc, tl, unit="short", w=8, h=8, stack=False, minv=None, maxv=None, overrides=None):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 30,
              "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    defaults = {"unit": unit, "custom": custom}
    if minv is not None: defaults["min"] = minv
    if maxv is not None: defaults["max"] = maxv
    panels.append({"type": "timeseries", "title": title, "description": desc, "id": nid(),
                   "datasource": DS, "gridPos": place(w, h), "targets": targets(tl),
                   "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
                   "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                               "tooltip": {"mode": "multi", "sort": "desc"}}})

def stat(title, desc, expr, unit="short", w=4, h=4, thresholds=None, decimals=None):
    steps = thresholds or [{"color": "green", "value": None}]
    d = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps},
         "color": {"mode": "thresholds"}}
    if decimals is not None: d["decimals"] = decimals
    panels.append({"type": "stat", "title": title, "description": desc, "id": nid(),
                   "datasource": DS, "gridPos": place(w, h),
                   "targets": [{"datasource": DS, "expr": expr, "refId": "A", "instant": True, "legendFormat": "__auto"}],
                   "fieldConfig": {"defaults": d, "overrides": []},
                   "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                               "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                               "orientation": "auto", "textMode": "auto"}})

R = "$__rate_interval"
def q(p, metric, by, extra=""):
    return f"histogram_quantile({p}, sum by ({by}) (rate({metric}_bucket{extra}[{R}])))"

# ---------------------------------------------------------------- overview
row("Overview")
stat("Pending jobs", "Pending jobs in the whole queue (vodfarm_jobs_pending; every coordinator replica reports the whole queue, hence max).",
     "sum(max by (job_type) (vodfarm_jobs_pending))")
stat("Processing jobs", "Leased jobs in the whole queue (vodfarm_jobs_processing).",
     "sum(max by (job_type) (vodfarm_jobs_processing))")
stat("Oldest pending job", "Age of the oldest due pending job (vodfarm_queue_oldest_pending_seconds).",
     "max(vodfarm_queue_oldest_pending_seconds)", unit="s",
     thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 600}, {"color": "red", "value": 1800}])
stat("Workers seen", "Workers that polled or heartbeated in the last 5 minutes, per the coordinator (vodfarm_workers_seen).",
     "max(vodfarm_workers_seen)",
     thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}])
stat("Encoded frames/s", "Output frames encoded per second over all workers and renditions, averaged over 5 minutes (vodfarm_worker_frames_encoded_total is added when a transcode finishes, so long jobs show up at their end).",
     "sum(rate(vodfarm_worker_frames_encoded_total[5m]))", unit="short")
stat("Origin 5xx (5m)", "Share of origin/shield requests answered 5xx over 5 minutes (health and metrics routes excluded).",
     'sum(rate(vodfarm_origin_requests_total{status=~"5..",route!~"healthz|metrics"}[5m])) / sum(rate(vodfarm_origin_requests_total{route!~"healthz|metrics"}[5m]))',
     unit="percentunit", decimals=2,
     thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.01}, {"color": "red", "value": 0.05}])

# ---------------------------------------------------------------- queue
row("Queue")
ts("Pending jobs by type", "vodfarm_jobs_pending: jobs waiting for a worker (including ones waiting on dependencies or a retry backoff), whole queue.",
   [("max by (job_type) (vodfarm_jobs_pending)", "{{job_type}}")], stack=True)
ts("Processing jobs by type", "vodfarm_jobs_processing: leased jobs, whole queue.",
   [("max by (job_type) (vodfarm_jobs_processing)", "{{job_type}}")], stack=True)
ts("Oldest pending job age", "vodfarm_queue_oldest_pending_seconds: how long the oldest due pending job has waited. The VodfarmQueueOldestPendingTooOld alert fires above 30 minutes.",
   [("max by (job_type) (vodfarm_queue_oldest_pending_seconds)", "{{job_type}}")], unit="s")
ts("Leases granted", "Leases granted per second, all coordinator replicas.",
   [(f"sum by (job_type) (rate(vodfarm_leases_granted_total[{R}]))", "{{job_type}}")], unit="ops")
ts("Lease expiries", "Leases the reapers found expired per second: the worker stopped heartbeating. outcome=retry: the job went back to the queue; failed: it was on its last attempt.",
   [(f"sum by (job_type, outcome) (rate(vodfarm_lease_expiries_total[{R}]))", "{{job_type}} {{outcome}}")], unit="ops")
ts("Long polls waiting", "Workers' lease polls waiting for work, per coordinator replica (idle worker slots).",
   [("sum by (instance) (vodfarm_lease_polls_waiting)", "{{instance}}")])
ts("Jobs completed and failed", "Completions, and failures reported by workers (outcome=retry: will be retried; failed: for good), per second.",
   [(f"sum by (job_type) (rate(vodfarm_jobs_completed_total[{R}]))", "completed {{job_type}}"),
    (f"sum by (job_type, outcome) (rate(vodfarm_jobs_failed_total[{R}]))", "failed {{job_type}} ({{outcome}})")], unit="ops", w=12)
ts("Claim queries", "Claim statements the coordinators sent to PostgreSQL per second (the cost of leasing).",
   [(f"sum by (instance) (rate(vodfarm_claim_queries_total[{R}]))", "{{instance}}")], unit="ops", w=12)

# ---------------------------------------------------------------- job durations
row("Job durations")
ts("Job duration, lease to completion", "vodfarm_job_duration_seconds (coordinator): time from lease to completion of completed jobs, 50th/90th/99th percentiles by type.",
   [(q(0.5, "vodfarm_job_duration_seconds", "job_type, le"), "p50 {{job_type}}"),
    (q(0.9, "vodfarm_job_duration_seconds", "job_type, le"), "p90 {{job_type}}"),
    (q(0.99, "vodfarm_job_duration_seconds", "job_type, le"), "p99 {{job_type}}")], unit="s", w=12)
ts("Job wall time on workers", "vodfarm_worker_job_seconds (worker): wall time of every job a worker ran, whatever its outcome, 50th/99th percentiles by type.",
   [(q(0.5, "vodfarm_worker_job_seconds", "job_type, le"), "p50 {{job_type}}"),
    (q(0.99, "vodfarm_worker_job_seconds", "job_type, le"), "p99 {{job_type}}")], unit="s", w=12)
ts("Mean job duration", "Mean lease-to-completion time by type (sum/count of vodfarm_job_duration_seconds).",
   [(f"sum by (job_type) (rate(vodfarm_job_duration_seconds_sum[{R}])) / sum by (job_type) (rate(vodfarm_job_duration_seconds_count[{R}]))", "{{job_type}}")], unit="s", w=12)
ts("Worker job outcomes", "Jobs finished by workers per second, by type and outcome.",
   [(f"sum by (job_type, outcome) (rate(vodfarm_worker_jobs_total[{R}]))", "{{job_type}} {{outcome}}")], unit="ops", w=12)

# ---------------------------------------------------------------- workers
row("Workers")
ts("Encoded frames per second", "Output frames encoded per second (summed over renditions), per worker. The counter grows when a transcode finishes, so this is an average over whole jobs, not a live rate.",
   [(f"sum by (instance) (rate(vodfarm_worker_frames_encoded_total[{R}]))", "{{instance}}"),
    (f"sum(rate(vodfarm_worker_frames_encoded_total[{R}]))", "all workers")], unit="short")
ts("Jobs running", "Jobs running on workers now, by type.",
   [("sum by (job_type) (vodfarm_worker_jobs_running)", "{{job_type}}")], stack=True)
ts("Worker uploads", "Bytes the workers wrote to the object store per second, and HLS segments uploaded per second.",
   [(f"sum(rate(vodfarm_worker_uploaded_bytes_total[{R}]))", "bytes/s"),
    (f"sum(rate(vodfarm_worker_segments_uploaded_total[{R}]))", "segments/s")], unit="short")

# ---------------------------------------------------------------- origin
row("Origin and shield")
ts("Cache hit ratio", "Requests answered from the object cache over those that needed an object (hits + misses that started an upstream fetch + requests that joined one), per origin/shield pod and overall.",
   [(f"sum by (instance) (rate(vodfarm_origin_cache_hits_total[{R}])) / (sum by (instance) (rate(vodfarm_origin_cache_hits_total[{R}])) + sum by (instance) (rate(vodfarm_origin_cache_misses_total[{R}])) + sum by (instance) (rate(vodfarm_origin_coalesced_waiters_total[{R}])))", "{{instance}}"),
    (f"sum(rate(vodfarm_origin_cache_hits_total[{R}])) / (sum(rate(vodfarm_origin_cache_hits_total[{R}])) + sum(rate(vodfarm_origin_cache_misses_total[{R}])) + sum(rate(vodfarm_origin_coalesced_waiters_total[{R}])))", "overall")],
   unit="percentunit", minv=0, maxv=1)
ts("Upstream time to first byte", "vodfarm_origin_upstream_first_byte_seconds: time until the upstream (object store, or the origin behind a shield) answered, 50th/90th/99th percentiles.",
   [(q(0.5, "vodfarm_origin_upstream_first_byte_seconds", "le"), "p50"),
    (q(0.9, "vodfarm_origin_upstream_first_byte_seconds", "le"), "p90"),
    (q(0.99, "vodfarm_origin_upstream_first_byte_seconds", "le"), "p99")], unit="s")
ts("Upstream fetches by outcome", "Requests to the upstream per second: ok, not_found, timeout, error, abandoned.",
   [(f"sum by (outcome) (rate(vodfarm_origin_upstream_fetches_total[{R}]))", "{{outcome}}")], unit="ops", stack=True)
ts("Requests by route", "Origin/shield requests per second by route (master, playlist, segment, thumbnail, subtitle...).",
   [(f'sum by (route) (rate(vodfarm_origin_requests_total{{route!~"healthz|metrics"}}[{R}]))', "{{route}}")], unit="reqps", stack=True)
ts("Bytes out", "Body bytes sent to clients (CDN edges or shields), per second.",
   [(f"sum by (instance) (rate(vodfarm_origin_bytes_out_total[{R}]))", "{{instance}}")], unit="Bps", stack=True)
ts("Cache size", "Weighed size of each pod's object cache (vodfarm_origin_cache_bytes).",
   [("sum by (instance) (vodfarm_origin_cache_bytes)", "{{instance}}")], unit="bytes")
ts("Coalesced, stale and passthrough", "Requests that joined another request's upstream fetch, expired objects served because the upstream failed (stale-if-error), and objects over the size limit streamed uncached, per second.",
   [(f"sum(rate(vodfarm_origin_coalesced_waiters_total[{R}]))", "coalesced"),
    (f"sum(rate(vodfarm_origin_stale_served_total[{R}]))", "stale served"),
    (f"sum(rate(vodfarm_origin_passthrough_total[{R}]))", "passthrough")], unit="ops")
ts("Video state", "Video state reads from PostgreSQL (state cache misses), change notifications received, and LISTEN connections made (more than the pods: reconnects), per second.",
   [(f"sum(rate(vodfarm_origin_state_lookups_total[{R}]))", "state lookups"),
    (f"sum(rate(vodfarm_origin_invalidations_total[{R}]))", "invalidations"),
    (f"sum(rate(vodfarm_origin_listen_connects_total[{R}]))", "LISTEN connects")], unit="ops")
ts("LISTEN connection and cached objects", "1 while a pod's LISTEN connection for video changes is up (without it every request reads video state from PostgreSQL); objects in each pod's cache on the right axis.",
   [("min by (instance) (vodfarm_origin_listening)", "listening {{instance}}"),
    ("sum by (instance) (vodfarm_origin_cache_objects)", "objects {{instance}}")],
   overrides=[{"matcher": {"id": "byRegexp", "options": "^objects .*"},
               "properties": [{"id": "custom.axisPlacement", "value": "right"}]}])

# ---------------------------------------------------------------- errors
row("HTTP errors")
ts("Origin 5xx by route", "Origin/shield 5xx answers per second, by route and status.",
   [(f'sum by (route, status) (rate(vodfarm_origin_requests_total{{status=~"5.."}}[{R}]))', "{{route}} {{status}}")], unit="reqps", w=12)
ts("Origin 5xx ratio", "Share of origin/shield requests answered 5xx (health and metrics routes excluded). VodfarmOrigin5xxRatio fires above 1%, ...Critical above 5%.",
   [(f'sum(rate(vodfarm_origin_requests_total{{status=~"5..",route!~"healthz|metrics"}}[{R}])) / sum(rate(vodfarm_origin_requests_total{{route!~"healthz|metrics"}}[{R}]))', "5xx ratio")],
   unit="percentunit", w=12, minv=0)
ts("API and coordinator 5xx", "5xx answers per second of the api and the coordinator (vodfarm_http_requests_total), by route and status. Coordinator routes start with /v1/worker/, /v1/jobs or /v1/queue/.",
   [(f'sum by (route, status) (rate(vodfarm_http_requests_total{{status=~"5.."}}[{R}]))', "{{route}} {{status}}")], unit="reqps", w=12)
ts("API and coordinator requests by status", "Requests per second by status (health and metrics routes excluded).",
   [(f'sum by (status) (rate(vodfarm_http_requests_total{{route!~"/healthz|/readyz|/metrics"}}[{R}]))', "{{status}}")], unit="reqps", w=12, stack=True)

# ---------------------------------------------------------------- uploads
row("Uploads")
ts("Upload throughput", "Upload body bytes received by the api (tus PATCH and creation-with-upload), per second.",
   [(f"sum(rate(vodfarm_upload_bytes_total[{R}]))", "bytes/s")], unit="Bps")
ts("Uploads created and completed", "Uploads created, and completed (video processing, jobs enqueued), per minute.",
   [(f"sum(rate(vodfarm_uploads_created_total[{R}])) * 60", "created/min"),
    (f"sum(rate(vodfarm_uploads_completed_total[{R}])) * 60", "completed/min")], unit="short")
ts("Multipart parts", "Multipart parts uploaded to the object store per second.",
   [(f"sum(rate(vodfarm_upload_parts_total[{R}]))", "parts/s")], unit="ops")

# ---------------------------------------------------------------- webhooks
row("Webhooks")
ts("Webhook outbox", "Pending webhook deliveries and the age of the oldest (every sender replica reports the whole outbox). A receiver that is down keeps its deliveries pending for up to --retry-for (24 h); VodfarmWebhooksBacklog fires past two hours.",
   [("max(vodfarm_webhooks_backlog)", "pending"),
    ("max(vodfarm_webhooks_oldest_pending_seconds)", "oldest (s)")], unit="short")
ts("Webhook attempts", "HTTP attempts per second by outcome (delivered: 2xx; http_error: another status; network_error: no answer; refused: the address is not allowed), and endpoints disabled for failing.",
   [(f"sum by (outcome) (rate(vodfarm_webhooks_attempts_total[{R}]))", "{{outcome}}/s"),
    (f"sum(rate(vodfarm_webhooks_endpoints_disabled_total[{R}]))", "disabled/s")], unit="ops", stack=True)
ts("Webhook delivery latency", "From a webhook event to its receiver's 2xx answer, retries included.",
   [(q(0.5, "vodfarm_webhooks_delivery_seconds", "le"), "p50"),
    (q(0.99, "vodfarm_webhooks_delivery_seconds", "le"), "p99")], unit="s")

# ---------------------------------------------------------------- search
row("Search")
ts("Index lag", "Seconds from a change to a video to the search index holding it (vodfarm search-indexer). The target is under a second; VodfarmSearchIndexLagging fires when the oldest waiting change is over a minute old.",
   [(q(0.5, "vodfarm_search_index_lag_seconds", "le"), "p50"),
    (q(0.99, "vodfarm_search_index_lag_seconds", "le"), "p99"),
    ("max(vodfarm_search_outbox_oldest_seconds)", "oldest waiting")], unit="s")
ts("Search outbox", "Changes waiting in search_outbox, and changes applied per second by effect (skip: the index held that version already, e.g. a replay).",
   [("max(vodfarm_search_outbox_pending)", "waiting"),
    (f"sum by (effect) (rate(vodfarm_search_changes_applied_total[{R}]))", "{{effect}}/s")], unit="short")
ts("Search requests", "Search and suggest requests per second by outcome (typo: answered by the typo correction; invalid: a 400).",
   [(f"sum by (route, outcome) (rate(vodfarm_search_requests_total[{R}]))", "{{route}} {{outcome}}")], unit="reqps", stack=True)
ts("Search latency", "Seconds to answer, by route.",
   [(q(0.5, "vodfarm_search_request_duration_seconds", "le, route"), "p50 {{route}}"),
    (q(0.99, "vodfarm_search_request_duration_seconds", "le, route"), "p99 {{route}}")], unit="s")
ts("Hits withheld", "Index candidates the api withheld because PostgreSQL says they may no longer be shown (deleted, private, unfinished since indexed), per second: how far the index lags.",
   [(f"sum(rate(vodfarm_search_hidden_hits_total[{R}]))", "withheld/s")], unit="short")
ts("Indexer batches", "Indexer batches per second by outcome; errors are retried with a backoff.",
   [(f"sum by (outcome) (rate(vodfarm_search_batches_total[{R}]))", "{{outcome}}")], unit="ops")

row("Analytics (counts, recs)")
ts("Playback events applied", "Events the counts consumers applied per second, by result (duplicate: a redelivered or retried event the dedup key stopped), and views counted per second.",
   [(f"sum by (result) (rate(vodfarm_counts_events_total[{R}]))", "{{result}}/s"),
    (f"sum(rate(vodfarm_counts_views_total[{R}]))", "views/s")], unit="short")
ts("Counts consumer lag", "Bus entries (Redis Stream: one per beacon request, up to 100 events; Kafka: one per record, which concurrent beacons of one video share) the counts consumer group has not committed; every replica reports the whole group, hence max(). -1: the bus could not be asked.",
   [("max(vodfarm_counts_lag_entries)", "entries waiting")], unit="short")
ts("Counts batches", "Seconds to apply (one Lua script run), write history for and commit one batch.",
   [(q(0.5, "vodfarm_counts_batch_seconds", "le"), "p50"),
    (q(0.99, "vodfarm_counts_batch_seconds", "le"), "p99")], unit="s")
ts("Counts errors", "Failures per second by stage (bus, redis, history, commit); each is retried with a backoff, the batch uncommitted until it succeeds.",
   [(f"sum by (stage) (rate(vodfarm_counts_errors_total[{R}]))", "{{stage}}")], unit="short")
stat("Last flush age", "Since the last successful flush of view counts to PostgreSQL on any replica (hourly by default; the alert fires after 3 hours).",
     "time() - max(vodfarm_counts_last_flush_timestamp_seconds)", unit="s",
     thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 7200}, {"color": "red", "value": 10800}])
stat("Recs run age", "Since the last recommendation run finished (daily by default; the alert fires after 36 hours).",
     "time() - max(vodfarm_recs_last_run_timestamp_seconds)", unit="s",
     thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 93600}, {"color": "red", "value": 129600}])
ts("Recommendation runs", "Runs finished and failed in the last day; videos with related lists and users with recommendations after the last run.",
   [("sum(increase(vodfarm_recs_runs_total[1d]))", "runs/day"),
    ("sum(increase(vodfarm_recs_failures_total[1d]))", "failures/day"),
    ("max(vodfarm_recs_videos)", "videos"),
    ("max(vodfarm_recs_users)", "users")], unit="short")

dash = {
    "title": "vodfarm",
    "uid": "vodfarm-overview",
    "description": "vodfarm: job queue, workers, origin/shield cache and upstream, HTTP errors, uploads, search, analytics (counts, recs). Shipped by the vodfarm Helm chart (helm/vodfarm/files/grafana/vodfarm.json).",
    "tags": ["vodfarm"],
    "editable": True,
    "graphTooltip": 1,
    "schemaVersion": 39,
    "version": 1,
    "time": {"from": "now-6h", "to": "now"},
    "refresh": "1m",
    "timezone": "",
    "fiscalYearStartMonth": 0,
    "liveNow": False,
    "links": [],
    "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                              "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                              "name": "Annotations & Alerts", "type": "dashboard"}]},
    "templating": {"list": [{"name": "datasource", "label": "Data source", "type": "datasource",
                             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
                             "regex": "", "includeAll": False, "multi": False, "options": [],
                             "skipUrlSync": False}]},
    "panels": panels,
}


def main():
    text = json.dumps(dash, indent=2) + "\n"
    out = os.path.normpath(OUT)
    if sys.argv[1:] == ["--check"]:
        with open(out) as f:
            if f.read() != text:
                print(f"{out} is stale: run python3 deploy/grafana/build_dashboard.py", file=sys.stderr)
                sys.exit(1)
        print(f"{out} is up to date")
        return
    if sys.argv[1:]:
        sys.exit("usage: build_dashboard.py [--check]")
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
