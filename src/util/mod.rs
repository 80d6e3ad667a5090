//! Small pieces every layer uses: the hash of cache keys, the CPU-feature probe, seeded random
//! streams.

pub mod cpu;
pub mod hash;
pub mod rng;
