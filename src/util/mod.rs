//! Small pieces every layer uses.

pub mod rng;
