//! The two single-threaded float32 matrix products of the fused head step
//! (`fused_head/mod.rs`), on operands that the step writes directly in the layouts the kernels
//! read front to back, so nothing is packed at run time.
//!
//! Why not libtorch's `mm`: the head step splits each product between the cores by hand, and
//! MKL inside libtorch runs its own OpenMP team whose spinning threads then fight ours; run
//! single-threaded on these shapes (one side is the batch, 64) it also reaches only 60-75% of
//! a core's FMA peak here.
//!
//! - [`product`]: `Hᵀ = W·Aᵀ` for layer 1's forward pass, W (hidden × features) in
//!   [`w_index`] layout, Aᵀ (features × batch) in [`at_index`] layout. A tile of 3 rows × 4
//!   AVX2 vectors of C stays in 12 registers while k runs: per step, 3 scalars of W are
//!   broadcast and 4 vectors of Aᵀ stream past (3 broadcasts and 4 loads per 12 FMAs). The
//!   k loop is unrolled over a panel of W, so the addresses are constant offsets.
//! - [`sparse_dual`]: `Q = Gᵀ·Z` and `S = Gᵀ·M` at once for the backward pass, with Gᵀ's
//!   rows given as their nonzero entries ([`SparseRows`]). G is the gradient behind a ReLU,
//!   so about half of it is exactly zero, and skipping those terms halves the work of the
//!   step's largest product (adding `0·z` changes nothing, so the sums are the same). Each
//!   row of Q and S, 32 columns at a time, goes to an [`Epilogue`] (which folds W's SGD step
//!   into it).
//!
//! Operands should start on a 64-byte boundary ([`AlignedBuf`]): a vector load that
//! straddles two cache lines costs two, and the sparse kernel issues one load per FMA.
//!
//! They need AVX2 and FMA ([`available`]); elsewhere plain loops compute the same values
//! (slowly: the head step is not used there, only the unit tests run that path).

use std::ops::{Deref, DerefMut};

/// Columns of W (features) per panel, and of Z, M: one sparse-kernel row tile, 4 vectors.
pub const FP: usize = 32;
/// Batch columns per panel of Aᵀ (and of Hᵀ's tiles): the batch is padded to a multiple.
pub const BP: usize = 32;
/// Rows (hidden units) per register tile of [`product`].
pub const MR: usize = 3;
/// Steps of k per pass over Aᵀ in [`product`] (a multiple of FP): a 128 × 32 chunk (16 KiB)
/// stays in L1 while every row tile of W passes.
const KC: usize = 128;

/// Whether this CPU can run the kernels.
pub fn available() -> bool {
    crate::util::cpu::has_avx2_fma()
}

/// One cache line of floats: the unit of [`AlignedBuf`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A float buffer that starts on a cache line (a `Vec<f32>` starts wherever malloc puts it,
/// often 16 bytes past one), zero-filled as it grows.
#[derive(Default)]
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> Self {
        let mut b = AlignedBuf::default();
        b.resize(len);
        b
    }
    /// Sets the length to `len`; new floats are 0, kept ones keep their values.
    pub fn resize(&mut self, len: usize) {
        self.lines.resize(len.div_ceil(16), Line([0.0; 16]));
        if len > self.len {
            // The tail of the last kept line may hold old values past the old length.
            let old = self.len;
            self.len = len;
            self[old..].fill(0.0);
        }
        self.len = len;
    }
}

impl Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `lines` holds at least `len` floats (16 per line, repr(C) without padding).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const f32, self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut f32, self.len) }
    }
}

/// W (rows × cols, cols a multiple of FP) in panels of FP columns: element (r, j).
#[inline(always)]
pub fn w_index(rows: usize, r: usize, j: usize) -> usize {
    (j / FP) * rows * FP + r * FP + j % FP
}

/// Aᵀ (features × np, np a multiple of 32) in panels of 32 batch columns: element (j, i).
#[inline(always)]
pub fn at_index(features: usize, j: usize, i: usize) -> usize {
    (i / BP) * features * BP + j * BP + i % BP
}

/// Z or M (n × features, features a multiple of FP) in panels of FP features: element (i, j).
#[inline(always)]
pub fn zm_index(n: usize, i: usize, j: usize) -> usize {
    (j / FP) * n * FP + i * FP + j % FP
}

/// The floats of panel `p` (features p·FP..(p+1)·FP) of a Z or M with n rows: an n × FP
/// block, row-major.
#[inline(always)]
pub fn zm_panel(n: usize, p: usize) -> std::ops::Range<usize> {
    zm_index(n, 0, p * FP)..zm_index(n, 0, (p + 1) * FP)
}

/// The rows of a sparse matrix (Gᵀ: hidden units × batch) as lists of (column, value) for
/// the nonzero values, filled row by row with [`push_row`](Self::push_row).
#[derive(Default)]
pub struct SparseRows {
    /// Row r's entries are `start[r]..start[r + 1]`.
    start: Vec<u32>,
    /// Room for every value of every row (nothing is allocated while rows are added).
    col: Vec<u32>,
    val: Vec<f32>,
    len: usize,
    /// Columns of the dense rows.
    cols: usize,
}

impl SparseRows {
    /// Empties it for up to `rows` rows of `cols` columns.
    pub fn clear(&mut self, rows: usize, cols: usize) {
        self.start.clear();
        self.start.reserve(rows + 1);
        self.start.push(0);
        self.col.resize(rows * cols, 0);
        self.val.resize(rows * cols, 0.0);
        self.len = 0;
        self.cols = cols;
    }
    /// Adds the next row, given dense (`cols` values; zeros are left out).
    pub fn push_row(&mut self, dense: &[f32]) {
        assert!(
            dense.len() == self.cols && self.len + self.cols <= self.col.len(),
            "SparseRows: row of {} values for {} columns, or more rows than cleared for",
            dense.len(),
            self.cols
        );
        // Branch-free: every value is written at the end, and the end moves past it only
        // when it is not zero (about half of G's are, at random: a branch would mispredict
        // on every other value).
        let (col, val) = (
            &mut self.col[self.len..self.len + self.cols],
            &mut self.val[self.len..self.len + self.cols],
        );
        let mut k = 0;
        for (i, &v) in dense.iter().enumerate() {
            col[k] = i as u32;
            val[k] = v;
            k += (v != 0.0) as usize;
        }
        self.len += k;
        self.start.push(self.len as u32);
    }
    /// Finished rows.
    pub fn rows(&self) -> usize {
        self.start.len().saturating_sub(1)
    }
    /// Nonzero values in all.
    #[cfg(test)]
    pub fn nonzeros(&self) -> usize {
        self.len
    }
    fn row(&self, r: usize) -> std::ops::Range<usize> {
        self.start[r] as usize..self.start[r + 1] as usize
    }
}

/// `hᵀ (m × np, row-major) = W (m × k) · Aᵀ (k × np)`, with k a multiple of FP and np of BP.
/// W's m rows are the first rows of a [`w_index`] layout of `w_rows` rows (`w` starts at the
/// first of them), so a block of rows can be computed on its own.
pub fn product(
    m: usize,
    w_rows: usize,
    np: usize,
    k: usize,
    w: &[f32],
    at: &[f32],
    ht: &mut [f32],
) {
    assert!(
        k % FP == 0 && np % BP == 0 && m <= w_rows,
        "product: k = {k} or np = {np} not whole panels, or {m} rows of {w_rows}"
    );
    assert!(
        (k == 0 || w.len() >= (k / FP - 1) * w_rows * FP + m * FP)
            && at.len() >= k * np
            && ht.len() >= m * np,
        "product: operand too short"
    );
    if k == 0 {
        ht[..m * np].fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2 and FMA are present; the asserts bound every index the kernel forms.
        unsafe { product_avx2(m, w_rows, np, k, w, at, ht) };
        return;
    }
    for r in 0..m {
        for i in 0..np {
            ht[r * np + i] = (0..k)
                .map(|j| w[w_index(w_rows, r, j)] * at[at_index(k, j, i)])
                .sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(
    m: usize,
    w_rows: usize,
    np: usize,
    k: usize,
    w: &[f32],
    at: &[f32],
    ht: &mut [f32],
) {
    for panel in 0..np / BP {
        for k0 in (0..k).step_by(KC) {
            let kc = (k - k0).min(KC);
            let b = at.as_ptr().add(panel * k * BP + k0 * BP);
            for r0 in (0..m).step_by(MR) {
                let c = ht.as_mut_ptr().add(r0 * np + panel * BP);
                // W's rows r0.. from column k0: panel k0/FP onwards, rows FP floats apart.
                let a = w.as_ptr().add((k0 / FP) * w_rows * FP + r0 * FP);
                let stride = w_rows * FP;
                match m - r0 {
                    1 => product_tile::<1>(kc, a, stride, b, c, np, k0 > 0),
                    2 => product_tile::<2>(kc, a, stride, b, c, np, k0 > 0),
                    _ => product_tile::<3>(kc, a, stride, b, c, np, k0 > 0),
                }
            }
        }
    }
}

/// R rows × 32 batch columns of Hᵀ over k steps (a multiple of FP): W's rows read one panel
/// of FP columns at a time, panels `a_panel` floats apart; Aᵀ's chunk 32 floats per step.
/// Adds to C when `accumulate`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_tile<const R: usize>(
    k: usize,
    a: *const f32,
    a_panel: usize,
    b: *const f32,
    c: *mut f32,
    rs_c: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    for p0 in (0..k).step_by(FP) {
        let (ap, bp) = (a.add((p0 / FP) * a_panel), b.add(p0 * BP));
        // A whole panel per pass, so that every address below is a constant offset (with
        // the step's index computed per step, the integer work slowed the loop by a fifth).
        for p in 0..FP {
            let mut x = [_mm256_setzero_ps(); R];
            for (u, xu) in x.iter_mut().enumerate() {
                *xu = _mm256_broadcast_ss(&*ap.add(u * FP + p));
            }
            for v in 0..4 {
                let bv = _mm256_loadu_ps(bp.add(p * BP + v * 8));
                for u in 0..R {
                    acc[u][v] = _mm256_fmadd_ps(x[u], bv, acc[u][v]);
                }
            }
        }
    }
    for (u, row) in acc.iter().enumerate() {
        for (v, val) in row.iter().enumerate() {
            let out = c.add(u * rs_c + v * 8);
            let val = if accumulate {
                _mm256_add_ps(_mm256_loadu_ps(out), *val)
            } else {
                *val
            };
            _mm256_storeu_ps(out, val);
        }
    }
}

/// One finished piece of [`sparse_dual`]: FP consecutive columns of one row of Q and S.
pub trait Epilogue {
    #[cfg(target_arch = "x86_64")]
    fn put(
        &mut self,
        row: usize,
        col: usize,
        q: [std::arch::x86_64::__m256; 4],
        s: [std::arch::x86_64::__m256; 4],
    );
    /// One value of each (the portable path).
    fn put1(&mut self, row: usize, col: usize, q: f32, s: f32);
}

/// `Q = Gᵀ·Z` and `S = Gᵀ·M` (m × n each; Gᵀ: m × k given by its nonzero entries, Z and M:
/// k × n in [`zm_index`] layout, n a multiple of FP), each row piece handed to `out`. Visits
/// Z and M panel by panel (one panel, 2·FP·k floats, stays in L1 while every row of Gᵀ
/// passes), so `out` walks a matrix in [`w_index`] layout front to back. Each next panel
/// is fetched into L2 during the one before; `next` is the panel of Z and of M (k × FP
/// each) that the caller will pass next, fetched during the last one.
#[allow(clippy::too_many_arguments)]
pub fn sparse_dual<E: Epilogue>(
    m: usize,
    n: usize,
    k: usize,
    g: &SparseRows,
    z: &[f32],
    mk: &[f32],
    out: &mut E,
    next: Option<(&[f32], &[f32])>,
) {
    assert!(n % FP == 0, "sparse_dual: n = {n} is not whole panels");
    assert!(
        g.rows() == m && g.cols <= k && z.len() >= k * n && mk.len() >= k * n,
        "sparse_dual: operand of the wrong size"
    );
    assert!(
        next.is_none_or(|(a, b)| a.len() >= k * FP && b.len() >= k * FP),
        "sparse_dual: next panel too short"
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2 and FMA are present; the assert bounds every index the kernel forms
        // (every column of `g` is below k).
        unsafe { sparse_dual_avx2(m, n, k, g, z, mk, out, next) };
        return;
    }
    for r in 0..m {
        for j in 0..n {
            let dot = |b: &[f32]| {
                g.row(r)
                    .map(|e| g.val[e] * b[zm_index(k, g.col[e] as usize, j)])
                    .sum()
            };
            out.put1(r, j, dot(z), dot(mk));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn sparse_dual_avx2<E: Epilogue>(
    m: usize,
    n: usize,
    k: usize,
    g: &SparseRows,
    z: &[f32],
    mk: &[f32],
    out: &mut E,
    next: Option<(&[f32], &[f32])>,
) {
    use std::arch::x86_64::*;
    // Cache lines of one panel of Z (and of M), and how many of the next panel's to ask
    // for per row of this one.
    let lines = k * FP / 16;
    let per_row = (2 * lines).div_ceil(m.max(1));
    for panel in 0..n / FP {
        let (zp, mp) = (
            z.as_ptr().add(panel * k * FP),
            mk.as_ptr().add(panel * k * FP),
        );
        // The next panel into L2 while this one is worked on: Z and M were just written
        // by all the threads, so half of each panel sits in another core's cache, and
        // fetched on demand its lines would come one stall at a time.
        let ahead = if panel + 1 < n / FP {
            Some((zp.add(k * FP), mp.add(k * FP)))
        } else {
            next.map(|(a, b)| (a.as_ptr(), b.as_ptr()))
        };
        for r in 0..m {
            if let Some((zn, mn)) = ahead {
                for l in r * per_row..((r + 1) * per_row).min(2 * lines) {
                    let (base, l) = if l < lines { (zn, l) } else { (mn, l - lines) };
                    _mm_prefetch::<_MM_HINT_T1>(base.add(l * 16) as *const i8);
                }
            }
            // 8 accumulators (the FMA's latency times its two ports), a broadcast and a
            // streaming load: per nonzero of G, 8 loads and 8 FMAs.
            let (mut q, mut s) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
            for e in g.row(r) {
                let o = *g.col.get_unchecked(e) as usize * FP;
                let x = _mm256_broadcast_ss(g.val.get_unchecked(e));
                for v in 0..4 {
                    q[v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(zp.add(o + 8 * v)), q[v]);
                    s[v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(mp.add(o + 8 * v)), s[v]);
                }
            }
            out.put(r, panel * FP, q, s);
        }
    }
}

/// One parameter's SGD update, torch.optim.SGD's order: `d = g + wd·w; v = mu·v + d;
/// w = w − lr·v` (a zero momentum buffer makes the first step `v = d`, as torch's).
#[inline(always)]
pub fn sgd_update(w: &mut f32, v: &mut f32, g: f32, lr: f32, wd: f32, mu: f32) {
    let d = g + *w * wd;
    *v = *v * mu + d;
    *w -= lr * *v;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.range(-1.0, 1.0) as f32).collect()
    }

    fn reference(
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
        m: usize,
        n: usize,
        k: usize,
    ) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a(i, p) as f64 * b(p, j) as f64).sum();
            }
        }
        c
    }

    /// Partial row tiles, several panels and k chunks, against a float64 loop.
    #[test]
    fn product_matches_a_plain_triple_loop() {
        for &(m, np, k) in &[
            (1, 32, 32),
            (3, 32, 160),
            (14, 64, 288),
            (256, 32, 32),
            (5, 96, 0),
        ] {
            let (w, at) = (random(m * k, 1), random(k * np, 2));
            let (wm, atm) = (
                |r: usize, j: usize| w[w_index(m, r, j)],
                |j: usize, i: usize| at[at_index(k, j, i)],
            );
            let want = reference(wm, atm, m, np, k);
            let mut ht = vec![f32::NAN; m * np];
            product(m, m, np, k, &w, &at, &mut ht);
            for (got, want) in ht.iter().zip(&want) {
                assert!(
                    (*got as f64 - want).abs() < 1e-4,
                    "({m},{np},{k}): {got} vs {want}"
                );
            }
            // A block of rows r0..r0 + mb on its own, read inside the whole layout.
            let (r0, mb) = (m / 3, (m - m / 3).div_ceil(2));
            let mut block = vec![f32::NAN; mb * np];
            product(mb, m, np, k, &w[(r0 * FP).min(w.len())..], &at, &mut block);
            for (got, want) in block.iter().zip(&want[r0 * np..]) {
                assert!(
                    (*got as f64 - want).abs() < 1e-4,
                    "({m},{np},{k}) rows {r0}+{mb}: {got} vs {want}"
                );
            }
        }
    }

    struct Collect {
        n: usize,
        q: Vec<f32>,
        s: Vec<f32>,
    }

    impl Epilogue for Collect {
        #[cfg(target_arch = "x86_64")]
        fn put(
            &mut self,
            row: usize,
            col: usize,
            q: [std::arch::x86_64::__m256; 4],
            s: [std::arch::x86_64::__m256; 4],
        ) {
            let at = row * self.n + col;
            for h in 0..4 {
                // SAFETY: the slices have 8 floats from `at + 8h` (row < m, col + 32 <= n).
                unsafe {
                    std::arch::x86_64::_mm256_storeu_ps(
                        self.q[at + 8 * h..at + 8 * h + 8].as_mut_ptr(),
                        q[h],
                    );
                    std::arch::x86_64::_mm256_storeu_ps(
                        self.s[at + 8 * h..at + 8 * h + 8].as_mut_ptr(),
                        s[h],
                    );
                }
            }
        }
        fn put1(&mut self, row: usize, col: usize, q: f32, s: f32) {
            self.q[row * self.n + col] = q;
            self.s[row * self.n + col] = s;
        }
    }

    /// G with about half its values zero (and rows all zero or all nonzero) against a
    /// float64 loop over the dense G.
    #[test]
    fn sparse_dual_matches_a_plain_triple_loop() {
        for &(m, n, k) in &[
            (1, 32, 1),
            (3, 32, 64),
            (256, 64, 17),
            (7, 96, 64),
            (5, 32, 0),
        ] {
            let mut gd = random(m * k, 3);
            for (e, v) in gd.iter_mut().enumerate() {
                let row = e / k.max(1);
                if (*v < 0.0 && row % 3 != 1) || row % 3 == 2 {
                    *v = 0.0;
                }
            }
            let mut g = SparseRows::default();
            g.clear(m, k);
            for r in 0..m {
                g.push_row(&gd[r * k..(r + 1) * k]);
            }
            assert_eq!(g.nonzeros(), gd.iter().filter(|v| **v != 0.0).count());
            let (z, mk) = (random(k * n, 4), random(k * n, 5));
            let mut out = Collect {
                n,
                q: vec![f32::NAN; m * n],
                s: vec![f32::NAN; m * n],
            };
            sparse_dual(m, n, k, &g, &z, &mk, &mut out, None);
            let gm = |r: usize, i: usize| gd[r * k + i];
            let want_q = reference(gm, |i, j| z[zm_index(k, i, j)], m, n, k);
            let want_s = reference(gm, |i, j| mk[zm_index(k, i, j)], m, n, k);
            for (got, want) in out.q.iter().zip(want_q).chain(out.s.iter().zip(want_s)) {
                assert!(
                    (*got as f64 - want).abs() < 1e-4,
                    "({m},{n},{k}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn aligned_buf_starts_on_a_line_and_zero_fills_growth() {
        let mut b = AlignedBuf::zeroed(5);
        assert_eq!(b.as_ptr() as usize % 64, 0);
        b.fill(7.0);
        b.resize(3);
        b.resize(40);
        assert_eq!(&b[..3], &[7.0; 3]);
        assert!(b[3..].iter().all(|v| *v == 0.0), "{:?}", &b[..]);
        assert_eq!(b.as_ptr() as usize % 64, 0);
        assert_eq!(b.len(), 40);
    }
}
