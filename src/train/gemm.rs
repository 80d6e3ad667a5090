//! The two single-threaded float32 matrix products of the fused head step
//! (`fused_head.rs`), on operands that the step writes directly in the layouts the kernels
//! read front to back, so nothing is packed at run time.
//!
//! Why not libtorch's `mm`: the head step splits each product between the cores by hand, and
//! MKL inside libtorch runs its own OpenMP team whose spinning threads then fight ours; run
//! single-threaded on these shapes (one side is the batch, 64) it also reaches only 60-75% of
//! a core's FMA peak here. These are the textbook register-blocked kernels: a tile of C held
//! in 12 AVX2 registers while k runs, A read as broadcast scalars from [`MicroPanels`], B read
//! as 16 contiguous floats from [`Panels`].
//!
//! - [`product`]: `C = A·B` stored row-major (6 × 16 tiles).
//! - [`dual_product`]: `C1 = A1·B` and `C2 = A2·B` at once (3 × 16 tiles of each), handed to
//!   an [`Epilogue`] tile row by tile row, so the head step folds its SGD update into it.
//!
//! They need AVX2 and FMA ([`available`]); elsewhere a plain loop computes the same values
//! (slowly: the head step is not used there, only the unit tests run that path).

/// Columns of B (and C) per panel.
pub const NR: usize = 16;
/// Rows of A per micro-panel in [`product`] and in [`dual_product`].
pub const MR: usize = 6;
pub const MR_DUAL: usize = 3;

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

/// B's layout: a k × n matrix as column panels of 16, element (p, j) at
/// `(j / 16)·k·16 + p·16 + j % 16`, so one panel is k rows of 16 contiguous floats.
pub struct Panels;

impl Panels {
    pub fn len(k: usize, n: usize) -> usize {
        n.div_ceil(NR) * k * NR
    }
    #[inline(always)]
    pub fn index(k: usize, p: usize, j: usize) -> usize {
        (j / NR) * k * NR + p * NR + j % NR
    }
}

/// A's layout: an m × k matrix as row micro-panels of `mr` rows, element (i, p) at
/// `(i / mr)·k·mr + p·mr + i % mr`, so a kernel reads `mr` contiguous floats per step of k.
/// Rows past m (up to a whole micro-panel) are padding the producer sets to zero.
pub struct MicroPanels;

impl MicroPanels {
    pub fn len(m: usize, k: usize, mr: usize) -> usize {
        m.div_ceil(mr) * k * mr
    }
    #[inline(always)]
    pub fn index(k: usize, mr: usize, i: usize, p: usize) -> usize {
        (i / mr) * k * mr + p * mr + i % mr
    }
}

/// `c (m × n, row stride n) = A (m × k, micro-panels of 6) · B (k × n, panels)`; n must be a
/// multiple of 16. B's panels are the outer loop: one panel (16·k floats) is read from cache
/// by every micro-panel of A in turn.
pub fn product(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(n % NR == 0, "product: n = {n} is not a multiple of {NR}");
    assert!(
        a.len() >= MicroPanels::len(m, k, MR) && b.len() >= Panels::len(k, n) && c.len() >= m * n,
        "product: operand too short"
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2 and FMA are present; the asserts bound every index the kernel forms.
        unsafe { product_avx2(m, n, k, a, b, c) };
        return;
    }
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|p| a[MicroPanels::index(k, MR, i, p)] * b[Panels::index(k, p, j)])
                .sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    use std::arch::x86_64::*;
    for panel in 0..n / NR {
        let bp = b.as_ptr().add(panel * k * NR);
        for blk in 0..m.div_ceil(MR) {
            let ap = a.as_ptr().add(blk * k * MR);
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for p in 0..k {
                let b0 = _mm256_loadu_ps(bp.add(p * NR));
                let b1 = _mm256_loadu_ps(bp.add(p * NR + 8));
                for (u, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*ap.add(p * MR + u));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
            }
            for (u, row) in acc.iter().enumerate() {
                let i = blk * MR + u;
                if i < m {
                    let out = c.as_mut_ptr().add(i * n + panel * NR);
                    _mm256_storeu_ps(out, row[0]);
                    _mm256_storeu_ps(out.add(8), row[1]);
                }
            }
        }
    }
}

/// Eight consecutive columns of one row of the two products of [`dual_product`].
pub trait Epilogue {
    /// `c1`, `c2`: columns `col..col + 8` of row `row` of C1 and C2.
    #[cfg(target_arch = "x86_64")]
    fn put8(
        &mut self,
        row: usize,
        col: usize,
        c1: std::arch::x86_64::__m256,
        c2: std::arch::x86_64::__m256,
    );
    /// One value of each (the portable path).
    fn put1(&mut self, row: usize, col: usize, c1: f32, c2: f32);
}

/// Rows of A per chunk in [`dual_product`]: both A chunks (2 · 256 · k floats, 128 KiB at
/// k = 64) stay in L2 while B's panels pass.
const DUAL_ROWS: usize = 256;

/// `C1 = A1·B` and `C2 = A2·B` (A1, A2: m × k in micro-panels of 3; B: k × n in panels; n a
/// multiple of 16), each tile handed to `out`. Visits rows in chunks of 256, B's panels
/// within a chunk, so `out` touches a matrix stored in panels of 16 columns in runs of 256
/// contiguous rows.
pub fn dual_product<E: Epilogue>(
    m: usize,
    n: usize,
    k: usize,
    a1: &[f32],
    a2: &[f32],
    b: &[f32],
    out: &mut E,
) {
    assert!(
        n % NR == 0,
        "dual_product: n = {n} is not a multiple of {NR}"
    );
    let la = MicroPanels::len(m, k, MR_DUAL);
    assert!(
        a1.len() >= la && a2.len() >= la && b.len() >= Panels::len(k, n),
        "dual_product: operand too short"
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2 and FMA are present; the asserts bound every index the kernel forms.
        unsafe { dual_avx2(m, n, k, a1, a2, b, out) };
        return;
    }
    for i in 0..m {
        for j in 0..n {
            let dot = |a: &[f32]| {
                (0..k)
                    .map(|p| a[MicroPanels::index(k, MR_DUAL, i, p)] * b[Panels::index(k, p, j)])
                    .sum()
            };
            out.put1(i, j, dot(a1), dot(a2));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dual_avx2<E: Epilogue>(
    m: usize,
    n: usize,
    k: usize,
    a1: &[f32],
    a2: &[f32],
    b: &[f32],
    out: &mut E,
) {
    use std::arch::x86_64::*;
    let blocks = m.div_ceil(MR_DUAL);
    let per_chunk = DUAL_ROWS / MR_DUAL;
    for chunk in (0..blocks).step_by(per_chunk) {
        for panel in 0..n / NR {
            let bp = b.as_ptr().add(panel * k * NR);
            for blk in chunk..(chunk + per_chunk).min(blocks) {
                let (p1, p2) = (
                    a1.as_ptr().add(blk * k * MR_DUAL),
                    a2.as_ptr().add(blk * k * MR_DUAL),
                );
                let mut c1 = [[_mm256_setzero_ps(); 2]; MR_DUAL];
                let mut c2 = [[_mm256_setzero_ps(); 2]; MR_DUAL];
                // 12 accumulators, 2 rows of B and one broadcast: 15 of the 16 registers, so
                // each broadcast is consumed before the next is loaded.
                for p in 0..k {
                    let b0 = _mm256_loadu_ps(bp.add(p * NR));
                    let b1 = _mm256_loadu_ps(bp.add(p * NR + 8));
                    for u in 0..MR_DUAL {
                        let x = _mm256_broadcast_ss(&*p1.add(p * MR_DUAL + u));
                        c1[u][0] = _mm256_fmadd_ps(x, b0, c1[u][0]);
                        c1[u][1] = _mm256_fmadd_ps(x, b1, c1[u][1]);
                        let x = _mm256_broadcast_ss(&*p2.add(p * MR_DUAL + u));
                        c2[u][0] = _mm256_fmadd_ps(x, b0, c2[u][0]);
                        c2[u][1] = _mm256_fmadd_ps(x, b1, c2[u][1]);
                    }
                }
                for u in 0..MR_DUAL {
                    let i = blk * MR_DUAL + u;
                    if i < m {
                        out.put8(i, panel * NR, c1[u][0], c2[u][0]);
                        out.put8(i, panel * NR + 8, c1[u][1], c2[u][1]);
                    }
                }
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

    fn micro(a: &[f32], m: usize, k: usize, mr: usize) -> Vec<f32> {
        let mut out = vec![0.0; MicroPanels::len(m, k, mr)];
        for i in 0..m {
            for p in 0..k {
                out[MicroPanels::index(k, mr, i, p)] = a[i * k + p];
            }
        }
        out
    }

    fn panels(b: &[f32], k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; Panels::len(k, n)];
        for p in 0..k {
            for j in 0..n {
                out[Panels::index(k, p, j)] = b[p * n + j];
            }
        }
        out
    }

    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum();
            }
        }
        c
    }

    /// Partial micro-panels, one and several panels, k from 0, against a float64 loop.
    #[test]
    fn product_matches_a_plain_triple_loop() {
        for &(m, n, k) in &[
            (1, 16, 1),
            (6, 16, 5),
            (13, 48, 33),
            (66, 64, 300),
            (7, 32, 0),
        ] {
            let (a, b) = (random(m * k, 1), random(k * n, 2));
            let mut c = vec![f32::NAN; m * n];
            product(m, n, k, &micro(&a, m, k, MR), &panels(&b, k, n), &mut c);
            for (got, want) in c.iter().zip(reference(&a, &b, m, n, k)) {
                assert!(
                    (*got as f64 - want).abs() < 1e-4,
                    "({m},{n},{k}): {got} vs {want}"
                );
            }
        }
    }

    struct Collect {
        n: usize,
        c1: Vec<f32>,
        c2: Vec<f32>,
    }

    impl Epilogue for Collect {
        #[cfg(target_arch = "x86_64")]
        fn put8(
            &mut self,
            row: usize,
            col: usize,
            c1: std::arch::x86_64::__m256,
            c2: std::arch::x86_64::__m256,
        ) {
            let at = row * self.n + col;
            // SAFETY: the slices have 8 floats from `at` (row < m, col + 8 <= n).
            unsafe {
                std::arch::x86_64::_mm256_storeu_ps(self.c1[at..at + 8].as_mut_ptr(), c1);
                std::arch::x86_64::_mm256_storeu_ps(self.c2[at..at + 8].as_mut_ptr(), c2);
            }
        }
        fn put1(&mut self, row: usize, col: usize, c1: f32, c2: f32) {
            self.c1[row * self.n + col] = c1;
            self.c2[row * self.n + col] = c2;
        }
    }

    #[test]
    fn dual_product_matches_a_plain_triple_loop() {
        for &(m, n, k) in &[
            (1, 16, 1),
            (3, 16, 64),
            (260, 32, 17),
            (1024, 16, 64),
            (5, 48, 0),
        ] {
            let (a1, a2, b) = (random(m * k, 3), random(m * k, 4), random(k * n, 5));
            let mut out = Collect {
                n,
                c1: vec![f32::NAN; m * n],
                c2: vec![f32::NAN; m * n],
            };
            dual_product(
                m,
                n,
                k,
                &micro(&a1, m, k, MR_DUAL),
                &micro(&a2, m, k, MR_DUAL),
                &panels(&b, k, n),
                &mut out,
            );
            for (got, want) in out
                .c1
                .iter()
                .zip(reference(&a1, &b, m, n, k))
                .chain(out.c2.iter().zip(reference(&a2, &b, m, n, k)))
            {
                assert!(
                    (*got as f64 - want).abs() < 1e-4,
                    "({m},{n},{k}): {got} vs {want}"
                );
            }
        }
    }
}
