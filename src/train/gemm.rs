//! The two single-threaded float32 matrix products of the fused head step
//! (`fused_head.rs`), on operands that the step writes directly in the layouts the kernels
//! read front to back, so nothing is packed at run time.
//!
//! Why not libtorch's `mm`: the head step splits each product between the cores by hand, and
//! MKL inside libtorch runs its own OpenMP team whose spinning threads then fight ours; run
//! single-threaded on these shapes (one side is the batch, 64) it also reaches only 60-75% of
//! a core's FMA peak here.
//!
//! Both kernels hold a tile of 3 rows × 4 AVX2 vectors of C in 12 registers while k runs: per
//! step of k, 3 scalars of the left operand are broadcast and stay in registers while 4
//! vectors of the right operand stream past (3 broadcasts and 4 loads per 12 FMAs; the
//! textbook 6 × 16 tile needs 6 broadcasts, which this CPU cannot issue as fast as the FMAs).
//!
//! - [`product`]: `Hᵀ = W·Aᵀ` for layer 1's forward pass, W (hidden × features) in
//!   [`w_index`] layout, Aᵀ (features × batch) in [`at_index`] layout.
//! - [`dual_product`]: `Q = Gᵀ·Z` and `S = Gᵀ·M` at once for the backward pass, Gᵀ (hidden ×
//!   batch) in [`gt_index`] layout, Z and M (batch × features) in [`zm_index`] layout, each
//!   tile handed to an [`Epilogue`] (which folds W's SGD step into it).
//!
//! They need AVX2 and FMA ([`available`]); elsewhere plain loops compute the same values
//! (slowly: the head step is not used there, only the unit tests run that path).

/// Columns of W (features) per panel, and of Z, M.
pub const FP: usize = 16;
/// Batch columns per panel of Aᵀ (and of Hᵀ's tiles): the batch is padded to a multiple.
pub const BP: usize = 32;
/// Rows (hidden units) per register tile.
pub const MR: usize = 3;
/// Steps of k per pass over Aᵀ in [`product`]: a 128 × 32 chunk (16 KiB) stays in L1 while
/// every row tile of W passes.
const KC: usize = 128;

/// Whether this CPU can run the kernels.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// W (rows × cols, cols a multiple of 16) in panels of 16 columns: element (r, j).
#[inline(always)]
pub fn w_index(rows: usize, r: usize, j: usize) -> usize {
    (j / FP) * rows * FP + r * FP + j % FP
}

/// Aᵀ (features × np, np a multiple of 32) in panels of 32 batch columns: element (j, i).
#[inline(always)]
pub fn at_index(features: usize, j: usize, i: usize) -> usize {
    (i / BP) * features * BP + j * BP + i % BP
}

/// Z or M (n × features, features a multiple of 16) in panels of 16 features: element (i, j).
#[inline(always)]
pub fn zm_index(n: usize, i: usize, j: usize) -> usize {
    (j / FP) * n * FP + i * FP + j % FP
}

/// Gᵀ (rows × n) in micro-panels of 3 rows (the last one zero-padded): element (r, i).
#[inline(always)]
pub fn gt_index(n: usize, r: usize, i: usize) -> usize {
    (r / MR) * n * MR + i * MR + r % MR
}

/// Floats of a Gᵀ of `rows` rows (whole micro-panels).
pub fn gt_len(rows: usize, n: usize) -> usize {
    rows.div_ceil(MR) * n * MR
}

/// `hᵀ (m × np, row-major) = W (m × k) · Aᵀ (k × np)`, with k a multiple of 16 and np of 32.
pub fn product(m: usize, np: usize, k: usize, w: &[f32], at: &[f32], ht: &mut [f32]) {
    assert!(
        k % FP == 0 && np % BP == 0,
        "product: k = {k} or np = {np} not whole panels"
    );
    assert!(
        w.len() >= m * k && at.len() >= k * np && ht.len() >= m * np,
        "product: operand too short"
    );
    if k == 0 {
        ht[..m * np].fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2 and FMA are present; the asserts bound every index the kernel forms.
        unsafe { product_avx2(m, np, k, w, at, ht) };
        return;
    }
    for r in 0..m {
        for i in 0..np {
            ht[r * np + i] = (0..k)
                .map(|j| w[w_index(m, r, j)] * at[at_index(k, j, i)])
                .sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(m: usize, np: usize, k: usize, w: &[f32], at: &[f32], ht: &mut [f32]) {
    for panel in 0..np / BP {
        for k0 in (0..k).step_by(KC) {
            let kc = (k - k0).min(KC);
            let b = at.as_ptr().add(panel * k * BP + k0 * BP);
            for r0 in (0..m).step_by(MR) {
                let c = ht.as_mut_ptr().add(r0 * np + panel * BP);
                // W's rows r0.. from column k0: panel k0/16 onwards, rows 16 floats apart.
                let a = w.as_ptr().add((k0 / FP) * m * FP + r0 * FP);
                match m - r0 {
                    1 => product_tile::<1>(kc, a, m * FP, b, c, np, k0 > 0),
                    2 => product_tile::<2>(kc, a, m * FP, b, c, np, k0 > 0),
                    _ => product_tile::<3>(kc, a, m * FP, b, c, np, k0 > 0),
                }
            }
        }
    }
}

/// R rows × 32 batch columns of Hᵀ over k steps: W's rows read 16 columns (one panel) at a
/// time, `a_panel` floats apart; Aᵀ's chunk 32 floats per step. Adds to C when `accumulate`.
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
    for p in 0..k {
        let ap = a.add((p / FP) * a_panel + p % FP);
        let bp = b.add(p * BP);
        let mut x = [_mm256_setzero_ps(); R];
        for (u, xu) in x.iter_mut().enumerate() {
            *xu = _mm256_broadcast_ss(&*ap.add(u * FP));
        }
        for v in 0..4 {
            let bv = _mm256_loadu_ps(bp.add(v * 8));
            for u in 0..R {
                acc[u][v] = _mm256_fmadd_ps(x[u], bv, acc[u][v]);
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

/// One finished tile row of [`dual_product`]: 16 consecutive columns of one row of Q and S.
pub trait Epilogue {
    #[cfg(target_arch = "x86_64")]
    fn put16(
        &mut self,
        row: usize,
        col: usize,
        q: [std::arch::x86_64::__m256; 2],
        s: [std::arch::x86_64::__m256; 2],
    );
    /// One value of each (the portable path).
    fn put1(&mut self, row: usize, col: usize, q: f32, s: f32);
}

/// `Q = Gᵀ·Z` and `S = Gᵀ·M` (m × n each; Gᵀ: m × k, Z and M: k × n, n a multiple of 16),
/// each tile handed to `out`. Visits Z and M panel by panel (one panel, 2·16·k floats, stays
/// in L1 while every row tile of Gᵀ passes), so `out` walks a matrix in [`w_index`] layout
/// front to back.
pub fn dual_product<E: Epilogue>(
    m: usize,
    n: usize,
    k: usize,
    gt: &[f32],
    z: &[f32],
    mk: &[f32],
    out: &mut E,
) {
    assert!(n % FP == 0, "dual_product: n = {n} is not whole panels");
    assert!(
        gt.len() >= gt_len(m, k) && z.len() >= k * n && mk.len() >= k * n,
        "dual_product: operand too short"
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2 and FMA are present; the asserts bound every index the kernel forms.
        unsafe { dual_avx2(m, n, k, gt, z, mk, out) };
        return;
    }
    for r in 0..m {
        for j in 0..n {
            let dot = |b: &[f32]| {
                (0..k)
                    .map(|i| gt[gt_index(k, r, i)] * b[zm_index(k, i, j)])
                    .sum()
            };
            out.put1(r, j, dot(z), dot(mk));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dual_avx2<E: Epilogue>(
    m: usize,
    n: usize,
    k: usize,
    gt: &[f32],
    z: &[f32],
    mk: &[f32],
    out: &mut E,
) {
    use std::arch::x86_64::*;
    for panel in 0..n / FP {
        let (zp, mp) = (
            z.as_ptr().add(panel * k * FP),
            mk.as_ptr().add(panel * k * FP),
        );
        for r0 in (0..m).step_by(MR) {
            let g = gt.as_ptr().add((r0 / MR) * k * MR);
            // [row][q0, q1, s0, s1]: 12 accumulators, plus 3 broadcasts and one streaming
            // vector: all 16 registers.
            let mut acc = [[_mm256_setzero_ps(); 4]; MR];
            for i in 0..k {
                let x = [
                    _mm256_broadcast_ss(&*g.add(i * MR)),
                    _mm256_broadcast_ss(&*g.add(i * MR + 1)),
                    _mm256_broadcast_ss(&*g.add(i * MR + 2)),
                ];
                for (v, src) in [zp, zp.add(8), mp, mp.add(8)].into_iter().enumerate() {
                    let b = _mm256_loadu_ps(src.add(i * FP));
                    for u in 0..MR {
                        acc[u][v] = _mm256_fmadd_ps(x[u], b, acc[u][v]);
                    }
                }
            }
            for (u, row) in acc.iter().enumerate().take(m - r0) {
                out.put16(r0 + u, panel * FP, [row[0], row[1]], [row[2], row[3]]);
            }
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
    use crate::rng::Rng;

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
            (1, 32, 16),
            (3, 32, 144),
            (14, 64, 272),
            (256, 32, 32),
            (5, 96, 0),
        ] {
            let (w, at) = (random(m * k, 1), random(k * np, 2));
            let (wm, atm) = (
                |r: usize, j: usize| w[w_index(m, r, j)],
                |j: usize, i: usize| at[at_index(k, j, i)],
            );
            let mut ht = vec![f32::NAN; m * np];
            product(m, np, k, &w, &at, &mut ht);
            for (got, want) in ht.iter().zip(reference(wm, atm, m, np, k)) {
                assert!(
                    (*got as f64 - want).abs() < 1e-4,
                    "({m},{np},{k}): {got} vs {want}"
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
        fn put16(
            &mut self,
            row: usize,
            col: usize,
            q: [std::arch::x86_64::__m256; 2],
            s: [std::arch::x86_64::__m256; 2],
        ) {
            let at = row * self.n + col;
            for h in 0..2 {
                // SAFETY: the slices have 8 floats from `at + 8h` (row < m, col + 16 <= n).
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

    #[test]
    fn dual_product_matches_a_plain_triple_loop() {
        for &(m, n, k) in &[
            (1, 16, 1),
            (3, 16, 64),
            (256, 32, 17),
            (7, 48, 64),
            (5, 16, 0),
        ] {
            let (gt, z, mk) = (random(gt_len(m, k), 3), random(k * n, 4), random(k * n, 5));
            let g = |r: usize, i: usize| gt[gt_index(k, r, i)];
            let mut out = Collect {
                n,
                q: vec![f32::NAN; m * n],
                s: vec![f32::NAN; m * n],
            };
            dual_product(m, n, k, &gt, &z, &mk, &mut out);
            let want_q = reference(g, |i, j| z[zm_index(k, i, j)], m, n, k);
            let want_s = reference(g, |i, j| mk[zm_index(k, i, j)], m, n, k);
            for (got, want) in out.q.iter().zip(want_q).chain(out.s.iter().zip(want_s)) {
                assert!(
                    (*got as f64 - want).abs() < 1e-4,
                    "({m},{n},{k}): {got} vs {want}"
                );
            }
        }
    }
}
