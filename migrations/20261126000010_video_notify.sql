-- Origin invalidation: every change that decides whether a video may be
-- served (status, privacy, the row's existence) sends
-- NOTIFY vodfarm_videos, <video_id>. Origins LISTEN, drop their cached
-- state of that video and purge its cached bytes. A TRUNCATE sends '*'
-- (forget every video). Whoever changes the row (api, worker, SQL by
-- hand) is covered, and the notification is sent only if the change
-- commits.
CREATE FUNCTION vodfarm_notify_videos() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('vodfarm_videos', '*');
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('vodfarm_videos', OLD.video_id);
        RETURN OLD;
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('vodfarm_videos', NEW.video_id);
    ELSIF NEW.status IS DISTINCT FROM OLD.status
       OR NEW.privacy IS DISTINCT FROM OLD.privacy
       OR NEW.video_id IS DISTINCT FROM OLD.video_id THEN
        PERFORM pg_notify('vodfarm_videos', NEW.video_id);
        IF NEW.video_id IS DISTINCT FROM OLD.video_id THEN
            PERFORM pg_notify('vodfarm_videos', OLD.video_id);
        END IF;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER videos_notify_row
    AFTER INSERT OR UPDATE OR DELETE ON videos
    FOR EACH ROW EXECUTE FUNCTION vodfarm_notify_videos();

CREATE TRIGGER videos_notify_truncate
    AFTER TRUNCATE ON videos
    FOR EACH STATEMENT EXECUTE FUNCTION vodfarm_notify_videos();
