//! Helpers shared by the router's integration tests.

use proptest::test_runner::{Config as ProptestConfig, RngSeed};

/// Proptest configuration of `cases` cases with an explicit seed, printed with the command that
/// replays it (`test` is the integration test's name), so that a failure can be replayed.
pub fn seeded_config(cases: u32, test: &str) -> ProptestConfig {
    let mut c = ProptestConfig::with_cases(cases);
    let seed = match c.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        }
    };
    eprintln!(
        "proptest seed {seed}; replay with \
         PROPTEST_RNG_SEED={seed} cargo test --workspace --test {test}"
    );
    c.rng_seed = RngSeed::Fixed(seed);
    c
}
