//! The statements of the PostgreSQL index, built once from fragments so
//! that each order and plan is one fixed, prepared statement.
//!
//! Parameters of every page and facet statement:
//! `$1` a `to_tsquery` string (the parsed text, or its typo-corrected
//! form), `$2` channel public id, `$3` category, `$4` tag, `$5`/`$6`
//! duration range `[min, max)`, `$7` uploaded after. Page statements add
//! `$8`/`$9` (the cursor's key and row), `$10` (rows wanted) and, ordered
//! by relevance, `$11` (the rank window); [`Plan::PhraseCapped`] adds
//! `$12` (the candidate cap) and `$13` (the query without its phrase
//! conditions). Facet statements add `$8` (the facet limit), and
//! [`Plan::PhraseCapped`] `$9`/`$10` as the page's `$12`/`$13`.

use crate::query::Sort;
use std::sync::OnceLock;

/// How a statement finds the matches it orders or counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Let the planner choose: the order's index (walked, each row
    /// checked) or the GIN index (every match read, then ordered). Right
    /// for queries that match few documents, and for prefixes (a prefix
    /// is a range of index entries, expensive to look up repeatedly).
    Plain,
    /// Every match through the GIN index first (`OFFSET 0` keeps the
    /// planner from walking an order's index instead). For phrases
    /// matching few documents: the planner cannot tell how rare "a b" is
    /// when a and b are common, and a walk of the views index that
    /// checks positions row by row would read most of the table.
    MatchFirst,
    /// Views bands (`views_band`, a column of the GIN index), most viewed
    /// first, each intersected with the words inside the index, until
    /// the window is full: about as many rows read as the window holds,
    /// however common the words. Relevance, facets, and the views order
    /// with a category filter (the category is a column of the GIN
    /// index, not of the views index: walking the views index for a
    /// word in one category of twelve read twelve times as far, 15-20
    /// ms for a word in 9 % of the documents; by bands, 2 ms).
    Banded,
    /// Candidates of a looser query (`$13`), at most the cap (`$12`),
    /// are checked against the query, then ordered. For phrases of
    /// common words: the first documents holding every word (the GIN
    /// index answers without positions); a phrase of common words found
    /// nowhere costs the cap, not the table; the price is that a phrase
    /// is looked for in those candidates only. (Bands would cost an
    /// intersection of every word with each band.) For a word being
    /// typed after rarer words: the documents of the other words (GIN
    /// reads every posting of a prefix before intersecting; a few
    /// hundred rows checked cost less), chosen only when they are
    /// estimated well under the cap.
    PhraseCapped,
}

/// The match. `querytree` is `T` for a query that matches without any
/// indexable word (only exclusions survived stop-word removal) and empty
/// for no word at all: such a query would scan every document, so it
/// matches nothing instead (a one-time filter on the parameter,
/// evaluated before any scan).
fn matches(param: &str) -> String {
    format!(
        "d.tsv @@ to_tsquery('vodfarm', {param})
    AND querytree(to_tsquery('vodfarm', {param})) NOT IN ('T', '')"
    )
}

const SCORE: &str = "ts_rank(d.tsv, to_tsquery('vodfarm', $1))";

/// Every filter but category and duration (the facets ignore those two).
const FILTERS_BASE: &str = "
    AND ($2::text IS NULL OR d.channel_public_id = $2)
    AND ($4::text IS NULL OR d.tags_folded @> ARRAY[vodfarm_fold($4::text)])
    AND ($7::timestamptz IS NULL OR d.uploaded_at > $7)";
const FILTER_CATEGORY: &str = "($3::text IS NULL OR d.category_folded = vodfarm_fold($3::text))";
const FILTER_DURATION: &str = "($5::int IS NULL OR d.duration_seconds >= $5)
    AND ($6::int IS NULL OR d.duration_seconds < $6)";

/// The views bands from the most viewed document's down to 0 (the
/// highest is read from the views index: one entry).
const BANDS: &str = "generate_series(
        vodfarm_views_band((SELECT max(s.view_count) FROM search_documents s WHERE s.visible)),
        0, -1) AS b(band)";

/// `ts_headline` marks matches with `index::MARK_START`/`MARK_END`,
/// after removing them from the stored text of `x`.
fn headlines(x: &str) -> String {
    format!(
        "
    ts_headline('vodfarm', translate({x}.title, chr(2) || chr(3), ''), to_tsquery('vodfarm', $1),
                'HighlightAll=true, StartSel=' || chr(2) || ', StopSel=' || chr(3)) AS title_marked,
    ts_headline('vodfarm', translate(coalesce({x}.description, ''), chr(2) || chr(3), ''),
                to_tsquery('vodfarm', $1),
                'MaxFragments=2, MaxWords=24, MinWords=8, FragmentDelimiter=\" … \", StartSel='
                || chr(2) || ', StopSel=' || chr(3)) AS description_marked"
    )
}

/// Up to `limit` rows of `columns` of the documents meeting `cond` (on
/// `d`), band by band from the most viewed: a nested loop (the lateral
/// `LIMIT` keeps the planner from joining the bands to every match at
/// once) that stops as soon as it has `limit` rows. Within a band, rows
/// come in table order.
fn banded(columns: &str, cond: &str, limit: &str) -> String {
    format!(
        "SELECT m.* FROM {BANDS}
         CROSS JOIN LATERAL (
             SELECT {columns} FROM search_documents d
             WHERE d.views_band = b.band AND {cond}
             LIMIT {limit}
         ) m
         LIMIT {limit}"
    )
}

/// The window a relevance page ranks, as rows `(video_id, tsv)` of the
/// documents meeting `base` (every filter; `$1` matched; `loose`: the
/// same with `$13`).
fn window(plan: Plan, base: &str, loose: &str) -> String {
    match plan {
        Plan::Plain | Plan::MatchFirst => {
            let from = if plan == Plan::MatchFirst {
                format!("(SELECT d.* FROM search_documents d WHERE {base} OFFSET 0) d")
            } else {
                "search_documents d".to_owned()
            };
            let cond = if plan == Plan::MatchFirst {
                "true"
            } else {
                base
            };
            format!(
                "SELECT d.video_id, d.tsv FROM {from} WHERE {cond}
                 ORDER BY d.view_count DESC, d.video_id LIMIT $11"
            )
        }
        Plan::Banded => banded("d.video_id, d.tsv", base, "$11"),
        Plan::PhraseCapped => format!(
            "SELECT c.video_id, c.tsv FROM (
                 SELECT d.video_id, d.tsv, d.view_count FROM search_documents d
                 WHERE {loose} LIMIT $12
             ) c
             WHERE c.tsv @@ to_tsquery('vodfarm', $1)
             ORDER BY c.view_count DESC, c.video_id LIMIT $11"
        ),
    }
}

/// A page: `(video_id, key, title_marked, description_marked)` rows in
/// order, one more than wanted when more follow.
fn page(sort: Sort, plan: Plan) -> String {
    let base_of = |param: &str| {
        format!(
            "d.visible AND {} {FILTERS_BASE} AND {FILTER_CATEGORY} AND {FILTER_DURATION}",
            matches(param)
        )
    };
    let base = base_of("$1");
    // The orders by views and upload time take their first rows from
    // their own index, or from every match: no window.
    let plan = match (sort, plan) {
        (Sort::Relevance, p) | (Sort::Views, p @ Plan::Banded) => p,
        (_, Plan::Banded) => Plan::Plain,
        (_, Plan::PhraseCapped) => Plan::MatchFirst,
        (_, p) => p,
    };
    let from = if plan == Plan::MatchFirst {
        format!("(SELECT d.* FROM search_documents d WHERE {base} OFFSET 0) d")
    } else {
        "search_documents d".to_owned()
    };
    let cond = if plan == Plan::MatchFirst {
        "true".to_owned()
    } else {
        base.clone()
    };
    match sort {
        // Relevance is ranked over a window of the most viewed matches
        // (`$11` of them; all of them when fewer match); the titles and
        // descriptions are read for the page's rows only.
        Sort::Relevance => format!(
            "SELECT x.video_id, x.key, {}
             FROM (
                 SELECT s.video_id, s.key
                 FROM (
                     SELECT d.video_id, {SCORE} AS key
                     FROM ({}) d
                 ) s
                 WHERE $8::real IS NULL OR s.key < $8 OR (s.key = $8 AND s.video_id > $9)
                 ORDER BY s.key DESC, s.video_id
                 LIMIT $10
             ) x
             JOIN search_documents t ON t.video_id = x.video_id
             ORDER BY x.key DESC, x.video_id",
            headlines("t"),
            window(plan, &base, &base_of("$13"))
        ),
        // Banded by views: each band's first rows in order (the GIN
        // index intersects the words, the band and the category), bands
        // from the cursor's down; the first `$10` rows out of the nested
        // loop are the first in views order, since every row of a band
        // has more views than any row of the bands below.
        Sort::Views if plan == Plan::Banded => format!(
            "SELECT x.video_id, x.key, {}
             FROM (
                 SELECT m.* FROM generate_series(
                     vodfarm_views_band(coalesce($8::bigint,
                         (SELECT max(s.view_count) FROM search_documents s WHERE s.visible))),
                     0, -1) AS b(band)
                 CROSS JOIN LATERAL (
                     SELECT d.video_id, d.title, d.description, d.view_count AS key
                     FROM search_documents d
                     WHERE d.views_band = b.band AND {base}
                       AND ($8::bigint IS NULL OR d.view_count < $8
                            OR (d.view_count = $8 AND d.video_id > $9))
                     ORDER BY d.view_count DESC, d.video_id
                     LIMIT $10
                 ) m
                 LIMIT $10
             ) x
             ORDER BY x.key DESC, x.video_id",
            headlines("x")
        ),
        Sort::Views => format!(
            "SELECT x.video_id, x.key, {}
             FROM (
                 SELECT d.video_id, d.title, d.description, d.view_count AS key
                 FROM {from}
                 WHERE {cond}
                   AND ($8::bigint IS NULL OR d.view_count < $8
                        OR (d.view_count = $8 AND d.video_id > $9))
                 ORDER BY d.view_count DESC, d.video_id
                 LIMIT $10
             ) x
             ORDER BY x.key DESC, x.video_id",
            headlines("x")
        ),
        Sort::Newest => format!(
            "SELECT x.video_id, x.key, {}
             FROM (
                 SELECT d.video_id, d.title, d.description, d.uploaded_at AS key
                 FROM {from}
                 WHERE {cond}
                   AND ($8::timestamptz IS NULL OR (d.uploaded_at, d.video_id) < ($8, $9::bigint))
                 ORDER BY d.uploaded_at DESC, d.video_id DESC
                 LIMIT $10
             ) x
             ORDER BY x.key DESC, x.video_id DESC",
            headlines("x")
        ),
    }
}

/// Facet counts over at most `$8` matches (category and duration each
/// ignoring its own filter): rows `(kind, value, n, scanned)` where kind
/// is `category`, `duration` or `total`. The banded plan counts the most
/// viewed matches, the capped one the phrase matches among its
/// candidates.
fn facets(plan: Plan) -> String {
    let base = format!("d.visible AND {} {FILTERS_BASE}", matches("$1"));
    let columns = "d.category, d.category_folded, d.duration_seconds";
    let from = match plan {
        Plan::Plain | Plan::MatchFirst => {
            format!("(SELECT {columns} FROM search_documents d WHERE {base} LIMIT $8) d")
        }
        Plan::Banded => format!("({}) d", banded(columns, &base, "$8")),
        Plan::PhraseCapped => {
            let loose = format!("d.visible AND {} {FILTERS_BASE}", matches("$10"));
            format!(
                "(SELECT c.category, c.category_folded, c.duration_seconds
                  FROM (SELECT {columns}, d.tsv FROM search_documents d WHERE {loose} LIMIT $9) c
                  WHERE c.tsv @@ to_tsquery('vodfarm', $1)
                  LIMIT $8) d"
            )
        }
    };
    format!("WITH {}", facet_counts(&from))
}

/// The CTE `m` and the counting `SELECT` of the facets of the rows of
/// `from` (a source aliased `d` with `category`, `category_folded` and
/// `duration_seconds`).
fn facet_counts(from: &str) -> String {
    format!(
        "m AS (
             SELECT d.category,
                    CASE WHEN d.duration_seconds < 240 THEN 'short'
                         WHEN d.duration_seconds < 1201 THEN 'medium'
                         ELSE 'long' END AS bucket,
                    {FILTER_CATEGORY} AS cat_ok,
                    {FILTER_DURATION} AS dur_ok
             FROM {from}
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

/// A banded first page by relevance and its facets in one statement,
/// for a search without category and duration filters (so the window
/// and the facets count the same matches): the first `greatest($11,
/// $12)` banded matches are read once; the first `$11` are ranked, the
/// first `$12` counted. Parameters `$1`-`$7` and `$10`-`$12` as the page
/// and facet statements; rows `(video_id, key, title_marked,
/// description_marked)` of the page in order, then `(kind, value, n,
/// scanned)` of the facets (the other columns NULL).
fn page_with_facets() -> String {
    let base = format!("d.visible AND {} {FILTERS_BASE}", matches("$1"));
    format!(
        "WITH w AS MATERIALIZED (
             SELECT m.video_id, m.tsv, m.category, m.category_folded, m.duration_seconds,
                    row_number() OVER () AS n
             FROM ({}) m
         ),
         p AS (
             SELECT x.video_id, x.key, {}
             FROM (
                 SELECT w.video_id, ts_rank(w.tsv, to_tsquery('vodfarm', $1)) AS key
                 FROM w WHERE w.n <= $11
                 ORDER BY key DESC, w.video_id
                 LIMIT $10
             ) x
             JOIN search_documents t ON t.video_id = x.video_id
         ),
         f AS (
             WITH {}
         )
         SELECT p.video_id, p.key, p.title_marked, p.description_marked,
                NULL::text AS kind, NULL::text AS value, NULL::bigint AS n,
                NULL::bigint AS scanned
         FROM p
         UNION ALL
         SELECT NULL, NULL, NULL, NULL, f.kind, f.value, f.n, f.scanned FROM f
         ORDER BY kind NULLS FIRST, key DESC, video_id",
        banded(
            "d.video_id, d.tsv, d.category, d.category_folded, d.duration_seconds",
            &base,
            "greatest($11, $12)"
        ),
        headlines("t"),
        facet_counts("(SELECT * FROM w WHERE w.n <= $12) d"),
    )
}

/// The statement of [`page_with_facets`].
pub(crate) fn page_with_facets_statement() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(page_with_facets).as_str()
}

/// Per word: the share of documents holding it and the document count,
/// from the planner's statistics (`vodfarm_search_shares`).
pub(crate) const SHARES: &str = "SELECT word, share, docs FROM vodfarm_search_shares($1::text[])";

/// For each word of `$1`, up to three known words (the vocabulary of
/// titles, tags and channel names) with the most trigrams in common,
/// at least `pg_trgm.similarity_threshold` similar (set per connection),
/// looked up through the trigram index: rows `(word, candidate)`.
pub(crate) const CORRECTIONS: &str =
    "SELECT word, candidate FROM vodfarm_search_corrections($1::text[])";

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

/// Titles for as-you-type: `$1` the `to_tsquery` string of what was
/// typed, matched in titles only (`title_tsv`), `$2` how many; rows
/// `(video_id, title_marked)`, most viewed first.
pub(crate) const SUGGEST: &str = "
    SELECT x.video_id,
           ts_headline('vodfarm', translate(x.title, chr(2) || chr(3), ''),
                       to_tsquery('vodfarm', $1),
                       'HighlightAll=true, StartSel=' || chr(2) || ', StopSel=' || chr(3))
    FROM (
        SELECT d.video_id, d.title, d.view_count
        FROM search_documents d
        WHERE d.visible AND d.title_tsv @@ to_tsquery('vodfarm', $1)
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

const PLANS: [Plan; 4] = [
    Plan::Plain,
    Plan::MatchFirst,
    Plan::Banded,
    Plan::PhraseCapped,
];

fn plan_index(plan: Plan) -> usize {
    match plan {
        Plan::Plain => 0,
        Plan::MatchFirst => 1,
        Plan::Banded => 2,
        Plan::PhraseCapped => 3,
    }
}

/// The page statement of an order and plan.
pub(crate) fn page_statement(sort: Sort, plan: Plan) -> &'static str {
    static S: OnceLock<Vec<String>> = OnceLock::new();
    let all = S.get_or_init(|| {
        [Sort::Relevance, Sort::Views, Sort::Newest]
            .into_iter()
            .flat_map(|s| PLANS.map(|p| page(s, p)))
            .collect()
    });
    let i = match sort {
        Sort::Relevance => 0,
        Sort::Views => 4,
        Sort::Newest => 8,
    };
    all[i + plan_index(plan)].as_str()
}

/// The facet statement of a plan.
pub(crate) fn facet_statement(plan: Plan) -> &'static str {
    static S: OnceLock<Vec<String>> = OnceLock::new();
    S.get_or_init(|| PLANS.map(facets).to_vec())[plan_index(plan)].as_str()
}
