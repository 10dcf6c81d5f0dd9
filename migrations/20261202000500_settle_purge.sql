-- vodfarm: a deleted video's objects are removed twice.
--
-- At once (objects_purged_at, as before), and again once no worker can
-- still be writing them (objects_settled_at): a worker running one of the
-- video's jobs when it was deleted learns of it at its next heartbeat and
-- may upload segments until then, after the first removal. deleted_at
-- starts that wait (updated_at may move later).
ALTER TABLE videos ADD COLUMN deleted_at TIMESTAMP WITH TIME ZONE;
ALTER TABLE videos ADD COLUMN objects_settled_at TIMESTAMP WITH TIME ZONE;
-- Videos deleted and purged before this migration are taken as settled.
UPDATE videos SET deleted_at = updated_at, objects_settled_at = objects_purged_at
    WHERE status = 'deleted';
CREATE INDEX idx_videos_settle ON videos(id)
    WHERE status = 'deleted' AND objects_settled_at IS NULL;
