//! A small random number generator with independent, reproducible streams: augmentation draws
//! per (seed, epoch, item), shuffling per epoch, dropout masks per batch.

/// What a generator is for. Each purpose draws from its own stream, so shuffling never shifts
/// an image's augmentation and the other way round. The numbers are part of every seeded
/// result (batches, cached activations): changing one changes what a seed gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// An image's augmentation parameters, per (seed, epoch, item).
    Aug = 1,
    /// The order of an epoch, per (seed, epoch).
    Shuffle = 2,
}

/// SplitMix64: tiny, fast and statistically fine for augmentation draws; we need independent
/// streams per (seed, epoch, index), not cryptographic quality.
#[derive(Clone, Debug)]
pub struct Rng(u64);

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(mix64(seed))
    }
    /// A generator for one purpose, one epoch and one item, independent of every other triple.
    pub fn for_item(seed: u64, stream: Stream, epoch: u64, index: u64) -> Self {
        let a = mix64(seed ^ 0x5851_f42d_4c95_7f2d);
        let b = mix64(a ^ (stream as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let c = mix64(b ^ epoch.wrapping_mul(0xd1b5_4a32_d192_ed03));
        Rng(mix64(c ^ index.wrapping_mul(0x8cb9_2ba7_2f3d_8dd7)))
    }
    /// What the `d`-th call of `next_u64` from this state returns (0-based), without
    /// advancing: SplitMix's state moves by a constant, so any draw can be computed directly.
    #[inline]
    pub fn nth(&self, d: u64) -> u64 {
        mix64(
            self.0
                .wrapping_add(d.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        )
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    /// Uniform integer in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift; the bias for our tiny n is far below anything observable.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::{Rng, Stream};

    #[test]
    fn streams_differ_and_repeat() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::for_item(1, Stream::Aug, 0, 7).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_item(1, Stream::Aug, 0, 7).next_u64(),
            Rng::for_item(1, Stream::Aug, 1, 7).next_u64()
        );
        assert_ne!(
            Rng::for_item(1, Stream::Aug, 0, 7).next_u64(),
            Rng::for_item(1, Stream::Shuffle, 0, 7).next_u64()
        );
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(4) < 4);
        }
    }

    #[test]
    fn nth_is_the_stream_without_advancing() {
        let start = Rng::new(42);
        let mut r = start.clone();
        for d in 0..100 {
            assert_eq!(start.nth(d), r.next_u64(), "draw {d}");
        }
    }
}
