-- vodfarm: the CDN purge outbox (issue 13).
--
-- Segments leave the origin with `Cache-Control: public, max-age=31536000,
-- immutable` and `Surrogate-Key: video-{id}`, so a CDN edge keeps a video
-- for a year unless told otherwise. Every change after which a video's
-- cached answers must not be served any more writes a row here, in the
-- same transaction as the change (a trigger, so every writer is covered:
-- api, coordinator, SQL by hand). `vodfarm purger` sends each row to every
-- configured CDN and retries until each one acknowledged it.
CREATE TABLE cdn_purges (
    id BIGSERIAL PRIMARY KEY,
    -- The public id: the CDNs know the video as `video-{video_id}`
    -- (surrogate key / cache tag) or by its URL prefixes.
    video_id VARCHAR(50) NOT NULL,
    reason VARCHAR(20) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    -- When a purger may take the row next. A purger that claims a row
    -- moves this past its lease, so a purger that dies mid-way leaves the
    -- row to be claimed again once the lease is over.
    due_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    -- Claims so far (fences a purger whose lease ran out).
    attempts INTEGER NOT NULL DEFAULT 0,
    -- Rounds every target acknowledged (a second round, a little later,
    -- catches answers that were already on their way to the edge).
    rounds_done INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    -- When the first round was acknowledged by every target.
    first_done_at TIMESTAMP WITH TIME ZONE,
    done_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT valid_purge_reason CHECK (reason IN ('deleted', 'private', 'unavailable', 'reencoded', 'subtitles', 'manual')),
    CONSTRAINT valid_purge_counts CHECK (attempts >= 0 AND rounds_done >= 0)
);
-- The claim's scan: pending rows by due time.
CREATE INDEX idx_cdn_purges_due ON cdn_purges(due_at, id) WHERE done_at IS NULL;
-- Retention of finished rows.
CREATE INDEX idx_cdn_purges_done ON cdn_purges(done_at) WHERE done_at IS NOT NULL;

-- One row per (purge, target, round) a CDN acknowledged: when one CDN is
-- down, the others are not purged again on every retry.
CREATE TABLE cdn_purge_acks (
    purge_id BIGINT NOT NULL REFERENCES cdn_purges(id) ON DELETE CASCADE,
    target TEXT NOT NULL,
    round INTEGER NOT NULL,
    acked_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    PRIMARY KEY (purge_id, target, round)
);

-- Adds a purge of `video_id` to the outbox (and wakes the purgers: the
-- notification is sent only if the transaction commits). Other triggers
-- (subtitles, once a table holds them) call it too.
CREATE FUNCTION vodfarm_enqueue_cdn_purge(video_id TEXT, reason TEXT) RETURNS void AS $$
BEGIN
    INSERT INTO cdn_purges (video_id, reason) VALUES (video_id, reason);
    PERFORM pg_notify('vodfarm_purges', '');
END;
$$ LANGUAGE plpgsql;

-- Changes of a ready video after which its cached answers must go:
-- deleted (the status or the row itself), public/unlisted -> private
-- (edges hold public copies), ready -> anything else (re-processing,
-- failed: the origin answers 404 until it is ready again), a new public
-- id. A video that is not ready has nothing cached anywhere (its answers
-- are 404, `no-store`), so its changes purge nothing: abandoned uploads
-- do not cost CDN API calls.
CREATE FUNCTION vodfarm_videos_cdn_purge() RETURNS trigger AS $$
BEGIN
    IF OLD.status IS DISTINCT FROM 'ready' THEN
        NULL;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM vodfarm_enqueue_cdn_purge(OLD.video_id, 'deleted');
    ELSIF NEW.status = 'deleted' THEN
        PERFORM vodfarm_enqueue_cdn_purge(OLD.video_id, 'deleted');
    ELSIF NEW.video_id IS DISTINCT FROM OLD.video_id THEN
        PERFORM vodfarm_enqueue_cdn_purge(OLD.video_id, 'unavailable');
    ELSIF NEW.privacy = 'private' AND OLD.privacy IS DISTINCT FROM 'private' THEN
        PERFORM vodfarm_enqueue_cdn_purge(NEW.video_id, 'private');
    ELSIF NEW.status IS DISTINCT FROM 'ready' THEN
        PERFORM vodfarm_enqueue_cdn_purge(NEW.video_id, 'unavailable');
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER videos_cdn_purge
    AFTER UPDATE OF status, privacy, video_id OR DELETE ON videos
    FOR EACH ROW EXECUTE FUNCTION vodfarm_videos_cdn_purge();

-- Re-encoding: a rendition or thumbnail row that is rewritten (a job's
-- outputs are upserted, so a re-run updates the row) or removed means the
-- files under the same URLs changed; edges must fetch them again. The
-- first write of each row (an insert) needs no purge: nothing was served
-- before the video became ready.
CREATE FUNCTION vodfarm_outputs_cdn_purge() RETURNS trigger AS $$
DECLARE
    public_id TEXT;
    was_ready BOOLEAN;
BEGIN
    SELECT v.video_id, v.status = 'ready' INTO public_id, was_ready
    FROM videos v WHERE v.id = OLD.video_id;
    -- A video that is not ready serves nothing, and its leaving `ready`
    -- already purged it.
    IF public_id IS NOT NULL AND was_ready THEN
        PERFORM vodfarm_enqueue_cdn_purge(public_id, 'reencoded');
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER video_encodings_cdn_purge
    AFTER UPDATE OR DELETE ON video_encodings
    FOR EACH ROW EXECUTE FUNCTION vodfarm_outputs_cdn_purge();

CREATE TRIGGER video_thumbs_cdn_purge
    AFTER UPDATE OR DELETE ON video_thumbs
    FOR EACH ROW EXECUTE FUNCTION vodfarm_outputs_cdn_purge();
