//! The statements of the PostgreSQL index, built once from fragments so
//! that each order is one fixed, prepared statement.
//!
//! Parameters of every page and facet statement:
//! `$1` a `to_tsquery` string (the parsed text, or its typo-corrected
//! form), `$2` channel public id, `$3` category, `$4` tag, `$5`/`$6`
//! duration range `[min, max)`, `$7` uploaded after. Page statements add
//! `$8`/`$9` (the cursor's key and row), `$10` (rows wanted) and, ordered
//! by relevance, `$11` (the rank window).

use crate::query::Sort;
use std::sync::OnceLock;

/// The match. `querytree` is `T` for a query that matches without any
/// indexable word (only exclusions survived stop-word removal) and empty
/// for no word at all: such a query would scan every document, so it
/// matches nothing instead (a one-time filter on the parameter,
/// evaluated before any scan).
const MATCHES: &str = "d.tsv @@ to_tsquery('vodfarm', $1)
    AND querytree(to_tsquery('vodfarm', $1)) NOT IN ('T', '')";

const SCORE: &str = "ts_rank(d.tsv, to_tsquery('vodfarm', $1))";

/// Every filter but category and duration (the facets ignore those two).
const FILTERS_BASE: &str = "
    AND ($2::text IS NULL OR d.channel_public_id = $2)
    AND ($4::text IS NULL OR d.tags_folded @> ARRAY[vodfarm_fold($4::text)])
    AND ($7::timestamptz IS NULL OR d.uploaded_at > $7)";
const FILTER_CATEGORY: &str = "($3::text IS NULL OR d.category_folded = vodfarm_fold($3::text))";
const FILTER_DURATION: &str = "($5::int IS NULL OR d.duration_seconds >= $5)
    AND ($6::int IS NULL OR d.duration_seconds < $6)";

/// `ts_headline` marks matches with `index::MARK_START`/`MARK_END`,
/// after removing them from the stored text.
const HEADLINES: &str = "
    ts_headline('vodfarm', translate(x.title, chr(2) || chr(3), ''), to_tsquery('vodfarm', $1),
                'HighlightAll=true, StartSel=' || chr(2) || ', StopSel=' || chr(3)) AS title_marked,
    ts_headline('vodfarm', translate(coalesce(x.description, ''), chr(2) || chr(3), ''),
                to_tsquery('vodfarm', $1),
                'MaxFragments=2, MaxWords=24, MinWords=8, FragmentDelimiter=\" … \", StartSel='
                || chr(2) || ', StopSel=' || chr(3)) AS description_marked";

/// A page: `(video_id, key, title_marked, description_marked)` rows in
/// order, one more than wanted when more follow.
///
/// `match_first`: find every match through the GIN index before ordering
/// (`OFFSET 0` keeps the planner from walking an order's index instead).
/// For phrases: the planner cannot tell how rare "a b" is when a and b
/// are common, and a walk of the views index that checks positions row
/// by row would read most of the table.
fn page(sort: Sort, match_first: bool) -> String {
    let base = format!(
        "d.visible AND {MATCHES} {FILTERS_BASE} AND {FILTER_CATEGORY} AND {FILTER_DURATION}"
    );
    let from = if match_first {
        format!("(SELECT d.* FROM search_documents d WHERE {base} OFFSET 0) d")
    } else {
        "search_documents d".to_owned()
    };
    let base = if match_first { "true".to_owned() } else { base };
    match sort {
        // Relevance is ranked over the `$11` most viewed matches: the
        // views index finds them without reading every match of a common
        // word, and every match is ranked when there are fewer.
        Sort::Relevance => format!(
            "SELECT x.video_id, x.key, {HEADLINES}
             FROM (
                 SELECT s.video_id, s.title, s.description, s.key
                 FROM (
                     SELECT d.video_id, d.title, d.description, {SCORE} AS key
                     FROM (
                         SELECT d.video_id, d.title, d.description, d.tsv
                         FROM {from}
                         WHERE {base}
                         ORDER BY d.view_count DESC, d.video_id
                         LIMIT $11
                     ) d
                 ) s
                 WHERE $8::real IS NULL OR s.key < $8 OR (s.key = $8 AND s.video_id > $9)
                 ORDER BY s.key DESC, s.video_id
                 LIMIT $10
             ) x
             ORDER BY x.key DESC, x.video_id"
        ),
        Sort::Views => format!(
            "SELECT x.video_id, x.key, {HEADLINES}
             FROM (
                 SELECT d.video_id, d.title, d.description, d.view_count AS key
                 FROM {from}
                 WHERE {base}
                   AND ($8::bigint IS NULL OR d.view_count < $8
                        OR (d.view_count = $8 AND d.video_id > $9))
                 ORDER BY d.view_count DESC, d.video_id
                 LIMIT $10
             ) x
             ORDER BY x.key DESC, x.video_id"
        ),
        Sort::Newest => format!(
            "SELECT x.video_id, x.key, {HEADLINES}
             FROM (
                 SELECT d.video_id, d.title, d.description, d.uploaded_at AS key
                 FROM {from}
                 WHERE {base}
                   AND ($8::timestamptz IS NULL OR (d.uploaded_at, d.video_id) < ($8, $9::bigint))
                 ORDER BY d.uploaded_at DESC, d.video_id DESC
                 LIMIT $10
             ) x
             ORDER BY x.key DESC, x.video_id DESC"
        ),
    }
}

/// Facet counts over at most `$8` matches (category and duration each
/// ignoring its own filter): rows `(kind, value, n, scanned)` where kind
/// is `category`, `duration` or `total`.
fn facets() -> String {
    format!(
        "WITH m AS (
             SELECT d.category,
                    CASE WHEN d.duration_seconds < 240 THEN 'short'
                         WHEN d.duration_seconds < 1201 THEN 'medium'
                         ELSE 'long' END AS bucket,
                    {FILTER_CATEGORY} AS cat_ok,
                    {FILTER_DURATION} AS dur_ok
             FROM search_documents d
             WHERE d.visible AND {MATCHES} {FILTERS_BASE}
             LIMIT $8
         )
         SELECT CASE WHEN GROUPING(m.category) = 0 THEN 'category'
                     WHEN GROUPING(m.bucket) = 0 THEN 'duration'
                     ELSE 'total' END AS kind,
                coalesce(m.category, m.bucket) AS value,
                CASE WHEN GROUPING(m.category) = 0 THEN count(*) FILTER (WHERE m.dur_ok)
                     WHEN GROUPING(m.bucket) = 0 THEN count(*) FILTER (WHERE m.cat_ok)
                     ELSE count(*) FILTER (WHERE m.cat_ok AND m.dur_ok) END AS n,
                count(*) AS scanned
         FROM m
         GROUP BY GROUPING SETS ((m.category), (m.bucket), ())"
    )
}

/// For each word of `$1`, up to three known words (the vocabulary of
/// titles, tags and channel names) with the most trigrams in common,
/// at least `pg_trgm.similarity_threshold` similar (set per connection):
/// rows `(word, candidate)`.
pub(crate) const CORRECTIONS: &str = "
    SELECT q.w, t.word
    FROM unnest($1::text[]) AS q(w)
    CROSS JOIN LATERAL (
        SELECT s.word FROM search_terms s
        WHERE s.word % vodfarm_fold(q.w)
        ORDER BY similarity(s.word, vodfarm_fold(q.w)) DESC, s.word
        LIMIT 3
    ) t";

/// The words of the searchable videos among `$1` join the vocabulary
/// (in order, so concurrent indexers cannot deadlock on them).
pub(crate) const ADD_TERMS: &str = "
    INSERT INTO search_terms (word)
    SELECT x.w FROM (
        SELECT DISTINCT unnest(vodfarm_search_words(v.title, v.tags, c.name)) AS w
        FROM videos v JOIN channels c ON c.id = v.channel_id
        WHERE v.id = ANY($1) AND vodfarm_searchable(v.status, v.privacy)
    ) x
    WHERE NOT EXISTS (SELECT 1 FROM search_terms t WHERE t.word = x.w)
    ORDER BY x.w
    ON CONFLICT (word) DO NOTHING";

/// Full rebuild of the vocabulary, step 1: every word of the index.
pub(crate) const REINDEX_TERMS_ADD: &str = "
    INSERT INTO search_terms (word)
    SELECT DISTINCT unnest(vodfarm_search_words(title, tags, channel_name)) AS w
    FROM search_documents WHERE visible
    ORDER BY w
    ON CONFLICT (word) DO NOTHING";

/// Step 2: words no document holds any more.
pub(crate) const REINDEX_TERMS_STALE: &str = "
    DELETE FROM search_terms t
    WHERE NOT EXISTS (
        SELECT 1 FROM (
            SELECT DISTINCT unnest(vodfarm_search_words(title, tags, channel_name)) AS w
            FROM search_documents WHERE visible
        ) cur
        WHERE cur.w = t.word
    )";

/// Titles for as-you-type: `$1` a title-only `to_tsquery` string, `$2`
/// how many; rows `(video_id, title_marked)`, most viewed first.
pub(crate) const SUGGEST: &str = "
    SELECT x.video_id,
           ts_headline('vodfarm', translate(x.title, chr(2) || chr(3), ''),
                       to_tsquery('vodfarm', $1),
                       'HighlightAll=true, StartSel=' || chr(2) || ', StopSel=' || chr(3))
    FROM (
        SELECT d.video_id, d.title, d.view_count
        FROM search_documents d
        WHERE d.visible AND d.tsv @@ to_tsquery('vodfarm', $1)
          AND querytree(to_tsquery('vodfarm', $1)) NOT IN ('T', '')
        ORDER BY d.view_count DESC, d.video_id
        LIMIT $2
    ) x
    ORDER BY x.view_count DESC, x.video_id";

/// The columns a document is built from, for `videos v JOIN channels c`.
const DOC_COLUMNS: &str = "v.id, coalesce(v.search_version, 0), true, v.video_id, c.channel_id,
    c.name, v.title, v.description, v.tags, v.category, v.duration_seconds,
    coalesce(v.view_count, 0), coalesce(v.like_count, 0),
    coalesce(v.uploaded_at, 'epoch'::timestamptz), clock_timestamp()";

const DOC_INSERT: &str = "INSERT INTO search_documents AS d (video_id, version, visible,
    public_id, channel_public_id, channel_name, title, description, tags, category,
    duration_seconds, view_count, like_count, uploaded_at, indexed_at)";

const DOC_UPDATE: &str = "ON CONFLICT (video_id) DO UPDATE SET
    version = excluded.version, visible = excluded.visible, public_id = excluded.public_id,
    channel_public_id = excluded.channel_public_id, channel_name = excluded.channel_name,
    title = excluded.title, description = excluded.description, tags = excluded.tags,
    category = excluded.category, duration_seconds = excluded.duration_seconds,
    view_count = excluded.view_count, like_count = excluded.like_count,
    uploaded_at = excluded.uploaded_at, indexed_at = excluded.indexed_at";

/// Documents for the searchable videos among `$1` (row ids), unless the
/// index holds that version or a newer one already.
pub(crate) fn upsert() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| {
        format!(
            "{DOC_INSERT}
             SELECT {DOC_COLUMNS}
             FROM videos v JOIN channels c ON c.id = v.channel_id
             WHERE v.id = ANY($1) AND vodfarm_searchable(v.status, v.privacy)
             {DOC_UPDATE}
             WHERE d.version < excluded.version"
        )
    })
}

/// Tombstones for the videos among `$1` (row ids; `$2` their highest
/// claimed outbox sequence) that are not searchable or gone, unless the
/// index holds a newer version already.
pub(crate) const TOMBSTONE: &str = "
    INSERT INTO search_documents AS d (video_id, version, visible, indexed_at)
    SELECT b.id, coalesce(v.search_version, b.seq), false, clock_timestamp()
    FROM unnest($1::bigint[], $2::bigint[]) AS b(id, seq)
    LEFT JOIN videos v ON v.id = b.id
    WHERE v.id IS NULL OR NOT vodfarm_searchable(v.status, v.privacy)
    ON CONFLICT (video_id) DO UPDATE SET
        version = excluded.version, visible = false, public_id = NULL,
        channel_public_id = NULL, channel_name = NULL, title = NULL, description = NULL,
        tags = NULL, category = NULL, duration_seconds = NULL, view_count = NULL,
        like_count = NULL, uploaded_at = NULL, indexed_at = excluded.indexed_at
    WHERE d.version < excluded.version";

/// Full rebuild, step 1: documents for searchable videos with row ids in
/// `($1, $2]` (batches keep transactions short).
pub(crate) fn reindex_range() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| {
        format!(
            "{DOC_INSERT}
             SELECT {DOC_COLUMNS}
             FROM videos v JOIN channels c ON c.id = v.channel_id
             WHERE v.id > $1 AND v.id <= $2 AND vodfarm_searchable(v.status, v.privacy)
             {DOC_UPDATE}
             WHERE d.version < excluded.version"
        )
    })
}

/// Full rebuild, step 2: documents whose video is gone or no longer
/// searchable become tombstones.
pub(crate) const REINDEX_STALE: &str = "
    UPDATE search_documents d SET
        version = greatest(d.version, coalesce(v.search_version, 0)), visible = false,
        public_id = NULL, channel_public_id = NULL, channel_name = NULL, title = NULL,
        description = NULL, tags = NULL, category = NULL, duration_seconds = NULL,
        view_count = NULL, like_count = NULL, uploaded_at = NULL,
        indexed_at = clock_timestamp()
    FROM search_documents d2
    LEFT JOIN videos v ON v.id = d2.video_id
    WHERE d.video_id = d2.video_id AND d.visible
      AND (v.id IS NULL OR NOT vodfarm_searchable(v.status, v.privacy))";

/// The page statement of an order (see [`page`] for `match_first`).
pub(crate) fn page_statement(sort: Sort, match_first: bool) -> &'static str {
    static S: OnceLock<Vec<String>> = OnceLock::new();
    let all = S.get_or_init(|| {
        [Sort::Relevance, Sort::Views, Sort::Newest]
            .into_iter()
            .flat_map(|s| [page(s, false), page(s, true)])
            .collect()
    });
    let i = match sort {
        Sort::Relevance => 0,
        Sort::Views => 2,
        Sort::Newest => 4,
    };
    all[i + usize::from(match_first)].as_str()
}

/// The facet statement.
pub(crate) fn facet_statement() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(facets).as_str()
}
