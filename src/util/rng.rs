//! A small random number generator with independent, reproducible streams: augmentation draws
//! per (seed, epoch, item), shuffling per epoch, dropout masks per batch.

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

// ---------------------------------------------------------------------------------------------
// Named streams and the one epoch order

/// What a random draw is for. Each purpose draws from its own stream, so the draws of one can
/// never repeat or shift those of another (shuffling never shifts an image's augmentation).
/// The numbers are part of every seeded result (batches, cached activations): keep them stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Stream {
    /// A loader's augmentation of one item in one epoch.
    Aug = 1,
    /// The order of an epoch (`epoch_order`).
    Shuffle = 2,
    /// `ds[i]` in Python: each access draws anew, numbered apart from the loaders' epochs.
    DatasetItem = 3,
    /// Test-time augmentation: one numbered pass per set of draws.
    Tta = 4,
    /// Dropout masks.
    Dropout = 5,
}

impl Stream {
    /// The generator of this stream for one (seed, epoch or pass, item).
    pub fn rng(self, seed: u64, epoch: u64, index: u64) -> Rng {
        Rng::for_item(seed, self, epoch, index)
    }
}

/// The order in which epoch `epoch` of a shuffled set of `n` items visits them: a permutation
/// drawn from (seed, epoch) alone. Every shuffled source uses this one function (the image
/// loader, the learner's in-memory rows, Python's untransformed arrays), so the same seed gives
/// the same order whichever path serves the items, and the thread count never matters.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = Stream::Shuffle.rng(seed, epoch, 0);
    // Fisher-Yates from the top: position i takes one of the i + 1 items not yet placed.
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        idx.swap(i, j);
    }
    idx
}

#[cfg(test)]
mod order_tests {
    use super::{epoch_order, Rng, Stream};

    #[test]
    fn epoch_order_is_a_seeded_fisher_yates_on_the_shuffle_stream() {
        // Replayed by hand: the swaps a textbook Fisher-Yates makes with the shuffle stream's
        // draws (the stream is fixed: changing it reorders every seeded run).
        let (n, seed, epoch) = (9, 77, 3);
        let mut rng = Rng::for_item(seed, Stream::Shuffle, epoch, 0);
        let mut want: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let r = rng.next_u64();
            let j = ((r as u128 * (i as u128 + 1)) >> 64) as usize;
            want.swap(i, j);
        }
        assert_eq!(epoch_order(n, seed, epoch), want);
        assert_eq!(epoch_order(0, seed, epoch), Vec::<usize>::new());
        assert_eq!(epoch_order(1, seed, epoch), vec![0]);
    }

    #[test]
    fn streams_are_independent() {
        let a = Stream::Aug.rng(5, 0, 0).next_u64();
        let t = Stream::Tta.rng(5, 0, 0).next_u64();
        let d = Stream::DatasetItem.rng(5, 0, 0).next_u64();
        assert!(a != t && a != d && t != d);
    }
}
