//! AVX2 bilinear sampling of 8-bit RGB, eight output pixels at a time (the loader's hottest
//! loop after JPEG decoding: rotation and zoom sample every output pixel).

use std::arch::x86_64::*;

/// An 8-bit HWC RGB image the vector sampler may read: the CPU has AVX2 and FMA, the image is
/// at least 2×2 pixels, `img` holds all of its bytes and their offsets fit an i32. Checked once
/// per image by [`Gather::new`]; every read of [`Gather::row`] relies on it.
pub(super) struct Gather<'a> {
    img: &'a [u8],
    rows: usize,
    cols: usize,
}

impl<'a> Gather<'a> {
    /// The sampler for `img` (`rows × cols` pixels), or `None` where it cannot run (no AVX2/FMA,
    /// an image under 2×2 pixels or over 2³¹ bytes): the scalar sampler takes those.
    pub(super) fn new(img: &'a [u8], rows: usize, cols: usize) -> Option<Self> {
        let bytes = rows.checked_mul(cols)?.checked_mul(3)?;
        let fits = rows >= 2 && cols >= 2 && bytes < i32::MAX as usize && img.len() >= bytes;
        (fits && crate::util::cpu::has_avx2_fma()).then_some(Gather { img, rows, cols })
    }

    /// Samples the output columns j0..j0+n of one row, at (y, x) = (ry + j·dy, rx + j·dx), into
    /// the three planar rows `out` (stored units), n being the length of the shortest of them
    /// rounded down to a multiple of 8. Coordinates are meant to lie inside the image; any
    /// that do not are clamped into it, so no read leaves `img`.
    #[inline]
    pub(super) fn row(
        &self,
        ry_rx: (f32, f32),
        dy_dx: (f32, f32),
        j0: usize,
        out: [&mut [f32]; 3],
    ) {
        // SAFETY: a `Gather` exists only where the CPU has AVX2 and FMA (`new`).
        unsafe { self.row_avx2(ry_rx, dy_dx, j0, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn row_avx2(
        &self,
        (ry, rx): (f32, f32),
        (dy, dx): (f32, f32),
        j0: usize,
        out: [&mut [f32]; 3],
    ) {
        let n = out.iter().map(|o| o.len()).min().unwrap_or(0) / 8 * 8;
        let stride = _mm256_set1_epi32((self.cols * 3) as i32);
        let three = _mm256_set1_epi32(3);
        let zero = _mm256_setzero_si256();
        let (ymaxi, xmaxi) = (
            _mm256_set1_epi32(self.rows as i32 - 2),
            _mm256_set1_epi32(self.cols as i32 - 2),
        );
        let byte = _mm256_set1_epi32(0xFF);
        let iota = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
        let (ryv, rxv, dyv, dxv) = (
            _mm256_set1_ps(ry),
            _mm256_set1_ps(rx),
            _mm256_set1_ps(dy),
            _mm256_set1_ps(dx),
        );
        let [or, og, ob] = out;
        let base = self.img.as_ptr() as *const i32;
        let mut k = 0;
        while k < n {
            let jv = _mm256_add_ps(_mm256_set1_ps((j0 + k) as f32), iota);
            // Same rounding as the scalar path: a multiply, then an add (not fused).
            let y = _mm256_add_ps(ryv, _mm256_mul_ps(jv, dyv));
            let x = _mm256_add_ps(rxv, _mm256_mul_ps(jv, dxv));
            let yi = _mm256_min_epi32(
                _mm256_max_epi32(_mm256_cvttps_epi32(_mm256_floor_ps(y)), zero),
                ymaxi,
            );
            let xi = _mm256_min_epi32(
                _mm256_max_epi32(_mm256_cvttps_epi32(_mm256_floor_ps(x)), zero),
                xmaxi,
            );
            // Clamped to [0, 1] so a coordinate outside the image reads its nearest edge.
            let one = _mm256_set1_ps(1.0);
            let fy = _mm256_min_ps(
                _mm256_max_ps(
                    _mm256_sub_ps(y, _mm256_cvtepi32_ps(yi)),
                    _mm256_setzero_ps(),
                ),
                one,
            );
            let fx = _mm256_min_ps(
                _mm256_max_ps(
                    _mm256_sub_ps(x, _mm256_cvtepi32_ps(xi)),
                    _mm256_setzero_ps(),
                ),
                one,
            );
            // Byte offsets of the top-left tap (p) and the one below (q). Four bytes are read
            // per gather: at p they are R G B of the left tap (and R of the right one); the
            // right tap is read at p + 2 (B of the left, then R G B) so that the last pixel of
            // the image never reads past its end.
            let p = _mm256_add_epi32(
                _mm256_mullo_epi32(yi, stride),
                _mm256_mullo_epi32(xi, three),
            );
            let q = _mm256_add_epi32(p, stride);
            let two = _mm256_set1_epi32(2);
            // SAFETY: 0 <= yi <= rows − 2 and 0 <= xi <= cols − 2 (clamped above), so the
            // furthest read, 4 bytes at q + 2, ends at byte ((rows − 1)·cols + cols − 2)·3 + 5,
            // which is rows·cols·3 − 1: inside `img` (`Gather::new` checked its length, and that
            // these offsets fit an i32).
            let (a, b, c, d) = unsafe {
                (
                    _mm256_i32gather_epi32::<1>(base, p),
                    _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(p, two)),
                    _mm256_i32gather_epi32::<1>(base, q),
                    _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(q, two)),
                )
            };
            let ch = |v: __m256i, shift: i32| -> __m256i {
                match shift {
                    0 => _mm256_and_si256(v, byte),
                    8 => _mm256_and_si256(_mm256_srli_epi32::<8>(v), byte),
                    16 => _mm256_and_si256(_mm256_srli_epi32::<16>(v), byte),
                    _ => _mm256_srli_epi32::<24>(v),
                }
            };
            let lerp = |sa: i32, sb: i32| -> __m256 {
                let (va, vb) = (_mm256_cvtepi32_ps(ch(a, sa)), _mm256_cvtepi32_ps(ch(b, sb)));
                let (vc, vd) = (_mm256_cvtepi32_ps(ch(c, sa)), _mm256_cvtepi32_ps(ch(d, sb)));
                let top = _mm256_fmadd_ps(_mm256_sub_ps(vb, va), fx, va);
                let bot = _mm256_fmadd_ps(_mm256_sub_ps(vd, vc), fx, vc);
                _mm256_fmadd_ps(_mm256_sub_ps(bot, top), fy, top)
            };
            // SAFETY: k + 8 <= n, and n is at most the length of every output row.
            unsafe {
                _mm256_storeu_ps(or.as_mut_ptr().add(k), lerp(0, 8));
                _mm256_storeu_ps(og.as_mut_ptr().add(k), lerp(8, 16));
                _mm256_storeu_ps(ob.as_mut_ptr().add(k), lerp(16, 24));
            }
            k += 8;
        }
    }
}
