-- Analytics (issue 11): likes, watch history and progress on PostgreSQL
-- (the default WatchStore; Scylla/Cassandra holds the same two tables
-- when SCYLLA_NODES is set), and the erasure marks that keep a viewer's
-- erased history from coming back with events still on the bus.

-- One row per (user, video): the PRIMARY KEY makes "like" idempotent,
-- and the like and the counter move in one transaction (exact counts).
CREATE TABLE video_likes (
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    video_id BIGINT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    PRIMARY KEY (user_id, video_id)
);
CREATE INDEX idx_video_likes_video ON video_likes(video_id);

-- The seed's CQL `watch_history`, clustered by watched_at DESC: one row
-- per viewing session (watched_at = the session's first event).
-- vodfarm: updated_at orders the writes of one row (last event wins).
CREATE TABLE watch_history (
    user_id TEXT NOT NULL,
    watched_at TIMESTAMP WITH TIME ZONE NOT NULL,
    video_id TEXT NOT NULL,
    watch_duration_seconds INTEGER NOT NULL DEFAULT 0,
    completed BOOLEAN NOT NULL DEFAULT FALSE,
    last_position_seconds INTEGER NOT NULL DEFAULT 0,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (user_id, watched_at, video_id)
);
CREATE INDEX idx_watch_history_page ON watch_history(user_id, watched_at DESC, video_id);
-- recs reads the last 30 days of everyone's history.
CREATE INDEX idx_watch_history_recent ON watch_history(watched_at);

-- The seed's CQL `watch_progress` ("continue watching").
CREATE TABLE watch_progress (
    user_id TEXT NOT NULL,
    video_id TEXT NOT NULL,
    position_seconds INTEGER NOT NULL,
    duration_seconds INTEGER NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (user_id, video_id)
);
CREATE INDEX idx_watch_progress_recent ON watch_progress(user_id, updated_at DESC);

-- A viewer erased their history at erased_at: events stamped before it
-- (still on the bus) are not recorded again, whatever the WatchStore.
CREATE TABLE watch_erasures (
    user_id TEXT PRIMARY KEY,
    erased_at TIMESTAMP WITH TIME ZONE NOT NULL
);
