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

/// Whether the CPU computes bfloat16 products natively (AVX512-BF16 or AMX-BF16), which makes
/// bfloat16 autocast about twice as fast as float32 there; without them libtorch emulates
/// bfloat16 and autocast is slower. The learners' default precision follows it. False on other
/// architectures and wherever the probe cannot tell.
pub fn has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16") || x86::has_amx_bf16()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    /// AMX-BF16, read from CPUID by hand: std's `is_x86_feature_detected!("amx-bf16")` is
    /// still unstable (rust-lang/rust#126622). The CPU must report it (leaf 7 subleaf 0, EDX
    /// bit 22) and the OS must save the tile state (XCR0 bits 17 and 18), as std checks for
    /// the features it knows.
    pub(super) fn has_amx_bf16() -> bool {
        const OSXSAVE: u32 = 1 << 27; // leaf 1, ECX: XGETBV is usable
        const AMX_BF16: u32 = 1 << 22; // leaf 7 subleaf 0, EDX
        const TILE_STATE: u64 = (1 << 17) | (1 << 18); // XCR0: TILECFG and TILEDATA
        if __cpuid(0).eax < 7 || __cpuid(1).ecx & OSXSAVE == 0 {
            return false;
        }
        if __cpuid_count(7, 0).edx & AMX_BF16 == 0 {
            return false;
        }
        // SAFETY: OSXSAVE is set, so the OS has enabled XGETBV (it would fault otherwise).
        let os_state = unsafe { xcr0() };
        os_state & TILE_STATE == TILE_STATE
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xcr0() -> u64 {
        _xgetbv(0)
    }
}

#[cfg(test)]
mod tests {
    /// The probe against the kernel's own reading of CPUID, where there is one.
    #[test]
    fn native_bf16_agrees_with_proc_cpuinfo() {
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return;
        };
        let Some(flags) = info.lines().find(|l| l.starts_with("flags")) else {
            return;
        };
        let has = |f: &str| flags.split_whitespace().any(|w| w == f);
        assert_eq!(
            super::has_native_bf16(),
            has("avx512_bf16") || has("amx_bf16")
        );
    }
}
