//! Training (fastai.learner, fastai.sgdr): schedules, the optimisers, the fit and predict loops,
//! the batch sources they read, and `precompute` (the activation cache's one entry point).
//! `fused_head` is a private CPU speed path for the precomputed head; nothing outside `train`
//! depends on it.

pub mod batches;
pub mod distributed;
pub mod fused_head;
pub mod learner;
pub mod optim;
pub mod precompute;
pub mod rows;
pub mod schedule;
