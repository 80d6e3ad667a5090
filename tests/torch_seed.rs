//! Dropout's masks follow `torch.manual_seed`, as in PyTorch.
//!
//! This is its own test binary, so its own process: the check seeds libtorch's global
//! generator and draws from it twice, and any test running beside it in the same process
//! (the crate's unit tests build models and draw dropout masks in parallel) would take draws
//! in between and change the second mask.

use fastai_native::models::head::dropout;
use tch::{Device, Kind, Tensor};

#[test]
fn dropout_follows_torch_manual_seed() {
    let x = Tensor::ones([64, 1024], (Kind::Float, Device::Cpu));
    tch::manual_seed(3);
    let a = dropout(&x, 0.5, true);
    let b = dropout(&x, 0.5, true);
    tch::manual_seed(3);
    let c = dropout(&x, 0.5, true);
    assert!(a.equal(&c), "same seed, same mask");
    assert!(!a.equal(&b), "consecutive masks differ");
}
