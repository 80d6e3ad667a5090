//! What this CPU can run: one probe for every vector kernel in the crate.

/// Whether the CPU has AVX2 and FMA, which the pipeline's bilinear sampler
/// (`transforms::simd`) and the fused head step's kernels (`train::fused_head::gemm`) need.
/// Elsewhere both use plain loops that compute the same values. std caches the answer after
/// the first call, so this is cheap in a hot loop.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
