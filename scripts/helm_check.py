#!/usr/bin/env python3
"""Checks the Helm chart (helm/vodfarm), its Grafana dashboard and its
alerting rules, offline (no cluster):

- the dashboard JSON is what deploy/grafana/build_dashboard.py builds;
- `helm lint --strict` with the default values, the required values, and
  every optional feature on (shield, ingress, KEDA, GPU, PrometheusRule);
- `helm template` of each of those: every document parses as YAML and
  names its apiVersion, kind and metadata.name; the objects expected for
  the values are there (dashboard ConfigMap by default, PrometheusRule only
  when enabled); the rendered dashboard is valid JSON whose every query
  parses as PromQL; the rendered PrometheusRule holds exactly the rule
  file's alerts and passes `promtool check rules`;
- rendering without the required values fails with the chart's message.

Helm runs through the helm-python-sdk package (Helm's Go SDK behind a C
ABI; scripts/services.sh installs it): `helm_python.lint` and
`Chart.render`, the equivalents of `helm lint` and `helm template`.
promtool comes from Debian's `prometheus` package (also installed by
scripts/services.sh). Exits 1 on the first failed check, naming it.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CHART = os.path.join(ROOT, "helm", "vodfarm")
DASHBOARD = os.path.join(CHART, "files", "grafana", "vodfarm.json")
ALERTS = os.path.join(CHART, "files", "prometheus", "alerts.yaml")
BUILD_DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "build_dashboard.py")

# Grafana's variables in queries, replaced by something PromQL parses.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

failures = 0


def fail(what):
    global failures
    failures += 1
    print(f"FAIL: {what}", file=sys.stderr)


def die(what):
    print(f"FAIL: {what}", file=sys.stderr)
    sys.exit(1)


try:
    import helm_python
except ImportError:
    die("python module helm_python missing: pip install helm-python-sdk (scripts/services.sh does)")
try:
    import yaml
except ImportError:
    die("python module yaml missing: pip install pyyaml")
PROMTOOL = shutil.which("promtool")
if not PROMTOOL:
    die("promtool missing: apt-get install prometheus (scripts/services.sh does)")


def merged(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


REQUIRED = {
    "database": {"url": "postgres://vodfarm:pw@postgres:5432/vodfarm"},
    "auth": {"workerToken": "worker-token", "operatorToken": "operator-token",
             "signingSecret": "signing-secret"},
    "store": {"url": "s3://vodfarm-media"},
    "analytics": {"redis": {"url": "redis://redis:6379"}},
}
EVERYTHING = merged(REQUIRED, {
    "store": {"endpoint": "http://minio:9000", "region": "us-east-1",
              "accessKeyId": "id", "secretAccessKey": "secret"},
    "api": {"ingress": {"enabled": True, "className": "nginx",
                        "tls": [{"secretName": "api-tls", "hosts": ["api.example.com"]}]}},
    "worker": {"keda": {"enabled": True, "minReplicaCount": 0},
               "gpu": {"enabled": True, "runtimeClassName": "nvidia", "count": 2,
                       "sessionsPerGpu": 3, "nvrtcLib": "/opt/nvrtc/libnvrtc.so.12",
                       "nodeSelector": {"nvidia.com/gpu.present": "true"},
                       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                        "effect": "NoSchedule"}]}},
    "shield": {"enabled": True},
    "purger": {"enabled": True, "replicas": 2,
               "purgeUrls": ["http://varnish-0.edge:6081", "http://varnish-1.edge:6081"],
               "fastly": {"serviceId": "SU1Z0isxPaozGVKXdv0eY", "apiToken": "fastly-token"},
               "cloudflare": {"zoneId": "023e105f4ecef8ad9ca31a8372d0c353",
                              "apiToken": "cf-token", "purgeBy": "prefixes",
                              "prefixHost": "cdn.example.com"},
               "cloudfront": {"distributionId": "EDFDVBD6EXAMPLE"}},
    "search": {"elasticsearch": {"url": "https://vodfarm:pw@elasticsearch:9200"}},
    "searchIndexer": {"replicas": 2},
    "webhooks": {"replicas": 2},
    "webhookDestinations": {"allowPrivate": True},
    "monitoring": {
        "grafanaDashboard": {"namespace": "monitoring",
                             "annotations": {"grafana_folder": "vodfarm"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                           "additionalAlertLabels": {"team": "video", "severity": "ignored"}},
    },
})
NO_DASHBOARD = merged(REQUIRED, {"monitoring": {"grafanaDashboard": {"enabled": False}}})

# name -> (values, kinds that must be rendered, kinds that must not)
CASES = {
    "defaults+required": (REQUIRED, {"ConfigMap", "Deployment", "Job"},
                          {"PrometheusRule", "ScaledObject", "Ingress"}),
    "everything on": (EVERYTHING, {"ConfigMap", "PrometheusRule", "ScaledObject", "Ingress"}, set()),
    "no dashboard": (NO_DASHBOARD, {"Deployment"}, {"ConfigMap", "PrometheusRule"}),
}


def quiet_lint(values):
    """helm_python.lint, with the Go side's stderr held back: helm lint
    logs every `fail` of the chart's required-value checks at INFO (on
    stderr, around Python's logging). Returns (report, that output)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as err:
        os.dup2(err.fileno(), 2)
        try:
            report = helm_python.lint(CHART, values, strict=True)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        return report, err.read().decode(errors="replace")


def promtool_check_rules(groups, what):
    """`promtool check rules` on a rule file holding `groups`."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
        path = f.name
    try:
        r = subprocess.run([PROMTOOL, "check", "rules", path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        fail(f"{what}: promtool check rules:\n{r.stdout}{r.stderr}")
    return r.returncode == 0


def dashboard_queries(dash):
    """Every (panel title, expr) of a dashboard, rows' nested panels too."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    return out


def check_dashboard(text, what):
    try:
        dash = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"{what}: dashboard is not JSON: {e}")
        return
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dash:
            fail(f"{what}: dashboard has no {key!r}")
    queries = dashboard_queries(dash)
    if not queries:
        fail(f"{what}: dashboard has no queries")
        return
    # PromQL syntax: each query as a recording rule, through promtool.
    rules = []
    for i, (title, expr) in enumerate(queries):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        if "$" in expr:
            fail(f"{what}: panel {title!r}: unknown Grafana variable in {expr!r}")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    if promtool_check_rules([{"name": "dashboard", "rules": rules}], f"{what}: dashboard queries"):
        print(f"  dashboard: {len(dash['panels'])} panels, {len(queries)} queries parse as PromQL")


def container_env(deployment):
    """name -> env entry of a Deployment's first container."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in containers[0].get("env", [])}


def check_gpu_pool(name, kinds, values):
    """With the GPU pool on: the GPU limit, sessions per GPU as the
    worker's concurrency, NVRTC_LIB, GPU node selector and toleration."""
    gpu = ((values.get("worker") or {}).get("gpu")) or {}
    if not gpu.get("enabled"):
        return
    for path, d in kinds.get("Deployment", []):
        if not d["metadata"]["name"].endswith("worker"):
            continue
        spec = d["spec"]["template"]["spec"]
        env = container_env(d)
        limits = (spec["containers"][0].get("resources") or {}).get("limits") or {}
        if str(limits.get("nvidia.com/gpu")) != str(gpu["count"]):
            fail(f"helm template ({name}): worker GPU limit {limits.get('nvidia.com/gpu')!r}")
        want = str(gpu["count"] * gpu["sessionsPerGpu"])
        if (env.get("VODFARM_WORKER_CONCURRENCY") or {}).get("value") != want:
            fail(f"helm template ({name}): worker concurrency is not count x sessionsPerGpu ({want})")
        if (env.get("NVRTC_LIB") or {}).get("value") != gpu["nvrtcLib"]:
            fail(f"helm template ({name}): worker NVRTC_LIB missing")
        if (spec.get("nodeSelector") or {}).get("nvidia.com/gpu.present") != "true" \
                or not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations") or []):
            fail(f"helm template ({name}): worker lacks the GPU node selector or toleration")
        print(f"  GPU pool ({name}): {limits.get('nvidia.com/gpu')} GPU(s), concurrency {want}, node selector and toleration")


def check_token_separation(name, kinds):
    """The coordinator gets the operator token from its own Secret key;
    no other role gets it (workers parse untrusted media)."""
    for path, d in kinds.get("Deployment", []):
        env = container_env(d)
        op = env.get("VODFARM_OPERATOR_TOKEN")
        if path.endswith("coordinator-deployment.yaml"):
            ref = ((op or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            worker_ref = ((env.get("VODFARM_WORKER_TOKEN") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            if not ref or ref.get("optional"):
                fail(f"helm template ({name}): the coordinator does not require VODFARM_OPERATOR_TOKEN")
            elif ref.get("key") == worker_ref.get("key"):
                fail(f"helm template ({name}): operator and worker tokens share the Secret key {ref.get('key')!r}")
        elif op is not None or "VODFARM_ADMIN_TOKEN" in env:
            fail(f"helm template ({name}): {path} gets the operator token")


def check_render(name, values, want, unwanted):
    chart = helm_python.Chart.load(CHART)
    try:
        manifests = chart.render(values, name="vod", namespace="media", is_install=True)
    except helm_python.HelmError as e:
        fail(f"helm template ({name}): {e}")
        return
    kinds = {}
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            fail(f"helm template ({name}): {path} is not YAML: {e}")
            continue
        for d in docs:
            if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind") \
                    or not (d.get("metadata") or {}).get("name"):
                fail(f"helm template ({name}): {path}: a document without apiVersion/kind/metadata.name")
                continue
            kinds.setdefault(d["kind"], []).append((path, d))
    for k in sorted(want - kinds.keys()):
        fail(f"helm template ({name}): no {k} rendered")
    for k in sorted(unwanted & kinds.keys()):
        fail(f"helm template ({name}): {k} rendered but not asked for")
    print(f"  helm template ({name}): " + ", ".join(f"{len(v)} {k}" for k, v in sorted(kinds.items())))

    check_token_separation(name, kinds)
    check_gpu_pool(name, kinds, values)

    mon = values.get("monitoring", {})
    for path, d in kinds.get("ConfigMap", []):
        if not path.endswith("grafana-dashboard.yaml"):
            continue
        labels = d["metadata"].get("labels", {})
        if labels.get("grafana_dashboard") != "1":
            fail(f"helm template ({name}): dashboard ConfigMap lacks grafana_dashboard: \"1\": {labels}")
        ns = mon.get("grafanaDashboard", {}).get("namespace") or "media"
        if d["metadata"].get("namespace") != ns:
            fail(f"helm template ({name}): dashboard ConfigMap in {d['metadata'].get('namespace')}, not {ns}")
        data = d.get("data") or {}
        if list(data) != ["vodfarm.json"]:
            fail(f"helm template ({name}): dashboard ConfigMap data keys {list(data)}")
            continue
        with open(DASHBOARD) as f:
            if json.loads(data["vodfarm.json"]) != json.load(f):
                fail(f"helm template ({name}): rendered dashboard differs from {DASHBOARD}")
        check_dashboard(data["vodfarm.json"], f"helm template ({name})")

    for path, d in kinds.get("PrometheusRule", []):
        if d["apiVersion"] != "monitoring.coreos.com/v1":
            fail(f"helm template ({name}): PrometheusRule apiVersion {d['apiVersion']}")
        groups = (d.get("spec") or {}).get("groups") or []
        with open(ALERTS) as f:
            source = yaml.safe_load(f)["groups"]
        extra = mon.get("prometheusRule", {}).get("additionalAlertLabels", {})
        want_groups = copy.deepcopy(source)
        for g in want_groups:
            for r in g["rules"]:
                r["labels"] = {**extra, **r.get("labels", {})}
        if groups != want_groups:
            fail(f"helm template ({name}): PrometheusRule groups differ from {ALERTS} (+ additionalAlertLabels)")
        n = sum(len(g["rules"]) for g in groups)
        if promtool_check_rules(groups, f"helm template ({name}): PrometheusRule"):
            print(f"  PrometheusRule: {len(groups)} groups, {n} alerts pass promtool check rules")


def expect_refusal(what, values, message):
    """`helm template` with `values` must fail with the chart's `message`."""
    try:
        helm_python.Chart.load(CHART).render(values, name="vod", namespace="media")
        fail(f"helm template with {what} rendered; the chart must refuse")
    except helm_python.HelmRenderError as e:
        if message not in str(e):
            fail(f"helm template with {what} failed with an unexpected message: {e}")
        else:
            print(f"  helm template with {what}: refused, as it must")


def main():
    print("== dashboard is built from deploy/grafana/build_dashboard.py")
    r = subprocess.run([sys.executable, BUILD_DASHBOARD, "--check"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"dashboard out of date: {r.stderr.strip()}")
    with open(DASHBOARD) as f:
        check_dashboard(f.read(), DASHBOARD)

    print("== helm lint --strict")
    for name, values in [("chart defaults", None)] + [(n, c[0]) for n, c in CASES.items()]:
        report, logged = quiet_lint(values)
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        if report.get("errors") or bad:
            detail = "\n".join(f"  {m['path']}: {m['error']}" for m in bad) or "\n".join(report["errors"])
            fail(f"helm lint ({name}):\n{detail}\n{logged}")
        else:
            print(f"  helm lint ({name}): ok ({len(report.get('messages', []))} info messages)")

    print("== helm template")
    for name, (values, want, unwanted) in CASES.items():
        check_render(name, values, want, unwanted)
    expect_refusal("no required values", {}, "set database.url")
    without_redis = merged(REQUIRED, {"analytics": {"redis": {"url": ""}}})
    expect_refusal("the api on and no Redis", without_redis, "set analytics.redis.url")
    no_analytics = merged(without_redis, {"api": {"enabled": False}, "counts": {"enabled": False},
                                          "recs": {"enabled": False}})
    try:
        helm_python.Chart.load(CHART).render(no_analytics, name="vod", namespace="media")
        print("  helm template without the api, counts and recs: Redis not needed")
    except helm_python.HelmRenderError as e:
        fail(f"helm template without the api, counts and recs still needs something: {e}")

    if failures:
        print(f"helm_check: {failures} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("helm_check: chart, dashboard and alert rules ok")


if __name__ == "__main__":
    main()
