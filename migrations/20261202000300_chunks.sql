-- Chunk-parallel transcoding (issue 16): how many bytes of input (the
-- original, or a chunk's stream-copied part of it) each job read from the
-- object store, recorded by its completion. NULL: not reported (jobs
-- completed before this migration, manifest jobs).
ALTER TABLE processing_jobs
    ADD COLUMN source_bytes BIGINT,
    ADD CONSTRAINT source_bytes_not_negative CHECK (source_bytes IS NULL OR source_bytes >= 0);
