//! Randomness for backoff jitter, without a dependency: std's `RandomState` is seeded from the
//! OS once per thread and perturbed per instance, which is plenty to spread retries apart.

use std::hash::{BuildHasher, Hasher};

/// A uniform-ish number in `[0, 1)`.
pub(crate) fn unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
