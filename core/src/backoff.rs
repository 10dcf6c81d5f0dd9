//! Retry delays with exponential growth and jitter, shared by the
//! outbox senders (CDN purges, webhooks).

use rand::Rng;
use std::time::Duration;

/// The delay before retry number `failures` (1 for the first):
/// `min(base · 2^(failures−1), max)`, ±25 % so replicas and rows spread
/// (never above `max`).
pub fn jittered(failures: u32, base: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    raw.mul_f64(rand::rng().random_range(0.75..1.25)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_jittered_and_capped() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let first = jittered(1, base, max);
            assert!(first >= Duration::from_millis(750) && first <= Duration::from_millis(1250));
            let fourth = jittered(4, base, max);
            assert!(fourth >= Duration::from_secs(6) && fourth <= Duration::from_secs(10));
            assert!(jittered(40, base, max) <= max);
            assert!(jittered(40, base, max) >= max.mul_f64(0.75));
            seen.insert(first);
        }
        assert!(seen.len() > 1, "no jitter");
    }
}
