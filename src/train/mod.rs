//! Training: schedules, the optimiser, the learner's loops, and the precompute cache.

pub mod cache;
pub mod fused_head;
pub mod gemm;
pub mod image_source;
pub mod learner;
pub mod optim;
pub mod schedule;
pub mod team;
