//! A short-lived cache of what the index answered (candidates, cursor,
//! total, facets; suggestions), as Elasticsearch's request cache: the
//! head of a Zipf-distributed query stream asks the same first pages
//! many times a second.
//!
//! What it may not change, and why it cannot:
//!
//! - **Never shown stays never shown.** Only the index's answer is kept;
//!   the api checks every candidate of a cached answer against `videos`
//!   on every request ([`crate::visibility`]), so a video deleted,
//!   privated or unfinished after its page was cached is withheld as it
//!   would be from a lagging index.
//! - **Staleness is bounded by the TTL.** An entry lives `ttl` from the
//!   moment the index answered it (moka's time-to-live), whatever reads
//!   it meanwhile. A video that became searchable may be missing from a
//!   cached page for at most `ttl` after the indexer applied it (findable
//!   within index lag + `ttl`); titles, channel names and view counts
//!   come from the visibility lookup, so they are never stale; ranks,
//!   snippets, totals and facets may be up to `ttl` old.
//! - **Bounded.** At most `entries` answers (moka evicts the least
//!   likely to be read again); a `ttl` of 0 turns the cache off.

use prometheus::IntCounterVec;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long and how many answers are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long an answer is reused after the index gave it (0: never).
    pub ttl: Duration,
    /// Most answers kept.
    pub entries: u64,
}

impl CacheSettings {
    /// No cache.
    pub const OFF: CacheSettings = CacheSettings {
        ttl: Duration::ZERO,
        entries: 0,
    };
}

/// Answers of one route, by the request that produced them. Clones
/// share the answers.
pub struct AnswerCache<V> {
    /// `None` when off.
    cache: Option<moka::sync::Cache<String, Arc<V>>>,
    route: &'static str,
    /// `vodfarm_search_cache_requests_total{route, result}`.
    requests: IntCounterVec,
}

impl<V: Send + Sync + 'static> Clone for AnswerCache<V> {
    fn clone(&self) -> Self {
        AnswerCache {
            cache: self.cache.clone(),
            route: self.route,
            requests: self.requests.clone(),
        }
    }
}

impl<V: Send + Sync + 'static> std::fmt::Debug for AnswerCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCache")
            .field("route", &self.route)
            .field(
                "entries",
                &self.cache.as_ref().map(moka::sync::Cache::entry_count),
            )
            .finish()
    }
}

impl<V: Send + Sync + 'static> AnswerCache<V> {
    /// A cache of `route`'s answers counting its lookups in `requests`
    /// (labels `route`, `result`: `hit` or `miss`; none when off).
    pub fn new(
        settings: CacheSettings,
        route: &'static str,
        requests: IntCounterVec,
    ) -> AnswerCache<V> {
        let cache = (!settings.ttl.is_zero() && settings.entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.entries)
                .time_to_live(settings.ttl)
                .build()
        });
        for result in ["hit", "miss"] {
            requests.with_label_values(&[route, result]);
        }
        AnswerCache {
            cache,
            route,
            requests,
        }
    }

    /// The answer to `key`: a kept one younger than the TTL, or what
    /// `answer` gives (kept when it succeeds). Errors are not kept.
    pub async fn get_or_answer<E, F, Fut>(&self, key: String, answer: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let Some(cache) = &self.cache else {
            return answer().await.map(Arc::new);
        };
        if let Some(v) = cache.get(&key) {
            self.requests.with_label_values(&[self.route, "hit"]).inc();
            return Ok(v);
        }
        self.requests.with_label_values(&[self.route, "miss"]).inc();
        let v = Arc::new(answer().await?);
        cache.insert(key, v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn counter() -> IntCounterVec {
        IntCounterVec::new(Opts::new("t", "t"), &["route", "result"]).expect("counter")
    }

    async fn ask(c: &AnswerCache<u32>, key: &str, calls: &AtomicU32) -> u32 {
        let v = c
            .get_or_answer(key.to_owned(), || async {
                Ok::<u32, ()>(calls.fetch_add(1, Ordering::SeqCst))
            })
            .await
            .expect("answer");
        *v
    }

    #[tokio::test]
    async fn answers_are_reused_until_the_ttl_then_asked_again() {
        let requests = counter();
        let ttl = Duration::from_millis(300);
        let c = AnswerCache::new(
            CacheSettings { ttl, entries: 100 },
            "search",
            requests.clone(),
        );
        let calls = AtomicU32::new(0);
        let first = ask(&c, "a", &calls).await;
        let asked = std::time::Instant::now();
        let again = ask(&c, "a", &calls).await;
        // Only a read within the TTL can have been a hit (the machine
        // may be slow: then it is a miss, and a new answer).
        if asked.elapsed() < ttl {
            assert_eq!(again, first, "reused within the TTL");
        }
        assert_ne!(ask(&c, "b", &calls).await, first, "another key");
        // Past the TTL the index is asked again, however often it was read.
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        let later = ask(&c, "a", &calls).await;
        assert_ne!(later, first, "asked again after the TTL");
        let hits = requests.with_label_values(&["search", "hit"]).get();
        let misses = requests.with_label_values(&["search", "miss"]).get();
        assert_eq!(hits + misses, 4);
        assert!(misses >= 3, "b and the two answers of a: {misses}");
    }

    #[tokio::test]
    async fn errors_are_not_kept_and_off_keeps_nothing() {
        let c: AnswerCache<u32> = AnswerCache::new(
            CacheSettings {
                ttl: Duration::from_secs(60),
                entries: 10,
            },
            "search",
            counter(),
        );
        let failed = c
            .get_or_answer("k".into(), || async { Err::<u32, &str>("down") })
            .await;
        assert_eq!(failed.err(), Some("down"));
        let calls = AtomicU32::new(7);
        assert_eq!(ask(&c, "k", &calls).await, 7, "the error was not kept");

        let off: AnswerCache<u32> = AnswerCache::new(CacheSettings::OFF, "search", counter());
        let calls = AtomicU32::new(0);
        assert_eq!(ask(&off, "k", &calls).await, 0);
        assert_eq!(ask(&off, "k", &calls).await, 1, "asked every time");
    }

    #[tokio::test]
    async fn the_number_of_answers_is_bounded() {
        let c: AnswerCache<u32> = AnswerCache::new(
            CacheSettings {
                ttl: Duration::from_secs(60),
                entries: 8,
            },
            "suggest",
            counter(),
        );
        let calls = AtomicU32::new(0);
        for i in 0..100 {
            ask(&c, &format!("k{i}"), &calls).await;
        }
        let cache = c.cache.as_ref().expect("on");
        cache.run_pending_tasks();
        assert!(cache.entry_count() <= 8, "{}", cache.entry_count());
    }
}
