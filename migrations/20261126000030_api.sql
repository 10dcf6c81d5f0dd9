-- vodfarm: the creator API (issue 4).
--
-- Deleting a video marks it 'deleted' at once; its objects are removed in
-- the background. objects_purged_at records that the removal finished, so
-- a purge interrupted by a crash is picked up again by the next sweep.
ALTER TABLE videos ADD COLUMN objects_purged_at TIMESTAMP WITH TIME ZONE;
CREATE INDEX idx_videos_purge ON videos(id)
    WHERE status = 'deleted' AND objects_purged_at IS NULL;

-- Keyset pages of a channel's videos, newest first: (channel_id, id DESC).
CREATE INDEX idx_videos_channel_keyset ON videos(channel_id, id DESC);
