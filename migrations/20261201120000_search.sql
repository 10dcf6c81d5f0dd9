-- vodfarm: search (issue 12).
--
-- 1. Every change that matters to search writes a row to search_outbox in
--    the transaction that makes it (triggers below), and stamps the video
--    with search_version: the sequence number of its latest change. The
--    indexer (`vodfarm search-indexer`) claims outbox rows with SKIP
--    LOCKED, makes the index hold each claimed video's current state with
--    that version, and deletes the rows in the same transaction. A crash
--    rolls the claim back (nothing lost); applying a version the index
--    already holds changes nothing (replay-safe); an older version never
--    overwrites a newer one (any number of indexers).
-- 2. search_documents is the PostgreSQL index (the default when no
--    Elasticsearch is configured): one row per video the indexer has seen,
--    a weighted tsvector (title A, tags B, channel name B, description C),
--    accents folded, English stems plus unstemmed words (so a prefix typed
--    as-you-type matches the word before it is stemmed). search_terms is
--    the vocabulary of titles, tags and channel names under a trigram
--    index: a query whose words match nothing looks up the nearest known
--    words (typos) and searches again with them.

CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;

-- English with accents folded (crème → creme) before stemming.
CREATE TEXT SEARCH CONFIGURATION vodfarm (COPY = english);
ALTER TEXT SEARCH CONFIGURATION vodfarm
    ALTER MAPPING FOR hword, hword_part, word WITH public.unaccent, english_stem;
-- Whole words, accents folded, no stop words removed and no stemming: the
-- forms a prefix ("runni") is compared with.
CREATE TEXT SEARCH CONFIGURATION vodfarm_simple (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION vodfarm_simple
    ALTER MAPPING FOR hword, hword_part, word WITH public.unaccent, simple;

-- unaccent() is STABLE (its dictionary could change); indexes and
-- generated columns need IMMUTABLE, hence this wrapper with the dictionary
-- named explicitly. Lower case, accents folded.
CREATE FUNCTION vodfarm_fold(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT lower(public.unaccent('public.unaccent'::regdictionary, $1)) $$;

-- array_to_string is STABLE for any array type; for text[] it is not.
CREATE FUNCTION vodfarm_tags_text(text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(array_to_string($1, ' '), '') $$;

CREATE FUNCTION vodfarm_fold_tags(text[]) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(array_agg(vodfarm_fold(t)), '{}') FROM unnest($1) AS t $$;

-- The one definition of "search may show this video" in SQL; the api's
-- final check (search/src/visibility.rs) and these triggers use it.
CREATE FUNCTION vodfarm_searchable(status text, privacy text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(status = 'ready' AND privacy = 'public', false) $$;

-- The version of every search change, and the outbox's order.
CREATE SEQUENCE search_version_seq;

ALTER TABLE videos ADD COLUMN search_version BIGINT;

CREATE TABLE search_outbox (
    seq BIGINT PRIMARY KEY,
    -- videos.id; no foreign key: a hard-deleted video's row must stay.
    video_id BIGINT NOT NULL,
    -- When the change was made (its commit follows within the transaction).
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT clock_timestamp()
);

-- Videos that are searchable now get indexed by the first indexer round.
WITH s AS (
    UPDATE videos SET search_version = nextval('search_version_seq')
    WHERE vodfarm_searchable(status, privacy)
    RETURNING id, search_version
)
INSERT INTO search_outbox (seq, video_id) SELECT search_version, id FROM s;

-- A change to what search shows: a new version and an outbox row.
--
-- Only changes that touch a video which is searchable before or after
-- them are recorded: a video that is neither was not in the index (it
-- left with the change that made it unsearchable, which was recorded)
-- and does not enter it. Progress updates and other columns search does
-- not read are not recorded either. Setting search_version to anything
-- else (the channel trigger writes -1) forces a new version: a "touch".
--
-- The trigger runs after PostgreSQL has locked the row, so two changes of
-- one video get versions in commit order.
CREATE FUNCTION vodfarm_search_video_changed() RETURNS trigger AS $$
DECLARE
    searchable_now boolean := vodfarm_searchable(NEW.status, NEW.privacy);
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NOT (searchable_now OR vodfarm_searchable(OLD.status, OLD.privacy)) THEN
            RETURN NEW;
        END IF;
        IF NEW.search_version IS NOT DISTINCT FROM OLD.search_version
           AND NEW.video_id IS NOT DISTINCT FROM OLD.video_id
           AND NEW.channel_id IS NOT DISTINCT FROM OLD.channel_id
           AND NEW.title IS NOT DISTINCT FROM OLD.title
           AND NEW.description IS NOT DISTINCT FROM OLD.description
           AND NEW.tags IS NOT DISTINCT FROM OLD.tags
           AND NEW.category IS NOT DISTINCT FROM OLD.category
           AND NEW.duration_seconds IS NOT DISTINCT FROM OLD.duration_seconds
           AND NEW.status IS NOT DISTINCT FROM OLD.status
           AND NEW.privacy IS NOT DISTINCT FROM OLD.privacy
           AND NEW.view_count IS NOT DISTINCT FROM OLD.view_count
           AND NEW.like_count IS NOT DISTINCT FROM OLD.like_count
           AND NEW.uploaded_at IS NOT DISTINCT FROM OLD.uploaded_at THEN
            RETURN NEW;
        END IF;
    ELSIF NOT searchable_now THEN
        RETURN NEW;
    END IF;
    NEW.search_version := nextval('search_version_seq');
    INSERT INTO search_outbox (seq, video_id) VALUES (NEW.search_version, NEW.id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER videos_search_change
    BEFORE INSERT OR UPDATE ON videos
    FOR EACH ROW EXECUTE FUNCTION vodfarm_search_video_changed();

-- A searchable video's row removed (not the api's soft delete, which is
-- an UPDATE of status): the indexer finds no row and removes the doc.
CREATE FUNCTION vodfarm_search_video_removed() RETURNS trigger AS $$
BEGIN
    INSERT INTO search_outbox (seq, video_id) VALUES (nextval('search_version_seq'), OLD.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER videos_search_remove
    AFTER DELETE ON videos
    FOR EACH ROW WHEN (vodfarm_searchable(OLD.status, OLD.privacy))
    EXECUTE FUNCTION vodfarm_search_video_removed();

-- TRUNCATE videos: every document the PostgreSQL index shows goes (with
-- Elasticsearch, run `vodfarm search reindex` after a TRUNCATE).
CREATE FUNCTION vodfarm_search_videos_truncated() RETURNS trigger AS $$
BEGIN
    INSERT INTO search_outbox (seq, video_id)
        SELECT nextval('search_version_seq'), video_id FROM search_documents WHERE visible;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- A channel renamed (or its public id changed): its searchable videos are
-- touched, which locks them (version order stays commit order) and
-- records them through the video trigger.
CREATE FUNCTION vodfarm_search_channel_changed() RETURNS trigger AS $$
BEGIN
    UPDATE videos SET search_version = -1
    WHERE channel_id = NEW.id AND vodfarm_searchable(status, privacy);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER channels_search_change
    AFTER UPDATE OF name, channel_id ON channels
    FOR EACH ROW
    WHEN (NEW.name IS DISTINCT FROM OLD.name OR NEW.channel_id IS DISTINCT FROM OLD.channel_id)
    EXECUTE FUNCTION vodfarm_search_channel_changed();

-- Indexers LISTEN; one notification per statement (and PostgreSQL folds
-- identical ones per transaction), so a bulk count flush costs one.
CREATE FUNCTION vodfarm_search_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('vodfarm_search', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER search_outbox_notify
    AFTER INSERT ON search_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION vodfarm_search_notify();

-- The PostgreSQL index. A video that stopped being searchable keeps a
-- tombstone (visible = false, no text) holding its version, so a slower
-- indexer replica cannot bring an older state back.
CREATE TABLE search_documents (
    -- videos.id
    video_id BIGINT PRIMARY KEY,
    version BIGINT NOT NULL,
    visible BOOLEAN NOT NULL,
    public_id VARCHAR(50),
    channel_public_id VARCHAR(50),
    channel_name VARCHAR(100),
    title VARCHAR(500),
    description TEXT,
    tags TEXT[],
    category VARCHAR(100),
    duration_seconds INTEGER,
    view_count BIGINT,
    like_count INTEGER,
    uploaded_at TIMESTAMP WITH TIME ZONE,
    indexed_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT clock_timestamp(),
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('vodfarm', coalesce(title, '')), 'A')
        || setweight(to_tsvector('vodfarm_simple', coalesce(title, '')), 'A')
        || setweight(to_tsvector('vodfarm', vodfarm_tags_text(tags)), 'B')
        || setweight(to_tsvector('vodfarm_simple', vodfarm_tags_text(tags)), 'B')
        || setweight(to_tsvector('vodfarm', coalesce(channel_name, '')), 'B')
        || setweight(to_tsvector('vodfarm_simple', coalesce(channel_name, '')), 'B')
        || setweight(to_tsvector('vodfarm', coalesce(description, '')), 'C')
    ) STORED,
    tags_folded TEXT[] GENERATED ALWAYS AS (vodfarm_fold_tags(tags)) STORED,
    category_folded TEXT GENERATED ALWAYS AS (vodfarm_fold(category)) STORED,
    CONSTRAINT search_documents_tombstone CHECK (visible OR title IS NULL)
);
CREATE INDEX idx_search_tsv ON search_documents USING gin (tsv);
CREATE INDEX idx_search_views ON search_documents (view_count DESC, video_id)
    WHERE visible;
CREATE INDEX idx_search_newest ON search_documents (uploaded_at DESC, video_id DESC)
    WHERE visible;
CREATE INDEX idx_search_tombstones ON search_documents (indexed_at) WHERE NOT visible;

-- The vocabulary for typo correction: folded, unstemmed words of titles,
-- tags and channel names (3 to 40 characters, not only digits). Words
-- are added as documents are indexed; `vodfarm search reindex` also
-- removes the ones no document holds any more.
CREATE TABLE search_terms (
    word TEXT PRIMARY KEY
);
CREATE INDEX idx_search_terms_trgm ON search_terms USING gin (word gin_trgm_ops);

CREATE FUNCTION vodfarm_search_words(title text, tags text[], channel_name text) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT coalesce(array_agg(DISTINCT w), '{}')
        FROM unnest(tsvector_to_array(to_tsvector('vodfarm_simple',
                 coalesce(title, '') || ' ' || vodfarm_tags_text(tags) || ' '
                 || coalesce(channel_name, '')))) AS w
        WHERE length(w) BETWEEN 3 AND 40 AND w !~ '^[0-9]+$'
    $$;

CREATE TRIGGER videos_search_truncate
    AFTER TRUNCATE ON videos
    FOR EACH STATEMENT EXECUTE FUNCTION vodfarm_search_videos_truncated();

-- Elasticsearch indexes being built by `vodfarm search reindex`: while a
-- row is here, indexers write to it as well as to the alias.
CREATE TABLE search_reindex_targets (
    index_name TEXT PRIMARY KEY,
    started_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
