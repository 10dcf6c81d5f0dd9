//! How a query is planned from the word statistics: how many documents
//! it can match (words taken as independent), whether a word being typed
//! is better found through the other words' candidates, and which page
//! and facet statements ([`Plan`]) answer it.

use super::sql::Plan;
use crate::query::Sort;
use crate::text::TextQuery;
use std::collections::HashMap;

/// The shares of some words, read from [`Shares`].
#[derive(Debug)]
pub(super) struct WordShares {
    pub(super) docs: f64,
    pub(super) words: HashMap<String, f64>,
}

impl WordShares {
    /// A word's share (unknown: every document).
    pub(super) fn share(&self, word: &str) -> f64 {
        self.words.get(word).copied().unwrap_or(1.0)
    }

    /// How many documents the required words of an alternative
    /// ([`TextQuery::required_words`]) match together, as if words were
    /// independent: the product of their slots' shares (a slot is any of
    /// its words: the sum of theirs), summed over the alternatives.
    ///
    /// An upper bound (the rarest slot) would call two words in 2 % of
    /// the documents each "4,000 matches" when they meet in 80: banded,
    /// that walked twenty bands for nothing (10-20 ms), where reading
    /// the 80 costs 1 ms. Words that go together more often than chance
    /// are underestimated: they are read all (`Plan::MatchFirst`).
    pub(super) fn matches(&self, groups: &[Vec<Vec<String>>]) -> f64 {
        let share: f64 = groups
            .iter()
            .map(|slots| {
                slots
                    .iter()
                    .map(|alts| alts.iter().map(|w| self.share(w)).sum::<f64>().min(1.0))
                    .product::<f64>()
            })
            .sum();
        share.min(1.0) * self.docs
    }
}

/// What the statistics say about a query's matches.
#[derive(Debug, Clone, Copy)]
pub(super) struct Estimate {
    /// Documents.
    pub(super) docs: f64,
    /// Matches of the query.
    pub(super) matches: f64,
    /// Matches of the query without the word being typed (none typed, or
    /// nothing left without it: `None`).
    pub(super) driver: Option<f64>,
    /// Documents holding a word beginning with the one being typed.
    pub(super) prefix: Option<f64>,
}

impl Estimate {
    /// Whether the matches are too many to read them all: found views
    /// band by views band (a prefix: as the planner chooses).
    pub(super) fn many(&self, window: i64, threshold: i64) -> bool {
        let threshold = threshold as f64;
        if self.prefix.is_some() {
            // A prefix is never banded: reading all M matches costs M
            // rows, walking the views index window × docs / M; they
            // cross at M = sqrt(window × docs).
            let cross = (window as f64 * self.docs).sqrt();
            return self.matches > threshold.max(cross);
        }
        self.matches > threshold
    }

    /// Whether the other words should find the candidates of a query
    /// with a word being typed (at most `most` of them), each then
    /// checked against the whole query, rather than the GIN index
    /// answering the whole query. GIN reads every entry of a prefix
    /// before it can intersect (it cannot skip through a range of
    /// words as it skips through one word's postings): "grikatrour
    /// pist" read the 90,000 postings of pist* for 92 matches (7-12 ms);
    /// the 640 documents of "grikatrour" checked one by one take 1 ms.
    /// A row checked costs about as much as 40 postings read; a prefix
    /// holding fewer than `PREFIX_POSTINGS_PER_ROW` × the other words'
    /// matches is left to the index.
    pub(super) fn driven(&self, most: i64) -> bool {
        match (self.driver, self.prefix) {
            (Some(driver), Some(prefix)) => {
                driver <= most as f64 && driver * PREFIX_POSTINGS_PER_ROW < prefix
            }
            _ => false,
        }
    }
}

/// Ordered by views in a category, words in more than this share of the
/// documents walk the views index (a page of 20 in one category of
/// twelve: under 1,000 rows), fewer go by bands (the walk read 15-20 ms
/// for a word in 9 %; bands 2 ms, but 5 ms instead of 3 for a word in
/// 77 %: its top band's category matches are all read and sorted).
pub(super) const WALK_SHARE: f64 = 0.3;

/// How many times the other words' matches a prefix must hold for the
/// other words to find the candidates ([`Estimate::driven`]).
const PREFIX_POSTINGS_PER_ROW: f64 = 8.0;

/// The page and facet plans of a query (and whether they are as for
/// many matches), from how many it can match (`many`), whether the
/// words besides the one being typed find few candidates (`driven`)
/// and whether an order by views goes by bands (`category_bands`: a
/// category filter and words not too common, [`WALK_SHARE`]).
pub(super) fn choose(
    sort: Sort,
    category_bands: bool,
    query: &TextQuery,
    many: bool,
    driven: bool,
) -> (Plan, Plan, bool) {
    // A prefix is a range of index entries, expensive to look up
    // again for every band: it is never banded.
    let banded = many && !query.has_prefix();
    // Few matches: read them all through the GIN index (the planner
    // may walk an order's index instead, reading matches / share
    // rows). A prefix of many: the planner's choice. A prefix with
    // rarer words: their candidates, checked.
    let plan = match (banded, query.has_phrase()) {
        _ if driven => Plan::PhraseCapped,
        _ if many && query.has_prefix() => Plan::Plain,
        (false, _) => Plan::MatchFirst,
        (true, false) if sort == Sort::Relevance => Plan::Banded,
        // By views in a category: the GIN index intersects the words,
        // the category and each band (see `sql::page`).
        (true, false) if sort == Sort::Views && category_bands => Plan::Banded,
        // Otherwise the orders by views and upload time walk their index
        // for common words.
        (true, false) => Plan::Plain,
        (true, true) => Plan::PhraseCapped,
    };
    let facet_plan = match (banded, query.has_phrase()) {
        _ if driven => Plan::PhraseCapped,
        _ if query.has_prefix() => Plan::Plain,
        (false, _) => Plan::Plain,
        (true, false) => Plan::Banded,
        (true, true) => Plan::PhraseCapped,
    };
    (plan, facet_plan, many)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(docs: f64, words: &[(&str, f64)]) -> WordShares {
        WordShares {
            docs,
            words: words.iter().map(|(w, s)| ((*w).to_owned(), *s)).collect(),
        }
    }

    fn query(q: &str) -> TextQuery {
        TextQuery::parse(q).expect(q)
    }

    /// The estimate of `q` over the bench's shares of its words.
    fn estimate(q: &str, s: &WordShares) -> Estimate {
        let q = query(q);
        Estimate {
            docs: s.docs,
            matches: s.matches(&q.required_words()),
            driver: q.without_prefix().map(|d| s.matches(&d.required_words())),
            prefix: q
                .required_words()
                .iter()
                .flatten()
                .flatten()
                .find(|w| w.ends_with('*'))
                .map(|w| s.share(w) * s.docs),
        }
    }

    /// Shares measured in the bench's 200,000 documents (Zipf words).
    fn bench() -> WordShares {
        shares(
            200_000.0,
            &[
                ("brouril", 0.768),
                ("kashax", 0.374),
                ("movoul", 0.164),
                ("pastegraim", 0.091),
                ("shinipoum", 0.040),
                ("shoukezer", 0.019),
                ("grikatrour", 0.0032),
                ("zistan", 0.0131),
                ("pist*", 0.452),
                ("dous*", 0.201),
            ],
        )
    }

    #[test]
    fn words_that_rarely_meet_are_read_all_not_banded() {
        let s = bench();
        let (window, threshold) = (500, 2000);
        // 127 documents hold both (3,800 hold the rarer): every match
        // through the GIN index, 1 ms; banded it walked 20 bands, 11 ms.
        let e = estimate("shoukezer shinipoum ", &s);
        assert!((e.matches - 152.0).abs() < 1.0, "{}", e.matches);
        assert!(!e.many(window, threshold));
        // 11,830 hold both: banded (reading all took 50 ms).
        assert!(estimate("kashax movoul ", &s).many(window, threshold));
        assert!(estimate("brouril ", &s).many(window, threshold));
        // Alternatives add up; a slot's alternatives too, up to all.
        let either = estimate("shoukezer or grikatrour ", &s);
        assert!((either.matches - (0.019 + 0.0032) * 200_000.0).abs() < 1.0);
        let unknown = shares(100.0, &[]).matches(&query("x y ").required_words());
        assert_eq!(unknown, 100.0, "unknown words narrow nothing");
        let plan = |q: &str| {
            let e = estimate(q, &s);
            let many = e.many(window, threshold);
            let driven = !many && e.driven(1000);
            choose(Sort::Relevance, false, &query(q), many, driven)
        };
        // By views: in a category by bands, otherwise a walk.
        assert_eq!(
            choose(Sort::Views, true, &query("brouril "), true, false),
            (Plan::Banded, Plan::Banded, true)
        );
        assert_eq!(
            choose(Sort::Views, false, &query("brouril "), true, false),
            (Plan::Plain, Plan::Banded, true)
        );
        assert_eq!(
            plan("shoukezer shinipoum "),
            (Plan::MatchFirst, Plan::Plain, false)
        );
        assert_eq!(plan("brouril "), (Plan::Banded, Plan::Banded, true));
        assert_eq!(
            plan("\"brouril kashax\""),
            (Plan::PhraseCapped, Plan::PhraseCapped, true)
        );
    }

    #[test]
    fn a_rare_word_finds_the_candidates_of_a_common_prefix() {
        let s = bench();
        // 640 documents hold grikatrour, 90,000 a word beginning with
        // pist: the 640 are checked (1 ms) instead of reading 90,000
        // postings (7-12 ms).
        let e = estimate("grikatrour pist", &s);
        assert!(e.driven(1000), "{e:?}");
        assert_eq!(
            choose(
                Sort::Relevance,
                false,
                &query("grikatrour pist"),
                false,
                true
            ),
            (Plan::PhraseCapped, Plan::PhraseCapped, false)
        );
        // 2,600 hold zistan: more than the candidates allowed.
        assert!(!estimate("zistan dous", &s).driven(1000));
        // A prefix rarer than 8 times the other words: the index.
        let rare = shares(200_000.0, &[("grikatrour", 0.0032), ("zopl*", 0.006)]);
        assert!(!estimate("grikatrour zopl", &rare).driven(1000));
        // Nothing besides the prefix, or no prefix: never driven.
        assert!(!estimate("pist", &s).driven(1000));
        assert!(!estimate("grikatrour pist ", &s).driven(1000));
        // A prefix of many matches that is not driven: the planner's
        // choice for the page, the plain count for the facets.
        assert_eq!(
            choose(Sort::Relevance, false, &query("brouril pist"), true, false),
            (Plan::Plain, Plan::Plain, true)
        );
        assert_eq!(
            choose(Sort::Relevance, false, &query("zistan dous"), false, false),
            (Plan::MatchFirst, Plan::Plain, false)
        );
    }
}
