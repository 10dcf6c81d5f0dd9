-- vodfarm: signed webhooks and MP4 downloads (issue 18).

-- A creator's webhook endpoint. The signing secret is kept in clear: the
-- sender needs it to compute HMACs (the api shows it once, at creation).
CREATE TABLE webhook_endpoints (
    id BIGSERIAL PRIMARY KEY,
    -- Public id (`wh_…`).
    webhook_id VARCHAR(50) UNIQUE NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    -- Event types delivered (`video.ready`, …).
    events TEXT[] NOT NULL,
    secret TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    -- Why the sender disabled it (NULL when enabled, or disabled by hand).
    disabled_reason TEXT,
    -- Failed attempts since the last success, and since when.
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    failing_since TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT webhook_events_known CHECK (
        cardinality(events) > 0 AND events <@ ARRAY['upload.completed', 'video.ready',
            'video.failed', 'video.deleted', 'video.updated']::text[])
);
CREATE INDEX idx_webhook_endpoints_user ON webhook_endpoints(user_id, id);

-- One row per event that at least one endpoint subscribed to when it
-- happened. `body` is the exact JSON every delivery sends (so retries and
-- replays send the same bytes and the same event id).
CREATE TABLE webhook_events (
    id BIGSERIAL PRIMARY KEY,
    -- Public id (`evt_…`): the receiver's deduplication key.
    event_id VARCHAR(50) UNIQUE NOT NULL,
    event_type VARCHAR(40) NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- The video's public id (not a foreign key: events outlive rows).
    video_id VARCHAR(50),
    body TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);

-- The outbox: one row per (event, endpoint), plus one per replay.
CREATE TABLE webhook_deliveries (
    id BIGSERIAL PRIMARY KEY,
    -- Public id (`dlv_…`).
    delivery_id VARCHAR(50) UNIQUE NOT NULL,
    endpoint_id BIGINT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id BIGINT NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
    -- `pending` (to send, or retrying), `succeeded`, `failed` (given up).
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    -- When a sender may take the row next. A claim moves it past the
    -- claim's lease, so a sender that dies mid-way leaves the row to be
    -- claimed again (with the same event id) once the lease is over.
    next_attempt_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    -- Claims so far: fences the write-back of a sender whose lease ran out.
    claims INTEGER NOT NULL DEFAULT 0,
    -- HTTP attempts recorded.
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error TEXT,
    last_attempt_at TIMESTAMP WITH TIME ZONE,
    delivered_at TIMESTAMP WITH TIME ZONE,
    -- Replays carry the delivery they repeat.
    replay_of BIGINT REFERENCES webhook_deliveries(id) ON DELETE SET NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT valid_delivery_status CHECK (status IN ('pending', 'succeeded', 'failed')),
    CONSTRAINT valid_delivery_counts CHECK (claims >= 0 AND attempts >= 0)
);
-- The claim's scan.
CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries(next_attempt_at, id)
    WHERE status = 'pending';
-- An endpoint's deliveries, newest first.
CREATE INDEX idx_webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, id DESC);
CREATE INDEX idx_webhook_deliveries_event ON webhook_deliveries(event_id);

-- Records event `kind` of video row `v` for every enabled endpoint of the
-- video's owner that subscribed to it, in the caller's transaction, and
-- wakes the senders (only if that transaction commits). Nothing is
-- written when no endpoint wants the event.
CREATE FUNCTION vodfarm_webhook_event(v videos, kind TEXT, extra JSONB) RETURNS void AS $$
DECLARE
    owner BIGINT;
    channel_public TEXT;
    evt_public TEXT;
    evt_row BIGINT;
    stamp TEXT;
BEGIN
    SELECT c.user_id, c.channel_id INTO owner, channel_public
    FROM channels c WHERE c.id = v.channel_id;
    IF owner IS NULL OR NOT EXISTS (
        SELECT 1 FROM webhook_endpoints e
        WHERE e.user_id = owner AND e.enabled AND kind = ANY(e.events)) THEN
        RETURN;
    END IF;
    evt_public := 'evt_' || replace(gen_random_uuid()::text, '-', '');
    stamp := to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    INSERT INTO webhook_events (event_id, event_type, user_id, video_id, body)
    VALUES (evt_public, kind, owner, v.video_id,
            jsonb_build_object(
                'id', evt_public,
                'type', kind,
                'created_at', stamp,
                'data', jsonb_build_object(
                    'video_id', v.video_id,
                    'channel_id', channel_public,
                    'title', v.title,
                    'status', v.status,
                    'privacy', v.privacy,
                    'duration_seconds', v.duration_seconds
                ) || coalesce(extra, '{}'::jsonb)
            )::text)
    RETURNING id INTO evt_row;
    INSERT INTO webhook_deliveries (delivery_id, endpoint_id, event_id)
    SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), e.id, evt_row
    FROM webhook_endpoints e
    WHERE e.user_id = owner AND e.enabled AND kind = ANY(e.events);
    PERFORM pg_notify('vodfarm_webhooks', '');
END;
$$ LANGUAGE plpgsql;

-- The events a change of a video row means. A trigger, so every writer
-- (api, coordinator, upload expiry, SQL by hand) is covered, in its own
-- transaction.
CREATE FUNCTION vodfarm_videos_webhooks() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status IS DISTINCT FROM 'deleted' THEN
            PERFORM vodfarm_webhook_event(OLD, 'video.deleted', NULL);
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF OLD.status = 'uploading' AND NEW.status = 'processing' THEN
            PERFORM vodfarm_webhook_event(NEW, 'upload.completed',
                jsonb_build_object('size_bytes', NEW.original_size_bytes));
        ELSIF NEW.status = 'ready' THEN
            PERFORM vodfarm_webhook_event(NEW, 'video.ready', NULL);
        ELSIF NEW.status = 'failed' THEN
            PERFORM vodfarm_webhook_event(NEW, 'video.failed',
                jsonb_build_object('reason', coalesce(NEW.processing_error, 'processing failed')));
        ELSIF NEW.status = 'deleted' THEN
            PERFORM vodfarm_webhook_event(NEW, 'video.deleted', NULL);
        END IF;
    END IF;
    IF NEW.status IS DISTINCT FROM 'deleted'
       AND (NEW.title IS DISTINCT FROM OLD.title OR NEW.privacy IS DISTINCT FROM OLD.privacy) THEN
        PERFORM vodfarm_webhook_event(NEW, 'video.updated',
            jsonb_build_object('previous', jsonb_build_object(
                'title', OLD.title, 'privacy', OLD.privacy)));
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER videos_webhooks
    AFTER UPDATE OR DELETE ON videos
    FOR EACH ROW EXECUTE FUNCTION vodfarm_videos_webhooks();

-- MP4 downloads. The renditions a creator asked for as progressive MP4
-- files (`encoded/{video_id}/{rung}/video.mp4`).
ALTER TABLE videos ADD COLUMN mp4_renditions TEXT[] NOT NULL DEFAULT '{}';

-- The MP4 files that exist (recorded by the `mp4` job's completion).
CREATE TABLE video_downloads (
    video_id BIGINT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    rendition VARCHAR(20) NOT NULL,
    storage_key TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    duration_ms BIGINT,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    PRIMARY KEY (video_id, rendition),
    CONSTRAINT valid_download_size CHECK (size_bytes >= 0)
);

-- A new job type, `mp4`. Other migrations may extend the list too, so
-- the constraint is rebuilt from whatever it allows now, plus 'mp4'.
DO $$
DECLARE
    allowed TEXT[];
BEGIN
    SELECT array_agg(m[1]) INTO allowed
    FROM pg_constraint c,
         regexp_matches(pg_get_constraintdef(c.oid), '''([a-z0-9_]+)''', 'g') AS m
    WHERE c.conname = 'valid_job_type' AND c.conrelid = 'processing_jobs'::regclass;
    IF allowed IS NULL THEN
        allowed := ARRAY['transcode', 'thumbnail', 'manifest'];
    END IF;
    IF NOT 'mp4' = ANY(allowed) THEN
        allowed := array_append(allowed, 'mp4');
    END IF;
    ALTER TABLE processing_jobs DROP CONSTRAINT IF EXISTS valid_job_type;
    EXECUTE format('ALTER TABLE processing_jobs ADD CONSTRAINT valid_job_type CHECK (job_type IN (%s))',
        (SELECT string_agg(quote_literal(a), ', ') FROM unnest(allowed) a));
END;
$$;
