//! Which rows each rank of a data-parallel fit reads in an epoch.
//!
//! Every rank computes the same epoch order (same seed), cuts it into global batches of
//! `bs × world` rows and takes its `bs`-row slice of each, so that one step of `world` ranks
//! at batch `bs` sees exactly the rows one process at batch `bs × world` would. The last,
//! partial global batch of `m` rows is split evenly: each rank takes `ceil(m / world)` rows,
//! the shortfall padded with the first rows of the epoch order (as torch's
//! `DistributedSampler` pads), so every rank runs the same number of equally sized steps and
//! the gradient average stays the global batch's mean. With `drop_last` it is left out, as
//! on one process.

/// One rank's place in the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    pub fn new(rank: usize, world: usize) -> crate::Result<Self> {
        if world == 0 || rank >= world {
            return Err(crate::Error::InvalidArgument(format!(
                "shard: rank {rank} is not in a group of {world}"
            )));
        }
        Ok(Shard { rank, world })
    }

    /// The batches (dataset indices) this rank reads from `order`.
    pub fn batches(&self, order: &[usize], bs: usize, drop_last: bool) -> Vec<Vec<usize>> {
        let bs = bs.max(1);
        let global = bs * self.world;
        let mut out = Vec::new();
        for chunk in order.chunks(global) {
            let m = chunk.len();
            if m == global {
                out.push(chunk[self.rank * bs..(self.rank + 1) * bs].to_vec());
                continue;
            }
            if drop_last {
                break;
            }
            let per = m.div_ceil(self.world);
            let padded: Vec<usize> = chunk
                .iter()
                .copied()
                .chain(order.iter().copied().cycle())
                .take(per * self.world)
                .collect();
            out.push(padded[self.rank * per..(self.rank + 1) * per].to_vec());
        }
        out
    }

    /// How many batches each rank runs over `n` rows.
    pub fn num_batches(&self, n: usize, bs: usize, drop_last: bool) -> usize {
        let global = bs.max(1) * self.world;
        if drop_last {
            n / global
        } else {
            n.div_ceil(global)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn full_global_batches_are_cut_in_rank_order_and_the_last_is_padded() {
        let order: Vec<usize> = vec![9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 10];
        let r0 = Shard::new(0, 2).unwrap().batches(&order, 2, false);
        let r1 = Shard::new(1, 2).unwrap().batches(&order, 2, false);
        assert_eq!(r0, vec![vec![9, 8], vec![5, 4], vec![1, 0]]);
        assert_eq!(r1, vec![vec![7, 6], vec![3, 2], vec![10, 9]]);
        assert_eq!(Shard::new(1, 2).unwrap().num_batches(11, 2, false), 3);
        let r1 = Shard::new(1, 2).unwrap().batches(&order, 2, true);
        assert_eq!(r1, vec![vec![7, 6], vec![3, 2]]);
        // One rank: plain consecutive batches.
        let one = Shard::new(0, 1).unwrap().batches(&order, 4, false);
        assert_eq!(
            one,
            vec![vec![9, 8, 7, 6], vec![5, 4, 3, 2], vec![1, 0, 10]]
        );
        assert!(Shard::new(2, 2).is_err());
    }
}
