//! Seeded randomness. Everything random in the crate (initialisation, dropout, subnet sampling,
//! batching) is derived from explicit seeds so that runs are reproducible.

use rand::SeedableRng;

/// The crate's seeded generator (ChaCha8: fast, portable, stable across platforms).
pub type Rng = rand_chacha::ChaCha8Rng;

pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// A counter-based 64-bit hash of (seed, counter) (SplitMix64's finaliser over a mixed input).
/// Stateless, so a GPU thread can compute element i's random bits without any shared state.
#[inline(always)]
pub fn hash64(seed: u64, counter: u64) -> u64 {
    let mut z = seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
