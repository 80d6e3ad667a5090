//! The loader's contracts, checked from outside the crate: the order of every epoch is
//! `epoch_order`, `skip_bad` skips and reports broken files by index, the producer stays
//! within its prefetch bound, the order shards cleanly, and `drop_last` sizes the last batch.
//!
//! Each test writes small PNG/JPEG files into its own temporary folder (removed when done).
//! Every item's label is its own dataset index, so the labels of a batch say which items it
//! holds and in which order.

mod common;
use common::TempDir;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastai_native::data::dataset::{Dataset, ItemMaker, ItemTarget, MadeItem, Targets};
use fastai_native::data::loader::{thread_pool, DataLoader, LoaderConfig};
use fastai_native::train::learner::TensorSet;
use fastai_native::transforms::{Aug, Border, CropKind, Pipeline, PipelineSpec};
use fastai_native::util::rng::epoch_order;
use fastai_native::Error;

/// `n` images named `img<i>.png` / `.jpg` (alternating), each a flat colour of its own;
/// returns their names.
fn write_images(dir: &Path, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("img{i:02}.{}", if i % 2 == 0 { "png" } else { "jpg" });
            let colour = image::Rgb([(i * 20 % 256) as u8, 100, (255 - i * 7 % 256) as u8]);
            image::RgbImage::from_pixel(14, 11, colour)
                .save(dir.join(&name))
                .expect("write test image");
            name
        })
        .collect()
}

/// Labels that name the items: item i is labelled i.
fn index_labels(n: usize) -> Targets {
    Targets::Class((0..n as i64).collect())
}

/// A pipeline with random steps (crop, flip, lighting), so augmentation draws matter.
fn pipeline() -> Arc<Pipeline> {
    let spec = PipelineSpec {
        sz: 8,
        scale: None,
        pad: 0,
        pad_border: Border::Reflect,
        augs: vec![Aug::Flip { p: 0.5 }, Aug::Lighting { b: 0.1, c: 0.1 }],
        crop: CropKind::Random,
        mean: [0.5; 3],
        std: [0.25; 3],
    };
    Arc::new(Pipeline::new(spec).expect("a valid pipeline"))
}

fn loader(ds: &Arc<Dataset>, cfg: LoaderConfig, threads: usize) -> DataLoader {
    let pool = thread_pool(threads).expect("pool");
    DataLoader::new(ds.clone(), pipeline(), cfg, pool).expect("loader")
}

fn cfg(batch_size: usize, shuffle: bool, seed: u64) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle,
        seed,
        ..LoaderConfig::default()
    }
}

fn labels(t: &Targets) -> Vec<i64> {
    match t {
        Targets::Class(v) => v.clone(),
        other => panic!("expected class labels, got {other:?}"),
    }
}

/// (labels in batch order, batch sizes, pixels) of one epoch.
fn run_epoch(dl: &DataLoader, epoch: u64) -> (Vec<i64>, Vec<usize>, Vec<f32>) {
    let (mut ys, mut sizes, mut xs) = (Vec::new(), Vec::new(), Vec::new());
    for b in dl.iter(epoch) {
        let b = b.expect("batch");
        ys.extend(labels(&b.y));
        sizes.push(b.n);
        xs.extend_from_slice(&b.x);
        dl.recycle(b.x);
    }
    (ys, sizes, xs)
}

fn files_dataset(dir: &Path, n: usize) -> Arc<Dataset> {
    let names = write_images(dir, n);
    Arc::new(Dataset::from_files(dir.to_path_buf(), names, index_labels(n)).expect("dataset"))
}

#[test]
fn every_epoch_visits_the_items_in_epoch_order() {
    let dir = TempDir::new("loader", "order");
    let n = 11;
    let ds = files_dataset(dir.path(), n);
    let dl = loader(&ds, cfg(4, true, 1234), 2);
    let mut orders = Vec::new();
    for epoch in 0..4 {
        let (ys, sizes, _) = run_epoch(&dl, epoch);
        let want: Vec<i64> = epoch_order(n, 1234, epoch)
            .into_iter()
            .map(|i| i as i64)
            .collect();
        assert_eq!(ys, want, "epoch {epoch}");
        assert_eq!(sizes, vec![4, 4, 3]);
        let mut sorted = ys.clone();
        sorted.sort();
        assert_eq!(sorted, (0..n as i64).collect::<Vec<_>>(), "a permutation");
        orders.push(ys);
    }
    // Different epochs, different orders (4 equal permutations of 11 items: p < 1e-20).
    assert!(orders.windows(2).all(|w| w[0] != w[1]));

    // Same seed, same order and same pixels, whatever the thread count; another seed differs.
    let again = loader(&ds, cfg(4, true, 1234), 1);
    let (a, b) = (run_epoch(&dl, 2), run_epoch(&again, 2));
    assert_eq!(a.0, b.0);
    assert_eq!(a.2, b.2);
    let other = loader(&ds, cfg(4, true, 1235), 2);
    assert_ne!(run_epoch(&other, 2).0, a.0);

    // Without shuffling: dataset order, every epoch.
    let plain = loader(&ds, cfg(4, false, 1234), 2);
    assert_eq!(run_epoch(&plain, 3).0, (0..n as i64).collect::<Vec<_>>());
}

#[test]
fn in_memory_rows_shuffle_in_the_loaders_order() {
    let dir = TempDir::new("loader", "rows");
    let n = 9;
    let ds = files_dataset(dir.path(), n);
    let dl = loader(&ds, cfg(3, true, 77), 1);
    let rows = TensorSet {
        x: tch::Tensor::zeros([n as i64, 2], (tch::Kind::Float, tch::Device::Cpu)),
        y: tch::Tensor::zeros([n as i64], (tch::Kind::Int64, tch::Device::Cpu)),
        bs: 3,
        shuffle: true,
        seed: 77,
    };
    for epoch in 0..3 {
        assert_eq!(rows.order(epoch), dl.order(epoch), "epoch {epoch}");
    }
}

#[test]
fn the_order_shards_into_contiguous_blocks_that_cover_every_index_once() {
    for n in [0usize, 1, 7, 64, 101] {
        for k in 1..=5usize {
            let order = epoch_order(n, 42, 3);
            let shard = n.div_ceil(k).max(1);
            let mut seen = vec![0u32; n];
            for part in order.chunks(shard) {
                assert!(part.len() <= shard);
                for &i in part {
                    seen[i] += 1;
                }
            }
            assert!(order.chunks(shard).count() <= k, "n={n} k={k}");
            assert!(seen.iter().all(|&c| c == 1), "n={n} k={k}");
        }
    }
}

#[test]
fn skip_bad_leaves_out_broken_files_and_reports_their_indices() {
    let dir = TempDir::new("loader", "bad");
    let n = 7;
    let mut names = write_images(dir.path(), n);
    // Item 1: not an image at all; item 4: a PNG cut short.
    std::fs::write(dir.path().join(&names[1]), b"this is not a JPEG").unwrap();
    let png = std::fs::read(dir.path().join(&names[4])).unwrap();
    std::fs::write(dir.path().join(&names[4]), &png[..png.len() / 2]).unwrap();
    // Item 6: a file that vanished after the listing.
    std::fs::remove_file(dir.path().join(&names[6])).unwrap();
    names[6] = "gone.png".into();
    let ds = Arc::new(
        Dataset::from_files(dir.path().to_path_buf(), names.clone(), index_labels(n)).unwrap(),
    );
    let bad = |i: usize| (i, dir.path().join(&names[i]));

    // Without skip_bad the first broken file fails its batch, naming the file, and ends the
    // epoch.
    let strict = loader(&ds, cfg(3, false, 0), 2);
    let results: Vec<_> = strict.iter(0).collect();
    assert_eq!(results.len(), 1);
    match &results[0] {
        Err(e @ Error::Decode { path, .. }) => {
            assert_eq!(path, &bad(1).1, "{e}");
        }
        other => panic!("expected a decode error naming item 1, got {other:?}"),
    }

    // With skip_bad: the others come through in order, each batch lists its own skips, and
    // the pass reports them by dataset index.
    let lenient = loader(
        &ds,
        LoaderConfig {
            skip_bad: true,
            ..cfg(3, false, 0)
        },
        2,
    );
    let mut it = lenient.iter(0);
    let mut ys = Vec::new();
    let mut per_batch = Vec::new();
    for b in it.by_ref() {
        let b = b.expect("skip_bad batches do not fail");
        ys.extend(labels(&b.y));
        per_batch.push(b.skipped.clone());
        assert_eq!(b.x.len(), b.n * 3 * 8 * 8);
    }
    assert_eq!(ys, vec![0, 2, 3, 5]);
    // The third batch, [6], lost its only item: it is not yielded, but its skip is reported.
    assert_eq!(per_batch, vec![vec![bad(1)], vec![bad(4)]]);
    assert_eq!(it.skipped(), &[bad(1), bad(4), bad(6)]);
    assert_eq!(lenient.last_skipped(), vec![bad(1), bad(4), bad(6)]);

    // A batch that lost every item is not yielded empty; a new pass starts a new report.
    let single = loader(
        &ds,
        LoaderConfig {
            skip_bad: true,
            ..cfg(1, false, 5)
        },
        1,
    );
    assert_eq!(run_epoch(&single, 0).1, vec![1; 4]);
    assert_eq!(single.last_skipped(), vec![bad(1), bad(4), bad(6)]);
    let mut second = single.iter(1);
    assert_eq!(labels(&second.next().unwrap().unwrap().y), vec![0]);
    assert_eq!(
        single.last_skipped(),
        vec![],
        "the new pass has skipped nothing yet"
    );
    assert_eq!(labels(&second.next().unwrap().unwrap().y), vec![2]);
    assert_eq!(single.last_skipped(), vec![bad(1)]);
}

#[test]
fn the_producer_holds_at_most_prefetch_batches_ahead() {
    let dir = TempDir::new("loader", "prefetch");
    let n = 16;
    let ds = files_dataset(dir.path(), n);
    let prefetch = 2;
    let dl = loader(
        &ds,
        LoaderConfig {
            prefetch,
            ..cfg(1, false, 0)
        },
        2,
    );
    // A consumer that takes nothing: the producer fills the channel (prefetch batches), builds
    // one more, and blocks sending it.
    let mut it = dl.iter(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while dl.buffers_allocated() < prefetch + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(dl.buffers_allocated(), prefetch + 1);

    // A consumer that hands every batch back: the window (channel, the batch being built,
    // the one held) is all the memory the epoch ever needs.
    let mut ys = Vec::new();
    for b in it.by_ref() {
        let b = b.unwrap();
        ys.extend(labels(&b.y));
        dl.recycle(b.x);
    }
    assert_eq!(ys, (0..n as i64).collect::<Vec<_>>());
    assert!(
        dl.buffers_allocated() <= prefetch + 2,
        "{} buffers for a window of {}",
        dl.buffers_allocated(),
        prefetch + 2
    );

    // Dropping an iterator mid-epoch stops its producer: nothing more is built.
    let mut early = dl.iter(1);
    let _ = early.next();
    drop(early);
    let before = dl.buffers_allocated();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(dl.buffers_allocated(), before);
}

#[test]
fn drop_last_leaves_out_the_short_last_batch() {
    let dir = TempDir::new("loader", "droplast");
    let n = 10;
    let ds = files_dataset(dir.path(), n);
    let keep = loader(&ds, cfg(4, true, 9), 2);
    assert_eq!(keep.len(), 3);
    let (ys, sizes, _) = run_epoch(&keep, 0);
    assert_eq!(sizes, vec![4, 4, 2]);

    let drop = loader(
        &ds,
        LoaderConfig {
            drop_last: true,
            ..cfg(4, true, 9)
        },
        2,
    );
    assert_eq!(drop.len(), 2);
    let (ys_dropped, sizes, _) = run_epoch(&drop, 0);
    assert_eq!(sizes, vec![4, 4]);
    assert_eq!(
        ys_dropped,
        ys[..8].to_vec(),
        "the same order, minus the tail"
    );

    // An exact multiple loses nothing; fewer items than a batch give no batch at all.
    let exact = loader(
        &ds,
        LoaderConfig {
            drop_last: true,
            ..cfg(5, false, 0)
        },
        1,
    );
    assert_eq!((exact.len(), run_epoch(&exact, 0).1), (2, vec![5, 5]));
    let none = loader(
        &ds,
        LoaderConfig {
            drop_last: true,
            ..cfg(11, false, 0)
        },
        1,
    );
    assert_eq!((none.len(), run_epoch(&none, 0).1.len()), (0, 0));
}

/// Items made by code outside the crate (the Python path's shape): item i is `c` channels of
/// the value i, with its index as class label, and item `bad` (if any) has another size.
struct Maker {
    n: usize,
    c: usize,
    sz: usize,
    bad: Option<usize>,
    calls: std::sync::atomic::AtomicUsize,
}

impl ItemMaker for Maker {
    fn len(&self) -> usize {
        self.n
    }
    fn make(&self, index: usize) -> fastai_native::Result<MadeItem> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sz = if self.bad == Some(index) {
            self.sz + 1
        } else {
            self.sz
        };
        Ok(MadeItem {
            x: vec![index as f32; self.c * sz * sz],
            shape: [self.c, sz, sz],
            y: ItemTarget::Class(index as i64),
        })
    }
    fn describe(&self, index: usize) -> String {
        format!("Maker item {index}")
    }
}

fn made_loader(maker: Maker, cfg: LoaderConfig, threads: usize) -> (DataLoader, Arc<Maker>) {
    let maker = Arc::new(maker);
    let ds = Arc::new(Dataset::from_maker(maker.clone()));
    let dl = DataLoader::new_made(ds, Some(maker.sz), cfg, thread_pool(threads).expect("pool"))
        .expect("loader");
    (dl, maker)
}

#[test]
fn made_items_come_in_epoch_order_with_their_channels() {
    let maker = Maker {
        n: 11,
        c: 4,
        sz: 3,
        bad: None,
        calls: Default::default(),
    };
    let (dl, maker) = made_loader(maker, cfg(4, true, 9), 3);
    assert!(dl.is_made() && dl.pipeline().is_none());
    for epoch in 0..2 {
        let mut order = Vec::new();
        for b in dl.iter(epoch) {
            let b = b.expect("batch");
            assert_eq!((b.c, b.sz), (4, 3));
            assert_eq!(b.x.len(), b.n * 4 * 9);
            let ys = labels(&b.y);
            // Every value of an item's slot is its index: the slot holds that item.
            for (k, &i) in ys.iter().enumerate() {
                assert!(b.x[k * 36..(k + 1) * 36].iter().all(|&v| v == i as f32));
            }
            order.extend(ys.into_iter().map(|i| i as usize));
        }
        assert_eq!(order, epoch_order(11, 9, epoch));
    }
    // One call per item per epoch.
    assert_eq!(maker.calls.load(std::sync::atomic::Ordering::Relaxed), 22);
    assert_eq!(dl.channels(), Some(4));
}

#[test]
fn a_made_item_of_another_size_fails_its_batch_naming_the_item() {
    let maker = Maker {
        n: 6,
        c: 3,
        sz: 4,
        bad: Some(4),
        calls: Default::default(),
    };
    let (dl, _) = made_loader(maker, cfg(2, false, 0), 2);
    let got: Vec<_> = dl.iter(0).collect();
    assert_eq!(got.len(), 3, "two batches, then the error ends the epoch");
    assert!(got[0].is_ok() && got[1].is_ok());
    let msg = got[2]
        .as_ref()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("Maker item 4") && msg.contains("(3, 5, 5)") && msg.contains("(C, 4, 4)"),
        "{msg}"
    );
}
