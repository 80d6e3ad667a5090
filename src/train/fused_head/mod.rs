//! The training step of fastai's default head on precomputed activations, written out by
//! hand for the CPU: `BatchNorm1d(nf) -> Dropout(p1) -> Linear(nf, nh) -> ReLU ->
//! BatchNorm1d(nh) -> Dropout(p2) -> Linear(nh, c) -> LogSoftmax`, NLL loss, and SGD with
//! momentum and weight decay, in one pass per batch with no autograd graph.
//!
//! Why: with `precompute=True` (the lesson's first fits) this is all the training there is,
//! and through libtorch's autograd each batch spends as long in allocation, dispatch and
//! OpenMP hand-offs as in its matrix products. Here the products run on our own kernels
//! ([`gemm`]) split between the cores by hand, the SGD update of the big weight matrix
//! is folded into the product that computes its gradient, and everything else is a few
//! loops over the batch.
//!
//! The algebra that keeps it to two products of W1's size per batch: with BatchNorm 1's
//! normalised input x̂, dropout 1's mask m (0 or 1/(1 − p1)) and z = m·x̂, layer 1's input is
//! `a = γ1·z + β1·m` (per feature). So with the gradient G at layer 1's output,
//! `Q = Gᵀz` and `S = Gᵀm` give both W1's gradient `Gᵀa = γ1·Q + β1·S` and BatchNorm 1's
//! `∂γ1 = Σ_r W1∘Q`, `∂β1 = Σ_r W1∘S` (no product `G·W1` back to the input). G is zero
//! wherever the ReLU was off (about half of it), and `Q, S` skip those terms
//! ([`gemm::sparse_dual`]): the backward pass costs about as much as the forward one.
//!
//! How the work is split, for T threads (`torch.get_num_threads()`):
//! - phase 1, by input feature: gather the batch rows (asked for a step ahead: they are
//!   scattered over the whole activation array), BatchNorm 1 with batch statistics, dropout
//!   1; write `aᵀ`, `z`, `m` in the layouts the kernels read;
//! - phase 2, by hidden unit, in blocks that go to whichever thread is free: `h = a·W1ᵀ +
//!   b1`, ReLU, BatchNorm 2, dropout 2, and each block's share of the logits;
//! - main thread: log-softmax, NLL loss and its gradient;
//! - phase 4, by hidden unit: back through layer 2, BatchNorm 2 and the ReLU (stepping their
//!   parameters) to G's nonzero values, then `Q, S` in tiles of (part, feature panel)
//!   that go to whichever thread is free, whose epilogue steps W1 and collects BatchNorm
//!   1's gradients;
//! - main thread: the SGD steps of BatchNorm 1, W2 and b2.
//!
//! The thread owning hidden units `r0..r1` keeps those rows of W1 (and their momentum) in the
//! kernels' panel layout for the whole epoch; [`FusedHead::begin_epoch`] copies them in and
//! [`FusedHead::end_epoch`] writes them back, which the learner does on every exit (so a
//! batch callback that reads W1 mid-epoch sees its value at the start of the epoch).
//! Everything else is read and written in the model's tensors directly.
//!
//! Numerics: the same operations as PyTorch in float32 (BatchNorm's biased variance for
//! normalising and unbiased for the running estimate, torch.optim.SGD's order), the same
//! dropout masks as [`crate::models::head::dropout`] from the same seeds, and sums in
//! another order, so results equal the autograd path to float round-off.

mod gemm;
mod team;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use crate::models::head::{draw_seed, draw_seeds, DropoutMask, OneHidden};
use crate::{Error, Result};
use gemm::{w_index, zm_panel, AlignedBuf, Epilogue, SparseRows, BP, FP};
use team::Team;

/// Hidden units `r0..r1`: that share of W1 and everything computed per hidden unit. Per-unit
/// arrays are unit-major (`[q·n + i]` for unit r0 + q and batch row i).
struct RowPart {
    r0: usize,
    r1: usize,
    /// W1's rows r0..r1 in [`w_index`] layout, and their momentum.
    w1: AlignedBuf,
    v1: AlignedBuf,
    v_b1: Vec<f32>,
    v_g2: Vec<f32>,
    v_be2: Vec<f32>,
    /// rows × np: layer 1's output, then the ReLU's (its sign is the ReLU's gradient mask).
    ht: AlignedBuf,
    /// rows × n: BatchNorm 2's normalised input, dropout 2's mask, layer 2's input.
    xhat2: Vec<f32>,
    m2: Vec<f32>,
    d2: Vec<f32>,
    inv_std2: Vec<f32>,
    /// blocks × c × n: each phase-2 block's share of the logits, class-major.
    logits: Vec<f32>,
    /// Gᵀ, the gradient at layer 1's output (zero wherever the ReLU was off: about half).
    gt: SparseRows,
    /// nf each: this part's share of BatchNorm 1's γ and β gradients.
    sg: Vec<f32>,
    sb: Vec<f32>,
    /// c × rows: the gradient of W2's columns r0..r1.
    gw2: Vec<f32>,
}

pub struct FusedHead {
    /// The calling thread and threads − 1 helpers: member t does part t of every phase.
    team: Team,
    nf: usize,
    nh: usize,
    c: usize,
    t: OneHidden,
    /// Input features per thread (phase 1), whole panels of FP.
    cols: Vec<(usize, usize)>,
    /// Hidden units per thread (phases 2 and 4), multiples of [`HU`].
    row_ranges: Vec<(usize, usize)>,
    rows: Vec<Mutex<RowPart>>,
    /// Layer 1's input as aᵀ (nf × np) in [`gemm::at_index`] layout; z = m·x̂ and the mask m
    /// (n × nf) in [`gemm::zm_index`] layout.
    at: AlignedBuf,
    z: AlignedBuf,
    m: AlignedBuf,
    v_g1: Vec<f32>,
    v_be1: Vec<f32>,
    v_w2: Vec<f32>,
    v_b2: Vec<f32>,
    loaded: bool,
    /// The dropout seeds of the epoch's steps, drawn at its start; `next_seed` is the next.
    seeds: Vec<u64>,
    next_seed: usize,
}

/// Hidden units are split between the threads in multiples of this (even, because pairs of
/// units share dropout draws).
const HU: usize = 16;

/// Hidden units per block of phase 2 (even, for the paired dropout draws; a multiple of the
/// product's 3-row tiles).
const FB: usize = 48;

/// A mutable float32 view of a contiguous CPU float tensor.
///
/// # Safety
/// The tensor must be a contiguous float32 CPU tensor (checked in [`FusedHead::new`]), and no
/// other view of it may be used while the returned one lives.
unsafe fn view<'a>(t: &Tensor) -> &'a mut [f32] {
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel())
}

/// `n` split into `parts` contiguous ranges, each a multiple of `unit` except the last.
fn split(n: usize, parts: usize, unit: usize) -> Vec<(usize, usize)> {
    let units = n.div_ceil(unit);
    (0..parts)
        .map(|t| {
            (
                (units * t / parts * unit).min(n),
                (units * (t + 1) / parts * unit).min(n),
            )
        })
        .collect()
}

/// Splits `s` into consecutive pieces of the given lengths.
fn pieces<'a>(mut s: &'a mut [f32], lens: impl Iterator<Item = usize>) -> Vec<&'a mut [f32]> {
    lens.map(|l| {
        let (head, rest) = std::mem::take(&mut s).split_at_mut(l);
        s = rest;
        head
    })
    .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What phase 2 reads: the same for every block.
struct HiddenInput<'a> {
    /// Layer 1's input, aᵀ in [`gemm::at_index`] layout.
    at: &'a [f32],
    b1: &'a [f32],
    w2: &'a [f32],
    mask: &'a Option<DropoutMask>,
    n: usize,
    nf: usize,
    nh: usize,
    c: usize,
    eps: f32,
    momentum: f32,
}

/// Hidden units r.. (up to [`FB`], an even number) of one part in phase 2: their rows of W1
/// (inside the part's panel layout of `w_rows` rows), their rows of everything phase 2
/// writes, their BatchNorm 2 parameters and their share of the logits (c × n).
struct HiddenBlock<'a> {
    r: usize,
    w1: &'a [f32],
    w_rows: usize,
    ht: &'a mut [f32],
    xhat2: &'a mut [f32],
    m2: &'a mut [f32],
    d2: &'a mut [f32],
    inv_std2: &'a mut [f32],
    logits: &'a mut [f32],
    g: &'a mut [f32],
    be: &'a mut [f32],
    rm: &'a mut [f32],
    rv: &'a mut [f32],
}

impl HiddenBlock<'_> {
    /// `keep`: two buffers of n for dropout 2's mask (a pair of units shares its draws).
    #[inline(always)]
    fn run(&mut self, input: &HiddenInput, keep: &mut [Vec<f32>; 2]) {
        let HiddenInput {
            at,
            b1,
            w2,
            mask,
            n,
            nf,
            nh,
            c,
            eps,
            momentum,
        } = *input;
        let (r, units, np) = (self.r, self.inv_std2.len(), padded(n));
        gemm::product(units, self.w_rows, np, nf, self.w1, at, self.ht);
        for q0 in (0..units).step_by(2) {
            draw_column_pair(mask, nh, r + q0, keep);
            for (u, kq) in keep.iter().enumerate() {
                let q = q0 + u;
                let h = &mut self.ht[q * np..q * np + n];
                let bias = b1[r + q];
                h.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
                let (mean, inv_std) =
                    batch_stats(h, eps, momentum, &mut self.rm[q], &mut self.rv[q]);
                self.inv_std2[q] = inv_std;
                let (gq, bq) = (self.g[q], self.be[q]);
                let row = q * n..(q + 1) * n;
                let (xhat2, m2, d2) = (
                    &mut self.xhat2[row.clone()],
                    &mut self.m2[row.clone()],
                    &mut self.d2[row],
                );
                // Zipped (no index, so no bounds checks): vector code.
                let outs = xhat2.iter_mut().zip(m2.iter_mut()).zip(d2.iter_mut());
                for (((x2, m), d), (&h, &k)) in outs.zip(h.iter().zip(kq)) {
                    let xhat = (h - mean) * inv_std;
                    *x2 = xhat;
                    *m = k;
                    *d = (gq * xhat + bq) * k;
                }
                for k in 0..c {
                    let w = w2[k * nh + r + q];
                    self.logits[k * n..(k + 1) * n]
                        .iter_mut()
                        .zip(d2.iter())
                        .for_each(|(l, d)| *l += d * w);
                }
            }
        }
    }
}

/// What phase 1 reads: the same for every thread.
struct Bn1Input<'a> {
    /// The activations, row-major, nf wide; the batch is rows `idx`.
    x: &'a [f32],
    nf: usize,
    idx: &'a [usize],
    /// The rows of the following batch (fetched into cache a whole step ahead).
    next: &'a [usize],
    mask: &'a Option<DropoutMask>,
    eps: f32,
    momentum: f32,
}

/// One thread's input features in phase 1 (whole panels of FP from feature j0): its pieces
/// of aᵀ (one per panel of BP batch columns), of z and m, and of BatchNorm 1's parameters.
struct Bn1Part<'a> {
    j0: usize,
    at: Vec<&'a mut [f32]>,
    z: &'a mut [f32],
    m: &'a mut [f32],
    g: &'a [f32],
    be: &'a [f32],
    rm: &'a mut [f32],
    rv: &'a mut [f32],
}

impl Bn1Part<'_> {
    /// Panel by panel of FP features: the batch's rows of the panel (one cache line each,
    /// scattered over the activations) into a block of n × FP, the statistics of the FP
    /// features at once down the block, then z and m (whose panel has the block's shape)
    /// and aᵀ. Every loop runs across FP features, which the compiler makes vector code.
    #[inline(always)]
    fn run(&mut self, input: &Bn1Input) {
        let Bn1Input {
            x,
            nf,
            idx,
            next,
            mask,
            eps,
            momentum,
        } = *input;
        let n = idx.len();
        let mut block = vec![[0.0f32; FP]; n];
        let mut keep = [1.0f32; FP];
        for p in 0..self.g.len() / FP {
            let (f, c0) = (p * FP, self.j0 + p * FP);
            // This batch's rows of the next panel into L1 while this one is worked on: the
            // prefetch a step ahead brought them nearer, but the products since have pushed
            // many out of L2 again, and the gather below waited on them (a third of phase 1).
            if (p + 1) * FP < self.g.len() {
                for &r in idx {
                    prefetch_l1(&x[r * nf + c0 + FP..r * nf + c0 + 2 * FP]);
                }
            }
            let mut sum = [0.0f32; FP];
            for (row, &r) in block.iter_mut().zip(idx) {
                row.copy_from_slice(&x[r * nf + c0..r * nf + c0 + FP]);
                sum.iter_mut().zip(row.iter()).for_each(|(s, v)| *s += v);
            }
            let mean = sum.map(|s| s / n as f32);
            let mut sq = [0.0f32; FP];
            for row in &block {
                for q in 0..FP {
                    let d = row[q] - mean[q];
                    sq[q] += d * d;
                }
            }
            let mut scale = [0.0f32; FP];
            for q in 0..FP {
                scale[q] = running_update(
                    mean[q],
                    sq[q] / n as f32,
                    n,
                    eps,
                    momentum,
                    &mut self.rm[f + q],
                    &mut self.rv[f + q],
                );
            }
            let (g, be) = (&self.g[f..f + FP], &self.be[f..f + FP]);
            let panel = zm_panel(n, p);
            let (z, m) = (&mut self.z[panel.clone()], &mut self.m[panel]);
            for (i, row) in block.iter_mut().enumerate() {
                if let Some(mk) = mask {
                    mk.fill(i * nf + c0, &mut keep);
                }
                let (zi, mi) = (&mut z[i * FP..(i + 1) * FP], &mut m[i * FP..(i + 1) * FP]);
                for q in 0..FP {
                    let xhat = (row[q] - mean[q]) * scale[q];
                    zi[q] = xhat * keep[q];
                    mi[q] = keep[q];
                    // The block now holds a, for the transposition into aᵀ below.
                    row[q] = (g[q] * xhat + be[q]) * keep[q];
                }
            }
            put_transposed(&block, f, &mut self.at);
            // The next batch's rows of this panel, to be read at the next step's start: a
            // step ahead, so they arrive in time (the products' streaming moves them from L2
            // to the L3 cache, still much nearer than memory), and a panel at a time, so the
            // requests do not queue up behind each other.
            for &r in next {
                prefetch(&x[r * nf + c0..r * nf + c0 + FP]);
            }
        }
    }
}

/// Rows f..f+FP of aᵀ (one slice per panel of BP batch columns, [`gemm::at_index`] layout
/// within a part) from `block`, n batch rows × FP features: 8 × 8 squares transposed in
/// registers (written one float at a time, the stores at a stride of BP cost more than the
/// rest of phase 1).
#[inline(always)]
fn put_transposed(block: &[[f32; FP]], f: usize, at: &mut [&mut [f32]]) {
    #[cfg(target_arch = "x86_64")]
    let whole = block.len() / 8 * 8;
    #[cfg(target_arch = "x86_64")]
    for i0 in (0..whole).step_by(8) {
        let panel = &mut at[i0 / BP];
        for q0 in (0..FP).step_by(8) {
            let square: [[f32; 8]; 8] =
                std::array::from_fn(|r| std::array::from_fn(|c| block[i0 + r][q0 + c]));
            let t = transpose8(&square);
            for (c, col) in t.iter().enumerate() {
                let at = (f + q0 + c) * BP + i0 % BP;
                panel[at..at + 8].copy_from_slice(col);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let whole = 0;
    for (i, row) in block.iter().enumerate().skip(whole) {
        let panel = &mut at[i / BP];
        for (q, v) in row.iter().enumerate() {
            panel[(f + q) * BP + i % BP] = *v;
        }
    }
}

/// The transpose of an 8 × 8 square: unpack pairs, shuffle quads, swap 128-bit halves.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transpose8(m: &[[f32; 8]; 8]) -> [[f32; 8]; 8] {
    use std::arch::x86_64::*;
    let mut out = [[0.0f32; 8]; 8];
    // SAFETY: only called from code compiled for AVX2 (`vectorized`, on CPUs that have
    // it); every load and store is of a whole [f32; 8].
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|k| _mm256_loadu_ps(m[k].as_ptr()));
        let t = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        for k in 0..4 {
            _mm256_storeu_ps(
                out[k].as_mut_ptr(),
                _mm256_permute2f128_ps::<0x20>(u[k], u[k + 4]),
            );
            _mm256_storeu_ps(
                out[k + 4].as_mut_ptr(),
                _mm256_permute2f128_ps::<0x31>(u[k], u[k + 4]),
            );
        }
    }
    out
}

/// Runs `f` compiled for AVX2 and FMA, so that the step's element-wise loops become 8-wide
/// vector code (the crate itself is built for baseline x86-64). `f` is inlined into the
/// AVX2 function: closures called once always are. No float contraction happens (Rust never
/// fuses a multiply and an add by itself), so results do not change, only their speed.
#[inline(always)]
fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: a FusedHead exists only where `gemm::available()` (AVX2 and FMA present).
        unsafe { run(f) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    f()
}

impl FusedHead {
    /// The hand-written step for `head`, or None when it does not apply (parameters not
    /// contiguous float32 on the CPU, an input width that is not a multiple of 32 or a hidden
    /// width not a multiple of 16, or no AVX2/FMA).
    pub fn new(head: OneHidden, threads: usize) -> Result<Option<Self>> {
        if !gemm::available() {
            return Ok(None);
        }
        let plain =
            |t: &&Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous();
        let all_plain = [&head.bn1, &head.bn2]
            .iter()
            .flat_map(|b| [&b.weight, &b.bias, &b.running_mean, &b.running_var])
            .chain([&head.w1, &head.b1, &head.w2, &head.b2])
            .all(|t| plain(&t));
        if !all_plain {
            return Ok(None);
        }
        let (nh, nf) = match head.w1.size().as_slice() {
            &[nh, nf] => (nh as usize, nf as usize),
            _ => return Ok(None),
        };
        // Whole panels of features and hidden units (which also makes both even, as the
        // paired dropout draws need): true of every head fastai builds on our bodies.
        if nh % HU != 0 || nf % FP != 0 || nf == 0 {
            return Ok(None);
        }
        let c = head.w2.size()[0] as usize;
        // Each thread gets at least two panels of hidden units (below that the hand-off
        // between phases costs more than the work).
        let threads = threads.clamp(1, (nh / (2 * HU)).max(1));
        let team = Team::new(threads, "fastai-head").map_err(|e| {
            Error::internal(format!(
                "cannot start {threads} threads for the head step: {e}"
            ))
        })?;
        let row_ranges = split(nh, threads, HU);
        let rows = row_ranges
            .iter()
            .map(|&(r0, r1)| {
                let n = r1 - r0;
                Mutex::new(RowPart {
                    r0,
                    r1,
                    w1: AlignedBuf::zeroed(n * nf),
                    v1: AlignedBuf::zeroed(n * nf),
                    v_b1: vec![0.0; n],
                    v_g2: vec![0.0; n],
                    v_be2: vec![0.0; n],
                    ht: AlignedBuf::default(),
                    xhat2: Vec::new(),
                    m2: Vec::new(),
                    d2: Vec::new(),
                    inv_std2: vec![0.0; n],
                    logits: Vec::new(),
                    gt: SparseRows::default(),
                    sg: vec![0.0; nf],
                    sb: vec![0.0; nf],
                    gw2: vec![0.0; c * n],
                })
            })
            .collect();
        Ok(Some(FusedHead {
            team,
            nf,
            nh,
            c,
            cols: split(nf, threads, FP),
            row_ranges,
            rows,
            at: AlignedBuf::default(),
            z: AlignedBuf::default(),
            m: AlignedBuf::default(),
            v_g1: vec![0.0; nf],
            v_be1: vec![0.0; nf],
            v_w2: vec![0.0; c * nh],
            v_b2: vec![0.0; c],
            t: head,
            loaded: false,
            seeds: Vec::new(),
            next_seed: 0,
        }))
    }

    /// Width of the rows this step takes.
    pub fn nf(&self) -> usize {
        self.nf
    }

    /// Copies W1 from the model into the threads' panel layouts, and draws the dropout seeds
    /// of the epoch's `steps` steps from torch's generator in one call: the same values in
    /// the same order as the autograd path's one draw per dropout layer and step (layer 1,
    /// then layer 2), for one call instead of one per step. An epoch that stops early has
    /// taken its remaining steps' seeds too.
    pub fn begin_epoch(&mut self, steps: usize) {
        self.copy_w1(true);
        self.loaded = true;
        let per_step = [self.t.p1, self.t.p2].iter().filter(|&&p| p > 0.0).count();
        self.seeds = draw_seeds(steps * per_step);
        self.next_seed = 0;
    }

    /// The next dropout seed of the epoch (drawn now if the epoch has more steps than
    /// `begin_epoch` was told).
    fn seed(&mut self) -> u64 {
        let s = self.seeds.get(self.next_seed).copied();
        self.next_seed += 1;
        s.unwrap_or_else(draw_seed)
    }

    /// Writes the threads' rows of W1 back into the model. Safe to call more than once.
    pub fn end_epoch(&mut self) {
        if self.loaded {
            self.copy_w1(false);
            self.loaded = false;
        }
    }

    /// W1 (row-major in the model) to the threads' panel layouts (`into_parts`) or back.
    fn copy_w1(&mut self, into_parts: bool) {
        // SAFETY: checked contiguous float32 CPU in `new`; the step is not running (we hold
        // `&mut self`), so this is the only view.
        let w1 = unsafe { view(&self.t.w1) };
        let nf = self.nf;
        for part in &mut self.rows {
            let p = part.get_mut().unwrap_or_else(|e| e.into_inner());
            let rows = p.r1 - p.r0;
            // A panel's piece of a row is FP consecutive floats on both sides.
            for r in 0..rows {
                for j in (0..nf).step_by(FP) {
                    let (model, mine) = ((p.r0 + r) * nf + j, w_index(rows, r, j));
                    let (model, mine) = (model..model + FP, mine..mine + FP);
                    if into_parts {
                        p.w1[mine].copy_from_slice(&w1[model]);
                    } else {
                        w1[model].copy_from_slice(&p.w1[mine]);
                    }
                }
            }
        }
    }

    /// One SGD step on the batch of rows `idx` of `x` (row-major, nf wide) with labels `y`.
    /// `next`: the rows of the following batch, which the step asks the CPU to fetch into
    /// cache while it computes (the rows are scattered over a large array: read cold, they
    /// cost as much as a product). Returns the batch's mean NLL loss. Must run between
    /// `begin_epoch` and `end_epoch`.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        x: &[f32],
        y: &[i64],
        idx: &[usize],
        next: &[usize],
        lr: f64,
        wd: f64,
        mu: f64,
    ) -> Result<f64> {
        let (nf, nh, c) = (self.nf, self.nh, self.c);
        let n = idx.len();
        if n < 2 {
            return Err(Error::InvalidArgument(format!(
                "a training batch of {n} row cannot go through BatchNorm with batch statistics (expected more than 1 value per channel); change bs so that the last batch is not a single row"
            )));
        }
        if !self.loaded {
            return Err(Error::internal("head step outside an epoch"));
        }
        let labels: Vec<usize> = idx
            .iter()
            .map(|&i| {
                let label = y[i];
                usize::try_from(label)
                    .ok()
                    .filter(|&l| l < c)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "label {label} of row {i} is out of bounds for {c} classes"
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        // Masks in the order the autograd path draws them (layer 1, then layer 2).
        let (p1, p2) = (self.t.p1, self.t.p2);
        let mask1 = (p1 > 0.0).then(|| DropoutMask::new(self.seed(), p1));
        let mask2 = (p2 > 0.0).then(|| DropoutMask::new(self.seed(), p2));
        let (lr, wd, mu) = (lr as f32, wd as f32, mu as f32);

        // SAFETY: every tensor was checked contiguous float32 CPU in `new`; these views are
        // the only ones alive during the step, and the phases write disjoint ranges (split
        // by feature in phase 1, by hidden unit in phases 2 and 4; the main thread only
        // between phases).
        let (g1, be1, rm1, rv1) = unsafe {
            (
                view(&self.t.bn1.weight),
                view(&self.t.bn1.bias),
                view(&self.t.bn1.running_mean),
                view(&self.t.bn1.running_var),
            )
        };
        let (g2, be2, rm2, rv2) = unsafe {
            (
                view(&self.t.bn2.weight),
                view(&self.t.bn2.bias),
                view(&self.t.bn2.running_mean),
                view(&self.t.bn2.running_var),
            )
        };
        let (b1, w2, b2) = unsafe { (view(&self.t.b1), view(&self.t.w2), view(&self.t.b2)) };

        self.batchnorm1(x, idx, next, &mask1, g1, be1, rm1, rv1);
        self.forward_hidden(n, &mask2, b1, g2, be2, rm2, rv2, w2);

        // ---- main thread: log-softmax, NLL loss and its gradient (dl: c × n, class-major) ----
        let mut dl = vec![0.0f32; c * n];
        for (k, row) in dl.chunks_mut(n).enumerate() {
            row.fill(b2[k]);
        }
        for part in &self.rows {
            for block in lock(part).logits.chunks(c * n) {
                for (d, l) in dl.iter_mut().zip(block) {
                    *d += l;
                }
            }
        }
        let mut loss = 0.0f64;
        for (i, &label) in labels.iter().enumerate() {
            let max = (0..c)
                .map(|k| dl[k * n + i])
                .fold(f32::NEG_INFINITY, f32::max);
            let lse = max
                + (0..c)
                    .map(|k| (dl[k * n + i] - max).exp())
                    .sum::<f32>()
                    .ln();
            loss -= (dl[label * n + i] - lse) as f64;
            for k in 0..c {
                let v = &mut dl[k * n + i];
                *v = ((*v - lse).exp() - if k == label { 1.0 } else { 0.0 }) / n as f32;
            }
        }

        self.backward_hidden(n, &dl, b1, g2, be2, w2, g1, be1, (lr, wd, mu));

        // ---- main thread: BatchNorm 1's γ and β, W2 and b2 ----
        let parts: Vec<_> = self.rows.iter().map(lock).collect();
        for j in 0..nf {
            let sg: f32 = parts.iter().map(|p| p.sg[j]).sum();
            let sb: f32 = parts.iter().map(|p| p.sb[j]).sum();
            gemm::sgd_update(&mut g1[j], &mut self.v_g1[j], sg, lr, wd, mu);
            gemm::sgd_update(&mut be1[j], &mut self.v_be1[j], sb, lr, wd, mu);
        }
        for p in &parts {
            let rn = p.r1 - p.r0;
            for k in 0..c {
                for q in 0..rn {
                    let at = k * nh + p.r0 + q;
                    gemm::sgd_update(
                        &mut w2[at],
                        &mut self.v_w2[at],
                        p.gw2[k * rn + q],
                        lr,
                        wd,
                        mu,
                    );
                }
            }
        }
        for k in 0..c {
            let grad: f32 = dl[k * n..(k + 1) * n].iter().sum();
            gemm::sgd_update(&mut b2[k], &mut self.v_b2[k], grad, lr, wd, mu);
        }
        Ok(loss / n as f64)
    }

    /// Phase 1, by input feature: BatchNorm 1 on batch statistics (updating the running
    /// ones), dropout 1, and aᵀ, z, m in their kernel layouts.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm1(
        &mut self,
        x: &[f32],
        idx: &[usize],
        next: &[usize],
        mask: &Option<DropoutMask>,
        g1: &mut [f32],
        be1: &mut [f32],
        rm1: &mut [f32],
        rv1: &mut [f32],
    ) {
        let (nf, n) = (self.nf, idx.len());
        let np = padded(n);
        let input = Bn1Input {
            x,
            nf,
            idx,
            next,
            mask,
            eps: self.t.bn1.eps as f32,
            momentum: self.t.bn1.momentum as f32,
        };
        self.at.resize(nf * np);
        self.z.resize(n * nf);
        self.m.resize(n * nf);
        let cols = &self.cols;
        let widths = || cols.iter().map(|&(j0, j1)| j1 - j0);
        // aᵀ: within each panel of 32 batch columns, a thread's features are one run of rows.
        let mut at: Vec<Vec<&mut [f32]>> = cols.iter().map(|_| Vec::new()).collect();
        for panel in self.at.chunks_mut(nf * BP) {
            for (t, piece) in pieces(panel, widths().map(|w| w * BP))
                .into_iter()
                .enumerate()
            {
                at[t].push(piece);
            }
        }
        // z, m: a thread's features are whole panels.
        let z = pieces(&mut self.z, widths().map(|w| w * n));
        let m = pieces(&mut self.m, widths().map(|w| w * n));
        let params = pieces(g1, widths())
            .into_iter()
            .zip(pieces(be1, widths()))
            .zip(pieces(rm1, widths()))
            .zip(pieces(rv1, widths()));
        let parts: Vec<_> = at
            .into_iter()
            .zip(z)
            .zip(m)
            .zip(params)
            .zip(cols)
            .map(|((((at, z), m), (((g, be), rm), rv)), &(j0, _))| {
                Mutex::new(Bn1Part {
                    j0,
                    at,
                    z,
                    m,
                    g,
                    be,
                    rm,
                    rv,
                })
            })
            .collect();
        self.team
            .run(|t| vectorized(|| lock(&parts[t]).run(&input)));
    }

    /// Phase 2, by hidden unit: layer 1 (`hᵀ = W1·aᵀ + b1`), ReLU, BatchNorm 2 on batch
    /// statistics, dropout 2, and each block's share of the logits. In blocks of [`FB`]
    /// hidden units shared out as they come, like the backward's tiles (each member takes
    /// its own part's blocks from the front, then the others' from the back): with a static
    /// split the slower core left the other waiting 0.01-0.04 s an epoch here.
    #[allow(clippy::too_many_arguments)]
    fn forward_hidden(
        &mut self,
        n: usize,
        mask: &Option<DropoutMask>,
        b1: &[f32],
        g2: &mut [f32],
        be2: &mut [f32],
        rm2: &mut [f32],
        rv2: &mut [f32],
        w2: &[f32],
    ) {
        let np = padded(n);
        let input = HiddenInput {
            at: &self.at,
            b1,
            w2,
            mask,
            n,
            nf: self.nf,
            nh: self.nh,
            c: self.c,
            eps: self.t.bn2.eps as f32,
            momentum: self.t.bn2.momentum as f32,
        };
        let widths = || self.row_ranges.iter().map(|&(r0, r1)| r1 - r0);
        let params = pieces(g2, widths())
            .into_iter()
            .zip(pieces(be2, widths()))
            .zip(pieces(rm2, widths()))
            .zip(pieces(rv2, widths()));
        let mut guards: Vec<_> = self.rows.iter().map(lock).collect();
        // Every part's blocks in one list; part k's are first[k]..first[k] + counts[k].
        let (mut blocks, mut first, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for (guard, (((g, be), rm), rv)) in guards.iter_mut().zip(params) {
            let RowPart {
                r0,
                r1,
                w1,
                ht,
                xhat2,
                m2,
                d2,
                inv_std2,
                logits,
                ..
            } = &mut **guard;
            let rn = *r1 - *r0;
            ht.resize(rn * np);
            for buf in [&mut *xhat2, &mut *m2, &mut *d2] {
                buf.resize(rn * n, 0.0);
            }
            let count = rn.div_ceil(FB);
            logits.clear();
            logits.resize(count * input.c * n, 0.0);
            first.push(blocks.len());
            counts.push(count);
            let per_unit = ht
                .chunks_mut(FB * np)
                .zip(xhat2.chunks_mut(FB * n))
                .zip(m2.chunks_mut(FB * n))
                .zip(d2.chunks_mut(FB * n))
                .zip(inv_std2.chunks_mut(FB))
                .zip(logits.chunks_mut(input.c * n));
            let params = g
                .chunks_mut(FB)
                .zip(be.chunks_mut(FB))
                .zip(rm.chunks_mut(FB))
                .zip(rv.chunks_mut(FB));
            for (b, ((((((ht, xhat2), m2), d2), inv_std2), logits), (((g, be), rm), rv))) in
                per_unit.zip(params).enumerate()
            {
                blocks.push(Mutex::new(HiddenBlock {
                    r: *r0 + b * FB,
                    w1: &w1[b * FB * FP..],
                    w_rows: rn,
                    ht,
                    xhat2,
                    m2,
                    d2,
                    inv_std2,
                    logits,
                    g,
                    be,
                    rm,
                    rv,
                }));
            }
        }
        let claims: Vec<Claims> = counts.iter().map(|&k| Claims::new(k)).collect();
        self.team.run(|t| {
            vectorized(|| {
                let mut keep = [vec![1.0f32; n], vec![1.0f32; n]];
                while let Some((part, b)) = claim_next(&claims, t) {
                    lock(&blocks[first[part] + b]).run(&input, &mut keep);
                }
            })
        });
    }

    /// Phase 4, by hidden unit: back through layer 2, BatchNorm 2 and the ReLU (stepping b1,
    /// γ2, β2 and collecting W2's gradient) to G, then `Q = Gᵀz`, `S = Gᵀm` whose epilogue
    /// steps W1 and collects BatchNorm 1's gradients.
    #[allow(clippy::too_many_arguments)]
    fn backward_hidden(
        &mut self,
        n: usize,
        dl: &[f32],
        b1: &mut [f32],
        g2: &mut [f32],
        be2: &mut [f32],
        w2: &[f32],
        g1: &[f32],
        be1: &[f32],
        (lr, wd, mu): (f32, f32, f32),
    ) {
        let (nf, nh, c) = (self.nf, self.nh, self.c);
        let np = padded(n);
        let widths = || self.row_ranges.iter().map(|&(r0, r1)| r1 - r0);
        let params = pieces(g2, widths())
            .into_iter()
            .zip(pieces(be2, widths()))
            .zip(pieces(b1, widths()));
        let params: Vec<_> = params.map(|((g, be), b)| Mutex::new((g, be, b))).collect();
        let (z, m, rows) = (&self.z, &self.m, &self.rows);
        self.team.run(|t| {
            vectorized(|| {
                let mut p = lock(&rows[t]);
                let p = &mut *p;
                let mut guard = lock(&params[t]);
                let (g, be, b) = &mut *guard;
                let (r0, rn) = (p.r0, p.r1 - p.r0);
                p.gt.clear(rn, n);
                let (mut dy, mut gr) = (vec![0.0f32; n], vec![0.0f32; n]);
                for q in 0..rn {
                    let r = r0 + q;
                    let row = q * n..(q + 1) * n;
                    // Back through layer 2 (old W2) and dropout 2; W2's gradient.
                    dy.fill(0.0);
                    for k in 0..c {
                        let (dlk, w) = (&dl[k * n..(k + 1) * n], w2[k * nh + r]);
                        dy.iter_mut().zip(dlk).for_each(|(d, l)| *d += l * w);
                        p.gw2[k * rn + q] = lane_dot(dlk, &p.d2[row.clone()]);
                    }
                    dy.iter_mut()
                        .zip(&p.m2[row.clone()])
                        .for_each(|(d, k)| *d *= k);
                    // BatchNorm 2 backward, then the ReLU's mask.
                    let xhat = &p.xhat2[row];
                    let sum_dy = lane_sum(&dy, |v| v);
                    let sum_dy_xhat = lane_dot(&dy, xhat);
                    let scale = g[q] * p.inv_std2[q] / n as f32;
                    let h = &p.ht[q * np..q * np + n];
                    for i in 0..n {
                        let dx = scale * (n as f32 * dy[i] - sum_dy - xhat[i] * sum_dy_xhat);
                        gr[i] = if h[i] > 0.0 { dx } else { 0.0 };
                    }
                    let sum_g = lane_sum(&gr, |v| v);
                    p.gt.push_row(&gr);
                    gemm::sgd_update(&mut g[q], &mut p.v_g2[q], sum_dy_xhat, lr, wd, mu);
                    gemm::sgd_update(&mut be[q], &mut p.v_be2[q], sum_dy, lr, wd, mu);
                    gemm::sgd_update(&mut b[q], &mut p.v_b1[q], sum_g, lr, wd, mu);
                }
                p.sg.fill(0.0);
                p.sb.fill(0.0);
            })
        });

        // `Q, S` and W1's step in tiles of (part, panel of FP features), shared out as they
        // come: each member takes its own part's panels from the front, then the other
        // parts' from the back. The product is most of the step, and the cores of this
        // machine rarely run at the same speed for long (a static split left one waiting
        // for the other 5-15% of it).
        let panels = nf / FP;
        let mut guards: Vec<_> = self.rows.iter().map(lock).collect();
        let mut tiles = Vec::with_capacity(guards.len() * panels);
        for guard in guards.iter_mut() {
            let RowPart {
                r0,
                r1,
                w1,
                v1,
                sg,
                sb,
                gt,
                ..
            } = &mut **guard;
            let rn = *r1 - *r0;
            let (gt, pieces) = (&*gt, rn * FP);
            let slices = w1
                .chunks_mut(pieces)
                .zip(v1.chunks_mut(pieces))
                .zip(sg.chunks_mut(FP).zip(sb.chunks_mut(FP)));
            for ((w, v), (sg, sb)) in slices {
                tiles.push(Mutex::new((rn, gt, w, v, sg, sb)));
            }
        }
        let claims: Vec<Claims> = (0..self.rows.len()).map(|_| Claims::new(panels)).collect();
        self.team.run(|t| {
            vectorized(|| {
                while let Some((part, panel)) = claim_next(&claims, t) {
                    let mut tile = lock(&tiles[part * panels + panel]);
                    let (rows, gt, w, v, sg, sb) = &mut *tile;
                    let (cols, zm) = (panel * FP..(panel + 1) * FP, zm_panel(n, panel));
                    let mut step = StepW1 {
                        rows: *rows,
                        w,
                        v,
                        sg,
                        sb,
                        g1: &g1[cols.clone()],
                        be1: &be1[cols],
                        lr,
                        wd,
                        mu,
                    };
                    // Likely this member's next panel: the following one of its own part,
                    // the one before of another's.
                    let after = if part == t {
                        panel + 1
                    } else {
                        panel.wrapping_sub(1)
                    };
                    let ahead =
                        (after < panels).then(|| (&z[zm_panel(n, after)], &m[zm_panel(n, after)]));
                    gemm::sparse_dual(*rows, FP, n, gt, &z[zm.clone()], &m[zm], &mut step, ahead);
                }
            })
        });
    }
}

/// The panels 0..n of one part still to do, taken from either end: the front (low 32 bits)
/// by the part's own member, the back (high 32 bits, exclusive) by the others.
struct Claims(AtomicU64);

impl Claims {
    fn new(n: usize) -> Self {
        Claims(AtomicU64::new((n as u64) << 32))
    }
    fn take(&self, from_front: bool) -> Option<usize> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let (front, back) = (cur & 0xffff_ffff, cur >> 32);
            if front >= back {
                return None;
            }
            let (new, got) = if from_front {
                (cur + 1, front)
            } else {
                (((back - 1) << 32) | front, back - 1)
            };
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(got as usize),
                Err(seen) => cur = seen,
            }
        }
    }
    fn front(&self) -> Option<usize> {
        self.take(true)
    }
    fn back(&self) -> Option<usize> {
        self.take(false)
    }
}

/// Member t's next tile: its own part's from the front, else another part's from the back.
fn claim_next(claims: &[Claims], t: usize) -> Option<(usize, usize)> {
    let parts = claims.len();
    claims[t].front().map(|i| (t, i)).or_else(|| {
        (1..parts)
            .map(|d| (t + d) % parts)
            .find_map(|o| claims[o].back().map(|i| (o, i)))
    })
}

/// The dropout mask of columns `col` and `col + 1` (`col` even) of a row-major
/// (n × `width`) layer input, `width` even: element (i, j) is kept by draw (i·width + j)/2,
/// so the two columns share each draw. Without a mask (p = 0) `keep` stays all ones.
fn draw_column_pair(
    mask: &Option<DropoutMask>,
    width: usize,
    col: usize,
    keep: &mut [Vec<f32>; 2],
) {
    let Some(mk) = mask else { return };
    let [k0, k1] = keep;
    for (i, (a, b)) in k0.iter_mut().zip(k1.iter_mut()).enumerate() {
        (*a, *b) = mk.pair((i * width + col) / 2);
    }
}

/// Asks the CPU to bring `v` into its L2 cache (no-op off x86-64).
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    prefetch_with::<{ std::arch::x86_64::_MM_HINT_T1 }>(v);
}

/// Asks the CPU to bring `v` into its L1 cache (no-op off x86-64).
fn prefetch_l1(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    prefetch_with::<{ std::arch::x86_64::_MM_HINT_T0 }>(v);
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_with<const HINT: i32>(v: &[f32]) {
    for line in v.chunks(16) {
        // SAFETY: prefetching is a hint with no effect on memory; the address is in `v`.
        unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(line.as_ptr() as *const i8) };
    }
}

/// BatchNorm's batch statistics of one channel (its n ≥ 2 values, two passes: as stable as
/// PyTorch's for these sizes), with the running ones updated ([`running_update`]). Returns
/// (mean, 1/√(biased variance + eps)).
fn batch_stats(
    v: &[f32],
    eps: f32,
    momentum: f32,
    running_mean: &mut f32,
    running_var: &mut f32,
) -> (f32, f32) {
    let n = v.len();
    let mean = lane_sum(v, |x| x) / n as f32;
    let var = lane_sum(v, |x| (x - mean) * (x - mean)) / n as f32;
    let scale = running_update(mean, var, n, eps, momentum, running_mean, running_var);
    (mean, scale)
}

/// PyTorch's update of BatchNorm's running statistics from a batch of n values with this
/// mean and biased variance (`momentum` weight on the new value, unbiased variance for the
/// running estimate). Returns 1/√(var + eps), the batch's normalising scale.
fn running_update(
    mean: f32,
    var: f32,
    n: usize,
    eps: f32,
    momentum: f32,
    running_mean: &mut f32,
    running_var: &mut f32,
) -> f32 {
    let n = n as f32;
    *running_mean = (1.0 - momentum) * *running_mean + momentum * mean;
    *running_var = (1.0 - momentum) * *running_var + momentum * var * n / (n - 1.0);
    1.0 / (var + eps).sqrt()
}

/// The batch padded to whole panels of the layer-1 product.
fn padded(n: usize) -> usize {
    n.div_ceil(BP) * BP
}

/// `Σ f(v[i])` over 8 interleaved partial sums (see `lane_dot`).
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for k in 0..8 {
            lanes[k] += f(c[k]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `Σ a[i]·b[i]` over 8 interleaved partial sums (float addition is not associative, so a
/// plain `.sum()` stays one serial chain; independent lanes become vector instructions).
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Epilogue of `Q = Gᵀz`, `S = Gᵀm` for one part's hidden units: at unit r and features
/// j..j+FP, with W1's rows in [`w_index`] layout, `∂γ1[j] += W1·Q`, `∂β1[j] += W1·S`, then
/// W1's SGD step with gradient `γ1[j]·Q + β1[j]·S`.
struct StepW1<'a> {
    rows: usize,
    w: &'a mut [f32],
    v: &'a mut [f32],
    sg: &'a mut [f32],
    sb: &'a mut [f32],
    g1: &'a [f32],
    be1: &'a [f32],
    lr: f32,
    wd: f32,
    mu: f32,
}

impl Epilogue for StepW1<'_> {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn put(
        &mut self,
        row: usize,
        col: usize,
        q: [std::arch::x86_64::__m256; 4],
        s: [std::arch::x86_64::__m256; 4],
    ) {
        use std::arch::x86_64::*;
        let at = w_index(self.rows, row, col);
        let (w, v) = (&mut self.w[at..at + FP], &mut self.v[at..at + FP]);
        let (sg, sb) = (&mut self.sg[col..col + FP], &mut self.sb[col..col + FP]);
        let (g1, be1) = (&self.g1[col..col + FP], &self.be1[col..col + FP]);
        for h in 0..4 {
            let o = 8 * h;
            // SAFETY: only reached from the AVX2 kernel (AVX2 present); every slice above
            // holds the FP floats read or written.
            unsafe {
                let wv = _mm256_loadu_ps(w.as_ptr().add(o));
                _mm256_storeu_ps(
                    sg.as_mut_ptr().add(o),
                    _mm256_fmadd_ps(wv, q[h], _mm256_loadu_ps(sg.as_ptr().add(o))),
                );
                _mm256_storeu_ps(
                    sb.as_mut_ptr().add(o),
                    _mm256_fmadd_ps(wv, s[h], _mm256_loadu_ps(sb.as_ptr().add(o))),
                );
                let grad = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_loadu_ps(g1.as_ptr().add(o)), q[h]),
                    _mm256_mul_ps(_mm256_loadu_ps(be1.as_ptr().add(o)), s[h]),
                );
                // torch.optim.SGD's order with separate multiplies and adds, as `sgd_update`.
                let d = _mm256_add_ps(grad, _mm256_mul_ps(wv, _mm256_set1_ps(self.wd)));
                let vv = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_loadu_ps(v.as_ptr().add(o)), _mm256_set1_ps(self.mu)),
                    d,
                );
                _mm256_storeu_ps(v.as_mut_ptr().add(o), vv);
                _mm256_storeu_ps(
                    w.as_mut_ptr().add(o),
                    _mm256_sub_ps(wv, _mm256_mul_ps(_mm256_set1_ps(self.lr), vv)),
                );
            }
        }
    }

    fn put1(&mut self, row: usize, col: usize, q: f32, s: f32) {
        let at = w_index(self.rows, row, col);
        self.sg[col] += self.w[at] * q;
        self.sb[col] += self.w[at] * s;
        gemm::sgd_update(
            &mut self.w[at],
            &mut self.v[at],
            self.g1[col] * q + self.be1[col] * s,
            self.lr,
            self.wd,
            self.mu,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three members racing over three parts, one of them slow: every tile is taken exactly
    /// once, and the slow member's part is partly done by the others.
    #[test]
    fn claimed_tiles_are_each_taken_once() {
        for _ in 0..50 {
            let claims: Vec<Claims> = [7, 0, 40].iter().map(|&n| Claims::new(n)).collect();
            let taken: Vec<Vec<(usize, usize)>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..3)
                    .map(|t| {
                        let claims = &claims;
                        s.spawn(move || {
                            let mut mine = Vec::new();
                            while let Some(tile) = claim_next(claims, t) {
                                if t == 2 {
                                    std::thread::sleep(std::time::Duration::from_millis(1));
                                }
                                mine.push(tile);
                            }
                            mine
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("member"))
                    .collect()
            });
            let mut all: Vec<_> = taken.iter().flatten().copied().collect();
            all.sort_unstable();
            let want: Vec<_> = (0..7)
                .map(|i| (0, i))
                .chain((0..40).map(|i| (2, i)))
                .collect();
            assert_eq!(all, want);
            assert!(taken[0].iter().chain(&taken[1]).any(|&(part, _)| part == 2));
        }
    }
}
