-- vodfarm schema, part 1: every PostgreSQL table of the seed, with the
-- columns, defaults, CHECK/UNIQUE constraints and indexes it gives, plus
-- the tables and columns vodfarm needs (tokens, subscriptions, upload
-- sessions, the queue's lease columns). Where we add to a seed table the
-- column is marked "vodfarm:".

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    user_id VARCHAR(50) UNIQUE NOT NULL,
    email VARCHAR(255) NOT NULL,
    username VARCHAR(50) NOT NULL,
    -- vodfarm: a PHC string (algorithm, parameters, salt, hash) from the
    -- catalog crate's password hasher; never the password itself.
    password_hash TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    CONSTRAINT users_username_format CHECK (username ~ '^[A-Za-z0-9_.-]{3,50}$'),
    CONSTRAINT users_email_format CHECK (position('@' IN email) > 1)
);
-- Case-insensitive uniqueness: "Alice" and "alice" are the same account.
CREATE UNIQUE INDEX idx_users_email ON users (lower(email));
CREATE UNIQUE INDEX idx_users_username ON users (lower(username));

-- vodfarm: API tokens. Only a SHA-256 of the token is stored, so a leaked
-- table does not leak credentials; tokens are 256-bit random, so a fast
-- hash is enough (no salt or stretching needed, unlike passwords).
CREATE TABLE api_tokens (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash BYTEA NOT NULL UNIQUE,
    name VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    last_used_at TIMESTAMP WITH TIME ZONE,
    expires_at TIMESTAMP WITH TIME ZONE,
    revoked_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT api_tokens_hash_len CHECK (octet_length(token_hash) = 32)
);
CREATE INDEX idx_api_tokens_user ON api_tokens(user_id);

CREATE TABLE channels (
    id BIGSERIAL PRIMARY KEY,
    channel_id VARCHAR(50) UNIQUE NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),

    -- Profile
    name VARCHAR(100) NOT NULL,
    description TEXT,
    avatar_url TEXT,
    banner_url TEXT,

    -- Stats (denormalized)
    subscriber_count BIGINT DEFAULT 0,
    video_count INTEGER DEFAULT 0,
    total_views BIGINT DEFAULT 0,

    -- Timestamps
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);
CREATE INDEX idx_channels_user ON channels(user_id);
CREATE INDEX idx_channels_subscribers ON channels(subscriber_count DESC);

-- vodfarm: one row per (user, channel); the UNIQUE constraint is what makes
-- "subscribe" idempotent under concurrency (seed: strong consistency).
CREATE TABLE subscriptions (
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    PRIMARY KEY (user_id, channel_id)
);
CREATE INDEX idx_subscriptions_channel ON subscriptions(channel_id);

CREATE TABLE videos (
    id BIGSERIAL PRIMARY KEY,
    video_id VARCHAR(50) UNIQUE NOT NULL,

    -- Ownership
    channel_id BIGINT NOT NULL REFERENCES channels(id),

    -- Content
    title VARCHAR(500) NOT NULL,
    description TEXT,
    tags TEXT[],
    category VARCHAR(100),

    -- Technical. The seed makes duration NOT NULL with no default, but a
    -- video row exists from "initiate upload" on, long before anything
    -- knows its duration: 0 until the worker reports the probed value.
    duration_seconds INTEGER NOT NULL DEFAULT 0,
    original_filename VARCHAR(255),
    original_size_bytes BIGINT,

    -- Status
    status VARCHAR(20) DEFAULT 'uploading',
    processing_progress INTEGER DEFAULT 0,
    -- vodfarm: why processing failed, in words a creator understands.
    processing_error TEXT,

    -- Privacy
    privacy VARCHAR(20) DEFAULT 'public',

    -- Timestamps
    uploaded_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    published_at TIMESTAMP WITH TIME ZONE,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- Denormalized counts (updated async)
    view_count BIGINT DEFAULT 0,
    like_count INTEGER DEFAULT 0,
    dislike_count INTEGER DEFAULT 0,
    comment_count INTEGER DEFAULT 0,

    -- vodfarm: source metadata reported by the worker's probe.
    source_width INTEGER,
    source_height INTEGER,
    source_fps DOUBLE PRECISION,
    source_codec VARCHAR(50),

    CONSTRAINT valid_status CHECK (status IN ('uploading', 'processing', 'ready', 'failed', 'deleted')),
    CONSTRAINT valid_privacy CHECK (privacy IN ('public', 'unlisted', 'private')),
    CONSTRAINT valid_progress CHECK (processing_progress BETWEEN 0 AND 100),
    CONSTRAINT valid_duration CHECK (duration_seconds >= 0),
    CONSTRAINT valid_size CHECK (original_size_bytes IS NULL OR original_size_bytes >= 0)
);
CREATE INDEX idx_videos_channel ON videos(channel_id, published_at DESC);
CREATE INDEX idx_videos_status ON videos(status) WHERE status != 'ready';
CREATE INDEX idx_videos_published ON videos(published_at DESC) WHERE privacy = 'public';
CREATE INDEX idx_videos_views ON videos(view_count DESC) WHERE privacy = 'public';

CREATE TABLE video_encodings (
    id BIGSERIAL PRIMARY KEY,
    video_id BIGINT NOT NULL REFERENCES videos(id),

    -- Encoding details
    resolution VARCHAR(20) NOT NULL,  -- '240p', '720p', '1080p', '4k'
    codec VARCHAR(20) NOT NULL,       -- 'h264', 'h265', 'vp9', 'av1'
    container VARCHAR(20) NOT NULL,   -- 'mp4', 'webm', 'ts'
    bitrate INTEGER NOT NULL,         -- bits per second

    -- Storage
    storage_path TEXT NOT NULL,
    file_size_bytes BIGINT NOT NULL,

    -- HLS/DASH
    manifest_path TEXT,
    segment_duration INTEGER DEFAULT 10,

    -- Status
    status VARCHAR(20) DEFAULT 'pending',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- vodfarm: what the master playlist needs.
    width INTEGER,
    height INTEGER,
    peak_bitrate INTEGER,
    segment_count INTEGER,

    UNIQUE(video_id, resolution, codec),
    CONSTRAINT valid_encoding_status CHECK (status IN ('pending', 'ready', 'failed')),
    CONSTRAINT valid_bitrate CHECK (bitrate > 0),
    CONSTRAINT valid_file_size CHECK (file_size_bytes >= 0)
);
CREATE INDEX idx_encodings_video ON video_encodings(video_id);

-- The seed gives video_thumbs only in its ER diagram (id, video_id,
-- timestamp_sec, url, size); kind and dimensions are ours.
CREATE TABLE video_thumbs (
    id BIGSERIAL PRIMARY KEY,
    video_id BIGINT NOT NULL REFERENCES videos(id),
    timestamp_sec INTEGER NOT NULL,
    url TEXT NOT NULL,
    size INTEGER NOT NULL,
    kind VARCHAR(20) NOT NULL DEFAULT 'frame',
    width INTEGER,
    height INTEGER,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    -- A re-run of the thumbnail job upserts the same rows.
    UNIQUE (video_id, url),
    CONSTRAINT valid_thumb_kind CHECK (kind IN ('frame', 'default', 'sprite', 'storyboard')),
    CONSTRAINT valid_thumb_ts CHECK (timestamp_sec >= 0),
    CONSTRAINT valid_thumb_size CHECK (size >= 0)
);
CREATE INDEX idx_thumbs_video ON video_thumbs(video_id);

CREATE TABLE view_aggregates (
    video_id BIGINT NOT NULL REFERENCES videos(id),
    hour_bucket TIMESTAMP WITH TIME ZONE NOT NULL,
    view_count INTEGER NOT NULL,
    unique_viewers INTEGER,
    avg_watch_duration INTEGER,
    PRIMARY KEY (video_id, hour_bucket),
    CONSTRAINT valid_views CHECK (view_count >= 0)
);

-- vodfarm: a tus upload in progress. The offset lives here (not in the api's
-- memory), so an upload resumes after the api restarts.
CREATE TABLE upload_sessions (
    id UUID PRIMARY KEY,
    video_id BIGINT NOT NULL REFERENCES videos(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    -- SHA-256 of the short-lived upload token.
    token_hash BYTEA NOT NULL UNIQUE,
    upload_length BIGINT NOT NULL,
    upload_offset BIGINT NOT NULL DEFAULT 0,
    part_size BIGINT NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    storage_key TEXT NOT NULL,
    multipart_upload_id TEXT,
    -- Parts uploaded so far: [{"part_number": n, "etag": "..."}].
    parts JSONB NOT NULL DEFAULT '[]'::jsonb,
    status VARCHAR(20) NOT NULL DEFAULT 'active',
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT valid_upload_status CHECK (status IN ('active', 'completed', 'terminated', 'expired')),
    CONSTRAINT valid_upload_offset CHECK (upload_offset >= 0 AND upload_offset <= upload_length),
    CONSTRAINT valid_part_size CHECK (part_size >= 5242880)
);
CREATE INDEX idx_upload_sessions_video ON upload_sessions(video_id);
CREATE INDEX idx_upload_sessions_expiry ON upload_sessions(expires_at) WHERE status = 'active';

CREATE TABLE processing_jobs (
    id BIGSERIAL PRIMARY KEY,
    video_id BIGINT NOT NULL REFERENCES videos(id),
    job_type VARCHAR(50) NOT NULL,  -- 'transcode', 'thumbnail', 'manifest'

    -- Job details
    input_path TEXT NOT NULL,
    output_path TEXT,
    parameters JSONB,

    -- Status ('cancelled' is vodfarm's: an operator or a delete stopped it)
    status VARCHAR(20) DEFAULT 'pending',
    progress INTEGER DEFAULT 0,
    error_message TEXT,

    -- Worker
    worker_id VARCHAR(100),
    started_at TIMESTAMP WITH TIME ZONE,
    completed_at TIMESTAMP WITH TIME ZONE,

    -- Scheduling
    priority INTEGER DEFAULT 0,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- vodfarm: the lease queue.
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 5,
    run_after TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    lease_token UUID,
    lease_expires_at TIMESTAMP WITH TIME ZONE,
    -- Jobs of the same video that must complete before this one is due.
    depends_on BIGINT[] NOT NULL DEFAULT '{}',
    -- What a worker must advertise to lease this job (e.g. 'nvdec').
    required_capabilities TEXT[] NOT NULL DEFAULT '{}',
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),

    CONSTRAINT valid_job_status CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    CONSTRAINT valid_job_type CHECK (job_type IN ('transcode', 'thumbnail', 'manifest')),
    CONSTRAINT valid_job_progress CHECK (progress BETWEEN 0 AND 100),
    CONSTRAINT valid_attempts CHECK (attempts >= 0 AND max_attempts >= 1),
    -- A job being worked on always has a lease; nothing else may.
    CONSTRAINT lease_iff_processing CHECK (
        (status = 'processing') = (lease_expires_at IS NOT NULL)
    ),
    CONSTRAINT processing_has_token CHECK (status <> 'processing' OR lease_token IS NOT NULL)
);
-- The seed's claim-order index, with id appended: jobs enqueued in one
-- transaction share created_at, and without the tie-breaker in the index
-- the claim would sort them on every lease.
CREATE INDEX idx_jobs_pending ON processing_jobs(priority DESC, created_at ASC, id ASC)
    WHERE status = 'pending';
CREATE INDEX idx_jobs_video ON processing_jobs(video_id);
-- The reaper's scan: only leased rows, ordered by expiry.
CREATE INDEX idx_jobs_lease_expiry ON processing_jobs(lease_expires_at)
    WHERE status = 'processing';

-- vodfarm: workers seen by any coordinator replica (flushed in batches, so
-- an idle fleet does not write to the database on every poll).
CREATE TABLE workers (
    worker_id VARCHAR(100) PRIMARY KEY,
    capabilities TEXT[] NOT NULL DEFAULT '{}',
    job_types TEXT[] NOT NULL DEFAULT '{}',
    last_seen_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);

-- Waiting lease polls are woken by this NOTIFY instead of polling: new
-- due work (a job inserted or returned to pending) or a completion that a
-- pending job depends on notifies the channel with the job type. Other
-- completions stay silent on purpose: NOTIFY serializes committing
-- transactions on a global lock, so notifying every completion would cap
-- the queue's throughput. Postgres folds identical notifications within
-- one transaction.
CREATE FUNCTION vodfarm_notify_jobs() RETURNS trigger AS $$
BEGIN
    IF NEW.status = 'completed' THEN
        IF NOT EXISTS (
            SELECT 1 FROM processing_jobs d
            WHERE d.video_id = NEW.video_id AND d.status = 'pending'
              AND NEW.id = ANY(d.depends_on)) THEN
            RETURN NULL;
        END IF;
    END IF;
    PERFORM pg_notify('vodfarm_jobs', NEW.job_type);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER processing_jobs_notify_insert
    AFTER INSERT ON processing_jobs
    FOR EACH ROW WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION vodfarm_notify_jobs();

CREATE TRIGGER processing_jobs_notify_update
    AFTER UPDATE OF status ON processing_jobs
    FOR EACH ROW WHEN (NEW.status IN ('pending', 'completed') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION vodfarm_notify_jobs();
