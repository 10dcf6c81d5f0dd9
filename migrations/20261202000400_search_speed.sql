-- vodfarm: search latency (issue 12, follow-up).
--
-- 1. Views bands. A query word found in tens of thousands of documents
--    cannot be ranked over every match, and "the N most viewed matches"
--    is expensive for a word in a few percent of them: walking the views
--    index reads N / share rows, a bitmap of every match reads them all.
--    views_band (floor(log2(view_count + 1)): 0 for no views, 19 for a
--    million) is a second column of the GIN index, so the index
--    itself intersects a word with a band. The search walks the bands
--    from the most viewed down and stops once it holds enough matches:
--    it reads about N rows whatever the word's share.
-- 2. Titles have a tsvector of their own (title_tsv) under a GIN index
--    for as-you-type suggestions: a weight-A match in the full tsvector
--    is a recheck of every row holding the word anywhere (a prefix common
--    in descriptions and rare in titles read thousands of rows for 8
--    suggestions).
-- 3. Typo corrections look words up through the trigram index
--    (vodfarm_search_corrections): the planner took a sequential scan of
--    the whole vocabulary, computing the similarity of every word.

CREATE EXTENSION IF NOT EXISTS btree_gin WITH SCHEMA public;

-- floor(log2(views + 1)) in integers (no views: 0; 1-2: 1; 3-6: 2; …).
CREATE FUNCTION vodfarm_views_band(bigint) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 64 - position('1' IN
        (least(greatest(coalesce($1, 0), 0), 4611686018427387903) + 1)::bit(64)::text) $$;

ALTER TABLE search_documents
    ADD COLUMN views_band integer GENERATED ALWAYS AS (vodfarm_views_band(view_count)) STORED,
    -- The title as in tsv (stems and whole words), without weights.
    ADD COLUMN title_tsv tsvector GENERATED ALWAYS AS (
        to_tsvector('vodfarm', coalesce(title, ''))
        || to_tsvector('vodfarm_simple', coalesce(title, ''))
    ) STORED;

-- Replaces idx_search_tsv: a GIN index answers conditions on any of its
-- columns, so the word-only searches (phrases, prefixes, the orders by
-- views and upload time) use it as they used the old one. The category
-- is a column too: a category filter is intersected in the index (a
-- common word in one category of twelve read a twelfth of its matches,
-- or walked twelve times as far down the views index).
CREATE INDEX idx_search_tsv_band ON search_documents
    USING gin (tsv, views_band, category_folded) WHERE visible;
DROP INDEX idx_search_tsv;
CREATE INDEX idx_search_title ON search_documents USING gin (title_tsv) WHERE visible;

-- For each word of `words`, up to three known words with the most
-- trigrams in common, at least pg_trgm.similarity_threshold similar.
-- The vocabulary is small next to the documents, and the planner,
-- costing a similarity like a comparison, scans it whole (milliseconds
-- of CPU per word); the trigram index reads only the candidates.
CREATE FUNCTION vodfarm_search_corrections(words text[])
    RETURNS TABLE (word text, candidate text)
    LANGUAGE sql STABLE
    SET enable_seqscan = off
    AS $$
        SELECT q.w, t.word
        FROM unnest(words) AS q(w)
        CROSS JOIN LATERAL (
            SELECT s.word FROM search_terms s
            WHERE s.word % vodfarm_fold(q.w)
            ORDER BY similarity(s.word, vodfarm_fold(q.w)) DESC, s.word
            LIMIT 3
        ) t
    $$;

-- What share of the visible documents holds each of `words`, from the
-- planner's statistics of search_documents.tsv (ANALYZE, autovacuum),
-- and how many documents there are: the search picks its plan with it
-- (a few matches are read all, many walk the views bands). A word's
-- share is that of its stemmed lexeme; a lexeme not among the most
-- common is rarer than the least common one listed; a word without a
-- lexeme (a stop word) does not narrow a match (share 1). A word ending
-- in `*` is a prefix: the shares of the listed lexemes it begins, plus
-- the least listed one's for the others (a guess, not a bound). No rows
-- before the first ANALYZE.
CREATE FUNCTION vodfarm_search_shares(words text[])
    RETURNS TABLE (word text, share double precision, docs double precision)
    LANGUAGE sql STABLE
    AS $$
        WITH st AS (
            SELECT s.most_common_elems::text::text[] AS lexemes,
                   s.most_common_elem_freqs AS freqs,
                   greatest(c.reltuples, 0)::double precision AS docs
            FROM pg_class c
            JOIN pg_stats s ON s.schemaname = current_schema() AND s.tablename = c.relname
                           AND s.attname = 'tsv'
            WHERE c.oid = 'search_documents'::regclass
              AND s.most_common_elems IS NOT NULL
        )
        SELECT w.w,
               least(1, CASE
                   WHEN right(w.w, 1) <> '*' THEN coalesce((
                       SELECT max(coalesce(st.freqs[array_position(st.lexemes, l)],
                                           st.freqs[cardinality(st.lexemes) + 1]))
                       FROM unnest(tsvector_to_array(to_tsvector('vodfarm', w.w))) AS l
                   ), 1)
                   WHEN p.lexeme IS NULL THEN 1
                   ELSE st.freqs[cardinality(st.lexemes) + 1] + coalesce((
                       SELECT sum(x.f)
                       FROM unnest(st.lexemes, st.freqs[1:cardinality(st.lexemes)]) AS x(lexeme, f)
                       WHERE starts_with(x.lexeme, p.lexeme)
                   ), 0)
               END)::double precision,
               st.docs
        FROM st, unnest(words) AS w(w)
        CROSS JOIN LATERAL (
            SELECT min(l) AS lexeme
            FROM unnest(tsvector_to_array(to_tsvector('vodfarm', left(w.w, -1)))) AS l
        ) p
    $$;
