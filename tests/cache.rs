//! The activation cache file: what reading finds (hit, missing, each reason a file is stale),
//! concurrent writers, and the sweep of temporaries left by writers that died.

mod common;
use common::TempDir;

use std::fs;
use std::path::Path;
use std::process::Command;

use fastai_native::cache::file::{self, Lookup, StaleReason, HEADER};
use fastai_native::cache::{CacheKey, Precision};
use tch::{Device, Kind, Tensor};

fn key(body: &str) -> CacheKey {
    CacheKey::new(body, "sz 8 center", "files", Precision::Float32)
}

/// (rows, cols) of distinct values, starting at `start`.
fn rows(n: i64, cols: i64, start: f32) -> Tensor {
    (Tensor::arange(n * cols, (Kind::Float, Device::Cpu)) + start as f64).view([n, cols])
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.contiguous().view(-1)).unwrap()
}

fn stale(path: &Path, key: &CacheKey) -> StaleReason {
    match file::read(path, key) {
        Lookup::Stale(why) => why,
        Lookup::Hit(_) => panic!("expected a stale file, read a hit"),
        Lookup::Missing => panic!("expected a stale file, found none"),
    }
}

#[test]
fn a_written_file_is_read_back_with_its_left_out_items() {
    let dir = TempDir::new("cache", "hit");
    let path = dir.path().join("x_act_resnet18_0_8.bin");
    let k = key("body");
    assert!(matches!(file::read(&path, &k), Lookup::Missing));
    let x = rows(4, 3, 0.5);
    // A body that really outputs NaN: the item stays kept (only the stored list says which
    // items were left out).
    let _ = x.get(0).get(1).fill_(f64::NAN);
    let _ = x.get(2).fill_(f64::NAN);
    file::write(&path, &k, &x, &[2]).unwrap();
    match file::read(&path, &k) {
        Lookup::Hit(stored) => {
            assert_eq!(stored.rows.size(), vec![4, 3]);
            assert_eq!(stored.left_out, vec![2]);
            let (got, want) = (values(&stored.rows), values(&x));
            for (g, w) in got.iter().zip(&want) {
                assert!(g == w || (g.is_nan() && w.is_nan()), "{got:?} vs {want:?}");
            }
        }
        _ => panic!("expected a hit"),
    }
    // Exact size: header, one index, 12 floats.
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        (HEADER + 8 + 12 * 4) as u64
    );
    // An empty split is a file too.
    let empty = dir.path().join("x_act_test_resnet18_0_8.bin");
    file::write(
        &empty,
        &k,
        &Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)),
        &[],
    )
    .unwrap();
    assert!(matches!(file::read(&empty, &k), Lookup::Hit(s) if s.rows.size() == vec![0, 3]));
}

#[test]
fn each_reason_a_file_cannot_be_used() {
    let dir = TempDir::new("cache", "stale");
    let path = dir.path().join("x_act_resnet18_0_8.bin");
    let k = key("body");
    file::write(&path, &k, &rows(3, 4, 0.0), &[]).unwrap();
    let good = fs::read(&path).unwrap();

    // Other weights, images or transforms: another key.
    assert_eq!(stale(&path, &key("other body")), StaleReason::KeyChanged);
    // The precision is part of the key.
    let bf16 = CacheKey::new("body", "sz 8 center", "files", Precision::Bfloat16);
    assert_ne!(bf16, k);
    assert_eq!(stale(&path, &bf16), StaleReason::KeyChanged);

    // Truncated: the header promises more than the file holds.
    fs::write(&path, &good[..good.len() - 3]).unwrap();
    assert!(matches!(
        stale(&path, &k),
        StaleReason::Truncated {
            rows: 3,
            cols: 4,
            ..
        }
    ));
    // Cut inside the header.
    fs::write(&path, &good[..HEADER - 5]).unwrap();
    assert!(matches!(stale(&path, &k), StaleReason::Truncated { .. }));

    // One flipped bit in the numbers, header intact: the checksum sees it.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 5] ^= 0x10;
    fs::write(&path, &bad).unwrap();
    assert_eq!(stale(&path, &k), StaleReason::Checksum);

    // A header whose shape wraps around to the file's size is refused, not allocated.
    let mut bad = good[..HEADER].to_vec();
    let at = HEADER - 32;
    bad[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    bad[at + 8..at + 16].copy_from_slice(&4u64.to_le_bytes());
    fs::write(&path, &bad).unwrap();
    assert!(matches!(stale(&path, &k), StaleReason::Truncated { .. }));

    // Not ours at all / ours, another format version (the NaN-rows format before this one).
    fs::write(&path, b"PK\x03\x04 a zip file, not activations").unwrap();
    assert_eq!(stale(&path, &k), StaleReason::NotACache);
    let mut old = b"FASTAIRS-ACT2\n".to_vec();
    old.extend_from_slice(&good[14..]);
    fs::write(&path, &old).unwrap();
    assert_eq!(stale(&path, &k), StaleReason::OtherVersion);
    fs::write(&path, b"").unwrap();
    assert_eq!(stale(&path, &k), StaleReason::NotACache);

    // A folder where the file should be: exists, cannot be read.
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    assert!(matches!(stale(&path, &k), StaleReason::Unreadable(_)));
    // ... nor written: the error names the file.
    let err = file::write(&path, &k, &rows(3, 4, 0.0), &[]).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    fs::remove_dir(&path).unwrap();

    // Written again, it is read again.
    file::write(&path, &k, &rows(3, 4, 0.0), &[]).unwrap();
    assert!(matches!(file::read(&path, &k), Lookup::Hit(_)));
}

/// Names of the temporaries in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    names.sort();
    names
}

#[test]
fn concurrent_writers_of_one_file_leave_one_whole_file() {
    let dir = TempDir::new("cache", "concurrent");
    let path = dir.path().join("x_act_resnet18_0_8.bin");
    let k = key("body");
    // Big enough that writes overlap; each writer's values are its own.
    let (n, cols) = (256, 1024);
    std::thread::scope(|s| {
        for w in 0..4 {
            let (path, k) = (&path, &k);
            s.spawn(move || {
                let x = rows(n, cols, 1e7 * w as f32);
                for _ in 0..5 {
                    file::write(path, k, &x, &[]).unwrap();
                    // A reader never sees a partial file.
                    assert!(matches!(file::read(path, k), Lookup::Hit(_)));
                }
            });
        }
    });
    let Lookup::Hit(stored) = file::read(&path, &k) else {
        panic!("expected a hit");
    };
    let got = values(&stored.rows);
    let writer = (0..4)
        .find(|&w| got == values(&rows(n, cols, 1e7 * w as f32)))
        .expect("the file is one writer's whole output");
    assert!(writer < 4);
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn temporaries_of_dead_writers_are_swept_live_ones_kept() {
    let dir = TempDir::new("cache", "sweep");
    let dead = dead_pid();
    assert!(!file::process_alive(dead));
    let mut live = Command::new("sleep").arg("30").spawn().unwrap();
    let live_pid = live.id();
    assert!(file::process_alive(live_pid));
    let me = std::process::id();
    let names = [
        format!("x_act_resnet18_0_8.bin.tmp{dead}-0"),
        format!("x_act_val_resnet18_0_8.tmp{dead}"), // written by an older version
        format!("x_act_resnet18_0_8.bin.tmp{live_pid}-3"),
        format!("x_act_resnet18_0_8.bin.tmp{me}-99"),
        format!("model.h5.tmp{dead}"), // not a cache file: not ours to remove
    ];
    for n in &names {
        fs::write(dir.path().join(n), b"half written").unwrap();
    }
    file::write(
        &dir.path().join("x_act_resnet18_0_8.bin"),
        &key("body"),
        &rows(2, 2, 0.0),
        &[],
    )
    .unwrap();
    let mut kept = vec![names[2].clone(), names[3].clone(), names[4].clone()];
    kept.sort();
    assert_eq!(leftovers(dir.path()), kept);
    let _ = live.kill();
    let _ = live.wait();
    // Now that writer is dead too: the next write sweeps its file.
    assert_eq!(file::sweep_dead_temporaries(dir.path()), 1);
    let mut kept = vec![names[3].clone(), names[4].clone()];
    kept.sort();
    assert_eq!(leftovers(dir.path()), kept);
}

// ---------------------------------------------------------------------------------------------
// The precompute session: key, file name, lookup, computation and write in one call.

use std::sync::Arc;

use fastai_native::cache::Split;
use fastai_native::data::dataset::{Dataset, Targets};
use fastai_native::data::loader::{thread_pool, DataLoader, LoaderConfig};
use fastai_native::models::{ConvNet, HeadChoice, Output};
use fastai_native::train::learner::Learner;
use fastai_native::train::precompute::{CacheDir, CacheStatus};
use fastai_native::transforms::{Border, CropKind, Pipeline, PipelineSpec};

const SZ: usize = 32;

/// A validation loader (centre crop, no augmentation) over `files` under `root`, which skips
/// undecodable files. The one place these tests build a loader.
fn loader(root: &Path, files: &[String]) -> DataLoader {
    let spec = PipelineSpec {
        sz: SZ,
        scale: None,
        pad: 0,
        pad_border: Border::Reflect,
        augs: Vec::new(),
        crop: CropKind::Center,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    let pipeline = Pipeline::new(spec).unwrap();
    let cfg = LoaderConfig {
        batch_size: 2,
        prefetch: 2,
        skip_bad: true,
        ..LoaderConfig::default()
    };
    let targets = Targets::Class((0..files.len() as i64).map(|i| i % 2).collect());
    let dataset = Dataset::from_files(root.to_path_buf(), files.to_vec(), targets).unwrap();
    DataLoader::new(
        Arc::new(dataset),
        Arc::new(pipeline),
        cfg,
        thread_pool(1).unwrap(),
    )
    .unwrap()
}

/// `PATH/train/<class>/<i>.png` photos (smooth gradients), and one broken file, third.
fn photo_folder(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for i in 0..5u32 {
        let class = if i % 2 == 0 { "cats" } else { "dogs" };
        let name = format!("train/{class}/{i}.png");
        let path = root.join(&name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        if i == 2 {
            fs::write(&path, b"\x89PNG\r\n\x1a\n not really").unwrap();
        } else {
            image::RgbImage::from_fn(40, 30, |x, y| {
                image::Rgb([(x * 6 + i * 20) as u8, (y * 8) as u8, ((x + y) * 3) as u8])
            })
            .save(&path)
            .unwrap();
        }
        files.push(name);
    }
    files
}

fn same_values(a: &Tensor, b: &Tensor) -> bool {
    let (a, b) = (values(a), values(b));
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

#[test]
fn precompute_computes_then_reads_and_recomputes_when_the_body_changes() {
    let dir = TempDir::new("cache", "session");
    let files = photo_folder(dir.path());
    let dl = loader(dir.path(), &files);
    let net = ConvNet::new(
        "resnet18",
        2,
        Output::LogSoftmax,
        None,
        0,
        HeadChoice::Fastai {
            ps: None,
            xtra_fc: None,
        },
    )
    .unwrap();
    let learner = Learner::new(net, Device::Cpu);
    let tmp = dir.path().join("tmp");
    let at = CacheDir {
        dir: &tmp,
        data_path: dir.path(),
    };
    let body = learner.body_key(Precision::Float32).unwrap();
    let mut batches = 0;
    let first = learner
        .precompute(&dl, Split::Train, at, &body, &mut |_| {
            batches += 1;
            Ok(())
        })
        .unwrap();
    assert!(
        matches!(first.status, CacheStatus::Computed),
        "{:?}",
        first.status
    );
    assert_eq!(batches, 3);
    assert_eq!(first.path, tmp.join("x_act_resnet18_0_32.bin"));
    // One row per listed file; the broken one is left out and named.
    assert_eq!(first.rows.size(), vec![5, 1024]);
    assert_eq!(first.kept.left_out(), &[2]);
    let broken = dir.path().join(&files[2]).display().to_string();
    assert_eq!(first.left_out_names, vec![broken]);
    // Reference: the body's features of each decodable image alone.
    for i in [0, 1, 3, 4] {
        let one = loader(dir.path(), &files[i..i + 1]);
        let alone = learner.features(&one, &mut |_| Ok(())).unwrap();
        assert!(
            first
                .rows
                .get(i as i64)
                .allclose(&alone.get(0), 1e-5, 1e-5, false),
            "row {i}"
        );
    }
    assert!(first.warning().is_none());

    // The same body reads the file: no batch computed, the same rows and items.
    let mut batches = 0;
    let again = learner
        .precompute(&dl, Split::Train, at, &body, &mut |_| {
            batches += 1;
            Ok(())
        })
        .unwrap();
    assert!(matches!(again.status, CacheStatus::Hit));
    assert_eq!(batches, 0);
    assert!(same_values(&again.rows, &first.rows));
    assert_eq!(again.kept, first.kept);
    assert_eq!(again.left_out_names, first.left_out_names);

    // Another precision, then other weights: the file is recomputed, with a warning naming it.
    let bf16 = learner.body_key(Precision::Bfloat16).unwrap();
    assert_ne!(bf16.id(), body.id());
    let other = learner
        .precompute(&dl, Split::Train, at, &bf16, &mut |_| Ok(()))
        .unwrap();
    assert!(matches!(
        other.status,
        CacheStatus::Recomputed(StaleReason::KeyChanged)
    ));
    let e = &learner.net.store().entries[0];
    tch::no_grad(|| {
        let _ = e.tensor.shallow_clone().fill_(0.5);
    });
    let changed = learner.body_key(Precision::Float32).unwrap();
    assert_ne!(changed.id(), body.id());
    let third = learner
        .precompute(&dl, Split::Train, at, &changed, &mut |_| Ok(()))
        .unwrap();
    let warning = third.warning().unwrap();
    assert!(matches!(
        third.status,
        CacheStatus::Recomputed(StaleReason::KeyChanged)
    ));
    assert!(warning.contains(&third.path.display().to_string()) && warning.contains("recomputed"));
    assert!(!same_values(&third.rows, &first.rows));

    // Validation files of the same folder get their own name; the left-out list is on disk.
    let val = learner
        .precompute(&dl, Split::Valid, at, &changed, &mut |_| Ok(()))
        .unwrap();
    assert_eq!(val.path, tmp.join("x_act_val_resnet18_0_32_train.bin"));
    let key_file = file::read(
        &third.path,
        &CacheKey::new("x", "y", "z", Precision::Float32),
    );
    assert!(matches!(key_file, Lookup::Stale(StaleReason::KeyChanged)));
    assert_eq!(leftovers(&tmp), Vec::<String>::new());
}
