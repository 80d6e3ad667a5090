//! The fit session of `train::learner::Learner`, checked from outside the crate: the steps it
//! takes (SGD with momentum and weight decay, Adam, gradient clipping, over precomputed rows
//! and over images through a whole ResNet), the learning rates its schedules record, what
//! freezing keeps still, how a batch callback stops or fails an epoch, and snapshot/restore
//! and predict.
//!
//! Every expected value comes from a reference written here with plain tch tensor ops and
//! autograd, on copies of the learner's initial tensors: the head and the ResNet forward
//! passes, the optimisers, gradient clipping and the schedules are written out again, never
//! taken from the library (BatchNorm, the loss and LogSoftmax as formulas too, except in the
//! two tests that say why they use libtorch's kernels for them). Dropout is off (`ps = 0`)
//! so that both sides see the same network.

mod common;
use common::TempDir;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use fastai_native::data::dataset::{Dataset, Targets};
use fastai_native::data::loader::{thread_pool, DataLoader, LoaderConfig};
use fastai_native::models::{ConvNet, HeadChoice, Output};
use fastai_native::train::learner::{FitConfig, Learner, TensorSet};
use fastai_native::train::optim::Algo;
use fastai_native::train::schedule::Schedule;
use fastai_native::transforms::{Border, CropKind, Pipeline, PipelineSpec};
use fastai_native::util::rng::epoch_order;
use fastai_native::Error;
use tch::{Device, Kind, Tensor};

// ---------------------------------------------------------------------------------------------
// Models and data

/// Classes of every test's data.
const C: i64 = 3;
/// Width of the precomputed rows: resnet18 cut after conv1 + bn1 (64 channels, concat-pooled).
const NF: i64 = 128;
/// Hidden units of the small head (a multiple of 16 and NF of 32, so the hand-written CPU head
/// step can take it as well as autograd).
const NH: i64 = 32;
/// Precomputed rows: 3 batches of 8.
const ROWS: i64 = 24;
const BS: usize = 8;
const SEED: u64 = 7;
const IMG: u32 = 32;

/// fastai's head on a resnet18 cut to its first two children, with a hidden layer of NH and
/// no dropout: the head key numbering starts at 4 (cut 2, then pool and flatten).
fn head_learner() -> Learner {
    let net = ConvNet::new(
        "resnet18",
        C,
        Output::LogSoftmax,
        None,
        6,
        HeadChoice::Fastai {
            ps: Some(vec![0.0]),
            xtra_fc: Some(vec![NH]),
        },
    )
    .expect("a resnet18 cut after bn1");
    assert_eq!((net.nf, net.head_start), (NF, 4));
    Learner::new(net, Device::Cpu)
}

/// Rows with a spread of values (not standardised, so the first BatchNorm has work to do) and
/// labels in 0..C.
fn rows(n: i64, shuffle: bool) -> TensorSet {
    let x = Tensor::randn([n, NF], (Kind::Float, Device::Cpu)) * 1.5 + 0.3;
    let y = Tensor::from_slice(&(0..n).map(|i| (i * 7 + i / 5) % C).collect::<Vec<i64>>());
    TensorSet {
        x,
        y,
        bs: BS,
        shuffle,
        seed: SEED,
    }
}

/// Where the head's keys start in a native network's flat numbering.
fn head_start(l: &Learner) -> usize {
    l.net.conv().map_or(0, |n| n.head_start)
}

fn config(lrs: [f64; 3], wds: [f64; 3], algo: Algo, precompute: bool) -> FitConfig {
    FitConfig {
        lrs: lrs.to_vec(),
        wds: wds.to_vec(),
        schedule: Schedule::Constant,
        precompute,
        stop_on_divergence: false,
        fused_head: false,
        algo,
        clip: None,
        grad_sync: None,
    }
}

/// One test of this file at a time: they share libtorch's global thread pool and random
/// generator, and the resnet test's first-step comparison with the formulas is sensitive to
/// round-off (see that test).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked while holding the lock has already failed; the next may run.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const SGD: Algo = Algo::Sgd { momentum: 0.9 };

/// `n` PNG images of 36x34 pixels, each its own pattern, labelled i % C; a loader of batch
/// size 4 that centre-crops them to 32 px (no random step, so every pass gives the same
/// pixels), shuffled with SEED.
fn image_loader(dir: &Path, n: usize) -> DataLoader {
    let names: Vec<String> = (0..n)
        .map(|i| {
            let name = format!("img{i:02}.png");
            let img = image::RgbImage::from_fn(IMG + 4, IMG + 2, |x, y| {
                let v =
                    |k: u32| ((x * (3 + k) + y * (5 + 2 * k) + i as u32 * 41 + k * 60) % 256) as u8;
                image::Rgb([v(0), v(1), v(2)])
            });
            img.save(dir.join(&name)).expect("write test image");
            name
        })
        .collect();
    let labels = Targets::Class((0..n as i64).map(|i| i % C).collect());
    let ds = Arc::new(Dataset::from_files(dir.to_path_buf(), names, labels).expect("dataset"));
    let spec = PipelineSpec {
        sz: IMG as usize,
        scale: None,
        pad: 0,
        pad_border: Border::Reflect,
        augs: vec![],
        crop: CropKind::Center,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    let pipeline = Arc::new(Pipeline::new(spec).expect("a valid pipeline"));
    let cfg = LoaderConfig {
        batch_size: 8,
        shuffle: true,
        seed: SEED,
        ..LoaderConfig::default()
    };
    DataLoader::new(ds, pipeline, cfg, thread_pool(1).expect("pool")).expect("loader")
}

/// The (x, y) batches of one epoch of `dl`, as tensors.
fn image_batches(dl: &DataLoader, epoch: u64) -> Vec<(Tensor, Tensor)> {
    dl.iter(epoch)
        .map(|b| {
            let b = b.expect("batch");
            let (n, sz) = (b.n as i64, b.sz as i64);
            let x = Tensor::from_slice(&b.x).view([n, 3, sz, sz]);
            let Targets::Class(y) = &b.y else {
                panic!("class labels")
            };
            (x, Tensor::from_slice(y))
        })
        .collect()
}

/// A resnet18 with fastai's default head (512 hidden units), no dropout.
fn resnet_learner() -> Learner {
    let net = ConvNet::new(
        "resnet18",
        C,
        Output::LogSoftmax,
        None,
        0,
        HeadChoice::Fastai {
            ps: Some(vec![0.0]),
            xtra_fc: None,
        },
    )
    .expect("resnet18");
    assert_eq!(net.head_start, 10);
    Learner::new(net, Device::Cpu)
}

// ---------------------------------------------------------------------------------------------
// The reference

/// The key's child index in fastai 0.7's flat numbering (`6.0.conv1.weight` -> 6).
fn child(key: &str) -> usize {
    key.split('.')
        .next()
        .and_then(|c| c.parse().ok())
        .expect("a numbered key")
}

/// fastai's layer groups for a ResNet: children before layer3 (index 6) are group 0, layer3
/// and layer4 group 1, the head (from `head_start`) group 2.
fn group_of(key: &str, head_start: usize) -> usize {
    match child(key) {
        c if c >= head_start => 2,
        c if c >= 6 => 1,
        _ => 0,
    }
}

fn is_buffer(key: &str) -> bool {
    key.ends_with("running_mean") || key.ends_with("running_var")
}

/// Copies of a learner's tensors, stepped by hand.
struct Reference {
    w: HashMap<String, Tensor>,
    head_start: usize,
    /// Compute BatchNorm, Linear and LogSoftmax with libtorch's kernels rather than the
    /// formulas (see the ResNet test for why).
    kernels: bool,
    /// SGD's momentum buffers / Adam's first moments, and Adam's second moments.
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
    adam_steps: i32,
    /// Raw loss of every step so far.
    losses: Vec<f64>,
}

impl Reference {
    fn of(l: &Learner) -> Reference {
        let w = l
            .net
            .store()
            .entries
            .iter()
            .map(|e| {
                let t = e.tensor.detach().copy();
                let t = if is_buffer(&e.key) {
                    t
                } else {
                    t.set_requires_grad(true)
                };
                (e.key.clone(), t)
            })
            .collect();
        Reference {
            w,
            head_start: head_start(&l),
            kernels: false,
            m: HashMap::new(),
            v: HashMap::new(),
            adam_steps: 0,
            losses: Vec::new(),
        }
    }

    fn t(&self, key: &str) -> &Tensor {
        self.w.get(key).unwrap_or_else(|| panic!("no tensor {key}"))
    }

    /// BatchNorm `pre` over dims 0 (and 2, 3 for images). Training: batch mean and biased
    /// variance normalise, the running estimates move by 0.1 towards the batch mean and the
    /// unbiased variance. Eval: the running estimates normalise.
    fn bn(&self, x: &Tensor, pre: &str, train: bool) -> Tensor {
        let c = x.size()[1];
        let (dims, shape): (&[i64], Vec<i64>) = if x.dim() == 2 {
            (&[0], vec![1, c])
        } else {
            (&[0, 2, 3], vec![1, c, 1, 1])
        };
        let p = |name: &str| self.t(&format!("{pre}.{name}")).view(shape.as_slice());
        if self.kernels {
            let t = |name: &str| Some(self.t(&format!("{pre}.{name}")));
            let (w, b, rm, rv) = (t("weight"), t("bias"), t("running_mean"), t("running_var"));
            return x.batch_norm(w, b, rm, rv, train, 0.1, 1e-5, false);
        }
        let (mean, var) = if train {
            let mean = x.mean_dim(dims, true, Kind::Float);
            let var = (x - &mean).square().mean_dim(dims, true, Kind::Float);
            let n = (x.numel() as i64 / c) as f64;
            tch::no_grad(|| {
                for (name, batch) in [
                    ("running_mean", mean.detach()),
                    ("running_var", var.detach() * (n / (n - 1.0))),
                ] {
                    let r = self.t(&format!("{pre}.{name}"));
                    let new = r * 0.9 + batch.view([c]) * 0.1;
                    r.shallow_clone().copy_(&new);
                }
            });
            (mean, var)
        } else {
            (p("running_mean"), p("running_var"))
        };
        (x - mean) / (var + 1e-5).sqrt() * p("weight") + p("bias")
    }

    fn linear(&self, x: &Tensor, pre: &str) -> Tensor {
        if self.kernels {
            let bias = self.t(&format!("{pre}.bias"));
            return x.linear(self.t(&format!("{pre}.weight")), Some(bias));
        }
        x.matmul(&self.t(&format!("{pre}.weight")).tr()) + self.t(&format!("{pre}.bias"))
    }

    /// fastai's head with one hidden layer and no dropout, from pooled features to
    /// log-probabilities: BN, Linear, ReLU, BN, Linear, LogSoftmax.
    fn head(&self, x: &Tensor, train: bool) -> Tensor {
        let k = self.head_start;
        let h = self.linear(&self.bn(x, &k.to_string(), train), &(k + 1).to_string());
        let h = h.relu();
        let z = self.linear(
            &self.bn(&h, &(k + 3).to_string(), train),
            &(k + 4).to_string(),
        );
        if self.kernels {
            return z.log_softmax(1, Kind::Float);
        }
        &z - z.logsumexp([1], true)
    }

    fn conv(&self, x: &Tensor, key: &str, stride: i64, padding: i64) -> Tensor {
        x.conv2d(
            self.t(&format!("{key}.weight")),
            None::<Tensor>,
            [stride, stride],
            [padding, padding],
            [1, 1],
            1,
        )
    }

    /// torchvision's resnet18 body, then concat pooling (max, then mean) and the head.
    fn resnet18(&self, x: &Tensor, train: bool) -> Tensor {
        let x = self.bn(&self.conv(x, "0", 2, 3), "1", train).relu();
        let mut x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for layer in 0..4 {
            for block in 0..2 {
                let pre = format!("{}.{block}", 4 + layer);
                let stride = if layer > 0 && block == 0 { 2 } else { 1 };
                let y = self.conv(&x, &format!("{pre}.conv1"), stride, 1);
                let y = self.bn(&y, &format!("{pre}.bn1"), train).relu();
                let y = self.conv(&y, &format!("{pre}.conv2"), 1, 1);
                let y = self.bn(&y, &format!("{pre}.bn2"), train);
                let shortcut = if self.w.contains_key(&format!("{pre}.downsample.0.weight")) {
                    let s = self.conv(&x, &format!("{pre}.downsample.0"), stride, 0);
                    self.bn(&s, &format!("{pre}.downsample.1"), train)
                } else {
                    x.shallow_clone()
                };
                x = (y + shortcut).relu();
            }
        }
        let pooled = if self.kernels {
            let (max, _) = x.adaptive_max_pool2d([1, 1]);
            Tensor::cat(&[max, x.adaptive_avg_pool2d([1, 1])], 1).flatten(1, -1)
        } else {
            let mean = x.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
            Tensor::cat(&[x.amax([2, 3], false), mean], 1)
        };
        self.head(&pooled, train)
    }

    /// Mean negative log-likelihood of the labels.
    fn nll(&self, logp: &Tensor, y: &Tensor) -> Tensor {
        if self.kernels {
            return logp.nll_loss(y);
        }
        -logp.gather(1, &y.unsqueeze(1), false).mean(Kind::Float)
    }

    /// The parameters the optimiser steps: those of the `trainable` groups, sorted by key.
    fn params(&self, trainable: [bool; 3]) -> Vec<(String, usize)> {
        let mut keys: Vec<(String, usize)> = self
            .w
            .keys()
            .filter(|k| !is_buffer(k))
            .map(|k| (k.clone(), group_of(k, self.head_start)))
            .filter(|(_, g)| trainable[*g])
            .collect();
        keys.sort();
        keys
    }

    /// Backward from `loss`, optional clipping as torch.nn.utils.clip_grad_norm_, one step of
    /// `algo` on the trainable parameters, gradients cleared. Returns the gradient norm.
    fn step(
        &mut self,
        loss: Tensor,
        trainable: [bool; 3],
        lrs: [f64; 3],
        wds: [f64; 3],
        algo: Algo,
        clip: Option<f64>,
    ) -> f64 {
        self.losses.push(loss.double_value(&[]));
        loss.backward();
        let params = self.params(trainable);
        let grads: Vec<Tensor> = params.iter().map(|(k, _)| self.t(k).grad()).collect();
        let norm = grads
            .iter()
            .map(|g| {
                g.to_kind(Kind::Double)
                    .square()
                    .sum(Kind::Double)
                    .double_value(&[])
            })
            .sum::<f64>()
            .sqrt();
        let scale = clip.map_or(1.0, |max| (max / (norm + 1e-6)).min(1.0));
        if let Algo::Adam { .. } = algo {
            self.adam_steps += 1;
        }
        tch::no_grad(|| {
            for ((key, group), g) in params.iter().zip(grads) {
                let p = self.t(key).shallow_clone();
                let (lr, wd) = (lrs[*group], wds[*group]);
                let d = g * scale + &p * wd;
                let update = match algo {
                    Algo::Sgd { momentum } => {
                        let v = match self.m.get(key) {
                            None => d,
                            Some(v) => v * momentum + d,
                        };
                        self.m.insert(key.clone(), v.shallow_clone());
                        v * lr
                    }
                    Algo::Adam { beta1, beta2, eps } => {
                        let zeros = || p.zeros_like();
                        let m = self.m.get(key).map_or_else(zeros, |m| m.shallow_clone());
                        let v = self.v.get(key).map_or_else(zeros, |v| v.shallow_clone());
                        let m = m * beta1 + &d * (1.0 - beta1);
                        let v = v * beta2 + d.square() * (1.0 - beta2);
                        let t = self.adam_steps;
                        let m_hat = &m / (1.0 - beta1.powi(t));
                        let v_hat = &v / (1.0 - beta2.powi(t));
                        self.m.insert(key.clone(), m);
                        self.v.insert(key.clone(), v);
                        m_hat / (v_hat.sqrt() + eps) * lr
                    }
                };
                let _ = p.shallow_clone().f_sub_(&update).expect("step");
                let _ = p.grad().zero_();
            }
        });
        norm
    }

    /// The smoothed loss after every step: debiased moving average, beta 0.98.
    fn smoothed(&self) -> Vec<f64> {
        let mut avg = 0.0;
        (1..)
            .zip(&self.losses)
            .map(|(j, l)| {
                avg = 0.98 * avg + 0.02 * l;
                avg / (1.0 - 0.98f64.powi(j))
            })
            .collect()
    }
}

/// A copy of every tensor of the learner, by key.
fn state(l: &Learner) -> HashMap<String, Tensor> {
    l.net
        .store()
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.tensor.detach().copy()))
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Every tensor of the learner whose key `select` picks is within `tol` of the reference's;
/// returns how many were compared.
fn assert_close(l: &Learner, r: &Reference, tol: f64, select: impl Fn(&str) -> bool) -> usize {
    let mut n = 0;
    for e in l.net.store().entries.iter().filter(|e| select(&e.key)) {
        let d = max_diff(&e.tensor.detach(), r.t(&e.key));
        assert!(
            d <= tol,
            "{}: differs from the reference by {d:e} (tolerance {tol:e})",
            e.key
        );
        n += 1;
    }
    n
}

fn no_callback() -> impl FnMut(usize, f64) -> fastai_native::Result<bool> {
    |_, _| Ok(false)
}

/// What the reference's optimiser steps with.
#[derive(Clone, Copy)]
struct Hyper {
    lrs: [f64; 3],
    wds: [f64; 3],
    algo: Algo,
    clip: Option<f64>,
}

/// The reference's steps over one epoch of `rows`, in `epoch_order`, through the head.
fn reference_epoch(
    r: &mut Reference,
    rows: &TensorSet,
    epoch: u64,
    steps: usize,
    h: Hyper,
) -> Vec<f64> {
    let order: Vec<i64> = epoch_order(ROWS as usize, SEED, epoch)
        .into_iter()
        .map(|i| i as i64)
        .collect();
    let mut norms = Vec::new();
    for idx in order.chunks(BS).take(steps) {
        let idx = Tensor::from_slice(idx);
        let logp = r.head(&rows.x.index_select(0, &idx), true);
        let loss = r.nll(&logp, &rows.y.index_select(0, &idx));
        norms.push(r.step(loss, [false, false, true], h.lrs, h.wds, h.algo, h.clip));
    }
    norms
}

fn is_head(key: &str) -> bool {
    child(key) >= 4
}

// ---------------------------------------------------------------------------------------------
// 1. The steps

/// Three SGD steps (momentum 0.9, weight decay) of the head on precomputed rows, through
/// autograd and through the hand-written CPU head step, equal the reference's within 1e-5:
/// weights, BatchNorm running statistics and the smoothed losses of the record. The body
/// does not move.
#[test]
fn sgd_on_precomputed_rows_matches_a_hand_written_loop() {
    let _serial = serial();
    for fused_head in [false, true] {
        let mut l = head_learner();
        let data = rows(ROWS, true);
        let mut r = Reference::of(&l);
        let before = state(&l);
        let (lrs, wds) = ([1e-3, 1e-3, 0.05], [0.0, 0.0, 0.01]);
        l.begin_fit(FitConfig {
            fused_head,
            ..config(lrs, wds, SGD, true)
        })
        .unwrap();
        let res = l.train_epoch(&data, 0, &mut no_callback()).expect("epoch");
        let record = l.end_fit();
        reference_epoch(
            &mut r,
            &data,
            0,
            3,
            Hyper {
                lrs,
                wds,
                algo: SGD,
                clip: None,
            },
        );

        assert_eq!(
            assert_close(&l, &r, 1e-5, is_head),
            12,
            "fused_head={fused_head}"
        );
        let want = r.smoothed();
        assert_eq!(record.losses.len(), 3);
        for (got, want) in record.losses.iter().zip(&want) {
            assert!((got - want).abs() < 1e-5, "smoothed loss {got} vs {want}");
        }
        assert!(!res.stopped && (res.trn_loss - want[2]).abs() < 1e-5);
        // The steps were not vanishing, and only the head took them.
        let moved = max_diff(
            &l.net.store().get("5.weight").unwrap().tensor.detach(),
            &before["5.weight"],
        );
        assert!(moved > 1e-3, "W1 moved by {moved}");
        for e in l.net.store().entries.iter().filter(|e| !is_head(&e.key)) {
            assert!(e.tensor.equal(&before[&e.key]), "{} moved", e.key);
        }
    }
}

/// The same for Adam (L2 weight decay in the gradient, bias correction), written with the
/// textbook formula. Adam divides each gradient element by its own running magnitude, so an
/// element whose gradient is a sum that nearly cancels takes a step set by round-off: with
/// the forward formulas that showed up as differences up to 2e-5 in a few runs of forty.
/// So this reference runs the head through libtorch's kernels (the formulas are checked by
/// the SGD test) and what is compared is Adam itself (measured: at most 6e-7).
#[test]
fn adam_on_precomputed_rows_matches_a_hand_written_loop() {
    let _serial = serial();
    let mut l = head_learner();
    let data = rows(ROWS, true);
    let mut r = Reference::of(&l);
    r.kernels = true;
    let adam = Algo::Adam {
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
    };
    let before = state(&l);
    let (lrs, wds) = ([0.0, 0.0, 0.01], [0.0, 0.0, 0.01]);
    // fused_head is allowed but must not apply (it does SGD only).
    l.begin_fit(FitConfig {
        fused_head: true,
        ..config(lrs, wds, adam, true)
    })
    .unwrap();
    l.train_epoch(&data, 0, &mut no_callback()).expect("epoch");
    l.end_fit();
    reference_epoch(
        &mut r,
        &data,
        0,
        3,
        Hyper {
            lrs,
            wds,
            algo: adam,
            clip: None,
        },
    );
    assert_eq!(assert_close(&l, &r, 1e-5, is_head), 12);
    // Adam's first steps move every element by about lr.
    let moved = max_diff(
        &l.net.store().get("8.weight").unwrap().tensor.detach(),
        &before["8.weight"],
    );
    assert!(moved > 0.01, "W2 moved by {moved}");
}

/// SGD through the whole resnet18 on 32-px images (random weights, `freeze_to(0)`: every
/// group trainable with its own learning rate and weight decay, every BatchNorm on batch
/// statistics): an epoch stopped after its first step, then a whole epoch (momentum carried
/// over), equal the reference's four steps; predict afterwards equals the reference's
/// eval-mode forward.
///
/// Why this reference computes BatchNorm, Linear, LogSoftmax, NLL and the pools with
/// libtorch's kernels rather than with the formulas the head tests use: with random weights
/// and batch statistics over 8 images the trajectory is chaotic. Measured: perturbing the
/// initial weights by 1e-7 (relative) changes the third step's loss by 1-4 %, so two sums in
/// different orders part ways after a step or two, whatever the tolerance. With the same
/// kernels both sides round alike (identical in practice), and what is compared is what the
/// library adds: the network's wiring, the layer groups, the BatchNorm modes and the
/// optimiser. The formulas are still checked here, on the first step only, where round-off
/// has not been amplified much yet: per tensor, the step differs from the formula reference's
/// by at most 5 % of its L2 norm (measured over 23 runs: at most 2.2e-4 in most, up to 1.3e-2
/// in a few, from ReLU units within round-off of zero and divisions by small batch variances
/// over 8 random images). A wrong learning rate, group or gradient is off by 50 % or more.
#[test]
fn sgd_on_images_through_resnet18_matches_a_hand_written_loop() {
    let _serial = serial();
    let dir = TempDir::new("fit", "resnet");
    let dl = image_loader(dir.path(), 24);
    let mut l = resnet_learner();
    l.freeze_to(0);
    let mut formulas = Reference::of(&l);
    let mut r = Reference::of(&l);
    r.kernels = true;
    let before = state(&l);
    let (lrs, wds) = ([1e-3, 2e-3, 5e-3], [1e-2, 1e-2, 1e-1]);
    let all = [true; 3];

    l.begin_fit(config(lrs, wds, SGD, false)).unwrap();
    let stopped = l
        .train_epoch(&dl, 0, &mut |_, _| Ok(true))
        .expect("epoch 0");
    assert!(stopped.stopped);
    let (x, y) = &image_batches(&dl, 0)[0];
    let loss = formulas.nll(&formulas.resnet18(x, true), y);
    formulas.step(loss, all, lrs, wds, SGD, None);
    for e in l.net.store().entries.iter().filter(|e| !is_buffer(&e.key)) {
        let want = formulas.t(&e.key) - &before[&e.key];
        let got = e.tensor.detach() - &before[&e.key];
        let err = (&got - &want).norm().double_value(&[]) / want.norm().double_value(&[]);
        assert!(
            err < 5e-2,
            "{}: first step off the formulas' by {err:e} of its norm",
            e.key
        );
    }
    l.train_epoch(&dl, 1, &mut no_callback()).expect("epoch 1");
    let record = l.end_fit();
    assert_eq!(record.lrs, vec![lrs[2]; 4]);

    let epoch1 = image_batches(&dl, 1);
    assert_eq!(epoch1.len(), 3);
    for (x, y) in image_batches(&dl, 0).iter().take(1).chain(&epoch1) {
        let loss = r.nll(&r.resnet18(x, true), y);
        r.step(loss, all, lrs, wds, SGD, None);
    }
    assert_eq!(
        assert_close(&l, &r, 1e-5, |_| true),
        l.net.store().entries.len()
    );
    for (got, want) in record.losses.iter().zip(r.smoothed()) {
        assert!((got - want).abs() < 1e-5, "smoothed loss {got} vs {want}");
    }
    // Every group moved.
    for key in ["0.weight", "7.1.conv2.weight", "14.weight"] {
        let moved = max_diff(
            &l.net.store().get(key).unwrap().tensor.detach(),
            &before[key],
        );
        assert!(moved > 1e-4, "{key} moved by {moved}");
    }

    // Predict: dataset order, eval mode.
    let in_order = DataLoader::new(
        dl.dataset().clone(),
        Arc::new(dl.pipeline().expect("fused").clone()),
        LoaderConfig {
            batch_size: 8,
            ..LoaderConfig::default()
        },
        thread_pool(1).unwrap(),
    )
    .unwrap();
    let (out, ys, loss) = l
        .predict(&in_order, 0, false, true, &mut |_| Ok(()))
        .expect("predict");
    let (x, y): (Vec<Tensor>, Vec<Tensor>) = image_batches(&in_order, 0).into_iter().unzip();
    let y = Tensor::cat(&y, 0);
    let want = tch::no_grad(|| r.resnet18(&Tensor::cat(&x, 0), false));
    assert!(ys.equal(&y));
    // Batches of 8 fold each BatchNorm into its convolution: the same function, summed in
    // another order (seen 1.0e-5 apart; a wrong fold is off by far more).
    assert!(
        max_diff(&out, &want) < 1e-4,
        "predict: {}",
        max_diff(&out, &want)
    );
    let want_loss = r.nll(&want, &y).double_value(&[]);
    assert!((loss - want_loss).abs() < 1e-4, "{loss} vs {want_loss}");
}

// ---------------------------------------------------------------------------------------------
// 2. The schedules

/// fastai 0.7's `CosAnneal`, stepped as it was: called before every batch with the global
/// batch count `iteration`, it keeps the position in the cycle and grows the cycle by
/// `cycle_mult` when one ends; the first 1/20 of the (current) cycle's batches count run at
/// 1/100 of the rate.
struct CosAnneal {
    nb: usize,
    cycle_mult: usize,
    cycle_iter: usize,
}

impl CosAnneal {
    fn lr(&mut self, base: f64, iteration: usize) -> f64 {
        if (iteration as f64) < self.nb as f64 / 20.0 {
            self.cycle_iter += 1;
            return base / 100.0;
        }
        let cos_out = (std::f64::consts::PI * self.cycle_iter as f64 / self.nb as f64).cos() + 1.0;
        self.cycle_iter += 1;
        if self.cycle_iter == self.nb {
            self.cycle_iter = 0;
            self.nb *= self.cycle_mult;
        }
        base / 2.0 * cos_out
    }
}

/// The rates end_fit records (the last group's, one per batch) follow cosine annealing with
/// warm restarts over three cycles (cycle_len 2, cycle_mult 2: 22, 44 and 88 batches) with
/// the warm-up, and lr_find's exponential ramp start·(end/start)^(t/B).
#[test]
fn recorded_learning_rates_follow_the_schedules() {
    let _serial = serial();
    let mut l = head_learner();
    let data = TensorSet {
        bs: 4,
        ..rows(44, true)
    };
    let per_epoch = 11;
    let base = [1e-4, 1e-3, 0.02];
    l.begin_fit(FitConfig {
        schedule: Schedule::CosAnneal {
            first_cycle: 2 * per_epoch,
            cycle_mult: 2,
        },
        fused_head: true,
        ..config(base, [1e-4; 3], SGD, true)
    })
    .unwrap();
    for epoch in 0..14 {
        l.train_epoch(&data, epoch, &mut no_callback())
            .expect("epoch");
    }
    let record = l.end_fit();
    let mut sched = CosAnneal {
        nb: 2 * per_epoch,
        cycle_mult: 2,
        cycle_iter: 0,
    };
    let want: Vec<f64> = (0..14 * per_epoch).map(|t| sched.lr(base[2], t)).collect();
    assert_eq!(record.lrs.len(), want.len());
    for (t, (got, want)) in record.lrs.iter().zip(&want).enumerate() {
        assert!(
            (got - want).abs() < 1e-12,
            "batch {t}: lr {got}, formula {want}"
        );
    }
    // The warm-up (22/20: batches 0 and 1) and the restarts are there.
    assert_eq!(
        &want[..3].iter().map(|&v| v < 1e-3).collect::<Vec<_>>(),
        &[true, true, false]
    );
    assert_eq!((want[22], want[66]), (base[2], base[2]));
    assert!(record.moms.is_empty());

    // lr_find from 1e-4 to 1 over one epoch of 11 batches.
    let (start, end) = (1e-4, 1.0);
    l.begin_fit(FitConfig {
        schedule: Schedule::LrFind {
            ratio: end / start,
            n_batches: per_epoch,
            linear: false,
        },
        stop_on_divergence: true,
        ..config([start / 100.0, start / 10.0, start], [0.0; 3], SGD, true)
    })
    .unwrap();
    let res = l
        .train_epoch(&data, 0, &mut no_callback())
        .expect("lr_find");
    let record = l.end_fit();
    // The divergence rule may end it early; the rates it recorded are the ramp's.
    assert!(record.lrs.len() == per_epoch || res.stopped);
    assert!(record.lrs.len() >= 2);
    for (t, got) in record.lrs.iter().enumerate() {
        let want = start * (end / start).powf(t as f64 / per_epoch as f64);
        assert!(
            (got - want).abs() <= 1e-12 * want.max(1.0),
            "batch {t}: {got} vs {want}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Freezing

fn group_tensors(l: &Learner, group: usize) -> Vec<(String, Tensor, bool)> {
    l.net
        .store()
        .entries
        .iter()
        .filter(|e| group_of(&e.key, head_start(&l)) == group)
        .map(|e| (e.key.clone(), e.tensor.detach().copy(), is_buffer(&e.key)))
        .collect()
}

/// After `freeze_to(1)` an epoch leaves group 0 (parameters and BatchNorm statistics)
/// bit-identical and moves groups 1 and 2 (and group 1's running statistics); with
/// bn_freeze every BatchNorm keeps its running statistics while the parameters still train.
#[test]
fn frozen_groups_do_not_move() {
    let _serial = serial();
    let dir = TempDir::new("fit", "freeze");
    let dl = image_loader(dir.path(), 16);
    let mut l = resnet_learner();
    l.freeze_to(1);
    for bn_freeze in [false, true] {
        l.bn_freeze = bn_freeze;
        let before: Vec<_> = (0..3).map(|g| group_tensors(&l, g)).collect();
        l.begin_fit(config([0.01; 3], [1e-3; 3], SGD, false))
            .unwrap();
        l.train_epoch(&dl, 0, &mut no_callback()).expect("epoch");
        l.end_fit();
        for (g, tensors) in before.iter().enumerate() {
            assert!(!tensors.is_empty());
            for (key, was, buffer) in tensors {
                let now = &l.net.store().get(key).unwrap().tensor;
                let still = now.equal(was);
                match (g, buffer) {
                    (0, _) => assert!(still, "{key} of frozen group 0 changed"),
                    (_, true) if bn_freeze => {
                        assert!(still, "{key} changed under bn_freeze")
                    }
                    _ => assert!(!still, "{key} of trainable group {g} did not move"),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Batch callbacks

/// The error a callback returns, which must come back from `train_epoch` as itself.
#[derive(Debug, PartialEq)]
struct Interrupted(&'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted: {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// A callback returning true after batch 1 ends the epoch there (two steps taken and
/// recorded). A callback failing after batch 1 ends the epoch with its own error; the two
/// steps stay taken (through the hand-written head step too, whose W1 lives outside the model
/// during an epoch), and the next epoch of the same fit runs on from them with momentum.
#[test]
fn a_callback_stops_or_fails_the_epoch() {
    let _serial = serial();
    let (lrs, wds) = ([0.0, 0.0, 0.05], [0.0, 0.0, 0.01]);
    for fused_head in [false, true] {
        let cfg = || FitConfig {
            fused_head,
            ..config(lrs, wds, SGD, true)
        };
        let data = rows(ROWS, true);

        let mut l = head_learner();
        l.begin_fit(cfg()).unwrap();
        let mut calls = Vec::new();
        let res = l
            .train_epoch(&data, 0, &mut |b, _| {
                calls.push(b);
                Ok(b == 1)
            })
            .expect("epoch");
        assert!(res.stopped);
        assert_eq!(calls, vec![0, 1]);
        assert_eq!(l.end_fit().lrs.len(), 2);

        let mut l = head_learner();
        let mut r = Reference::of(&l);
        l.begin_fit(cfg()).unwrap();
        let err = l
            .train_epoch(&data, 0, &mut |b, _| {
                if b == 1 {
                    Err(Error::Callback(Box::new(Interrupted("at batch 1"))))
                } else {
                    Ok(false)
                }
            })
            .err()
            .expect("the callback's error");
        match err {
            Error::Callback(inner) => {
                assert_eq!(inner.downcast_ref(), Some(&Interrupted("at batch 1")))
            }
            other => panic!("expected the callback's error, got {other:?}"),
        }
        reference_epoch(
            &mut r,
            &data,
            0,
            2,
            Hyper {
                lrs,
                wds,
                algo: SGD,
                clip: None,
            },
        );
        assert_eq!(
            assert_close(&l, &r, 1e-5, is_head),
            12,
            "fused_head={fused_head}"
        );

        let res = l
            .train_epoch(&data, 1, &mut no_callback())
            .expect("next epoch");
        assert!(!res.stopped);
        assert_eq!(l.end_fit().lrs.len(), 5);
        reference_epoch(
            &mut r,
            &data,
            1,
            3,
            Hyper {
                lrs,
                wds,
                algo: SGD,
                clip: None,
            },
        );
        assert_eq!(
            assert_close(&l, &r, 1e-5, is_head),
            12,
            "fused_head={fused_head}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Gradient clipping

/// With clip, each step first scales the gradients as torch.nn.utils.clip_grad_norm_ does
/// (by max_norm / (norm + 1e-6) when that is below 1, the norm over every trainable
/// parameter together), also when the hand-written head step is allowed (it does not clip,
/// so it must stand aside).
#[test]
fn clip_scales_the_gradient_norm_as_torch_does() {
    let _serial = serial();
    let (lrs, wds) = ([0.0, 0.0, 0.05], [0.0, 0.0, 0.01]);
    let max_norm = 0.2;
    let mut l = head_learner();
    let data = rows(ROWS, true);
    let mut r = Reference::of(&l);
    l.begin_fit(FitConfig {
        fused_head: true,
        clip: Some(max_norm),
        ..config(lrs, wds, SGD, true)
    })
    .unwrap();
    l.train_epoch(&data, 0, &mut no_callback()).expect("epoch");
    l.end_fit();
    let norms = reference_epoch(
        &mut r,
        &data,
        0,
        3,
        Hyper {
            lrs,
            wds,
            algo: SGD,
            clip: Some(max_norm),
        },
    );
    // Every step was clipped (else this would test nothing).
    assert!(norms.iter().all(|&n| n > 2.0 * max_norm), "norms {norms:?}");
    assert_eq!(assert_close(&l, &r, 1e-5, is_head), 12);
}

// ---------------------------------------------------------------------------------------------
// 6. Snapshot, restore, predict

/// predict (eval mode) gives the same outputs every time, equal to the reference's eval
/// forward of the head on the same rows, with the mean NLL; a snapshot taken before an epoch
/// and restored after it gives back every tensor bit for bit (running statistics included),
/// and predict the outputs it gave before.
#[test]
fn snapshot_restore_and_predict() {
    let _serial = serial();
    let mut l = head_learner();
    let train = rows(ROWS, true);
    // An epoch first, so that the BatchNorm running statistics are not the initial ones.
    l.begin_fit(config([0.0, 0.0, 0.05], [0.0; 3], SGD, true))
        .unwrap();
    l.train_epoch(&train, 0, &mut no_callback()).expect("epoch");
    l.end_fit();

    let valid = TensorSet {
        bs: 5,
        ..rows(13, false)
    };
    let predict = |l: &Learner| {
        l.predict(&valid, 0, true, true, &mut |_| Ok(()))
            .expect("predict")
    };
    let (out, ys, loss) = predict(&l);
    let (out2, _, loss2) = predict(&l);
    assert!(out.equal(&out2) && loss == loss2);
    assert!(ys.equal(&valid.y));
    let r = Reference::of(&l);
    let want = tch::no_grad(|| r.head(&valid.x, false));
    assert!(
        max_diff(&out, &want) < 1e-5,
        "predict: {}",
        max_diff(&out, &want)
    );
    let want_loss = r.nll(&want, &valid.y).double_value(&[]);
    assert!((loss - want_loss).abs() < 1e-5, "{loss} vs {want_loss}");

    let copies = state(&l);
    let snap = l.snapshot();
    l.begin_fit(config([0.0, 0.0, 0.05], [0.0; 3], SGD, true))
        .unwrap();
    l.train_epoch(&train, 1, &mut no_callback()).expect("epoch");
    l.end_fit();
    let changed = l
        .net
        .store()
        .entries
        .iter()
        .filter(|e| !e.tensor.equal(&copies[&e.key]))
        .count();
    assert_eq!(changed, 12, "the epoch moved every head tensor");
    l.restore(&snap);
    for e in &l.net.store().entries {
        assert!(e.tensor.equal(&copies[&e.key]), "{} not restored", e.key);
    }
    let (out3, _, loss3) = predict(&l);
    assert!(out3.equal(&out) && loss3 == loss);
}
