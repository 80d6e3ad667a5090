//! Small pieces every layer uses.

pub mod cpu;
pub mod rng;
