//! Training: schedules, the optimiser, the learner's loops, and the precompute cache.

pub mod cache;
pub mod image_source;
pub mod learner;
pub mod schedule;
pub mod sgd;
