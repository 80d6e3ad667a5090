//! A fixed team of threads for the phases of the hand-written head step
//! (`fused_head/mod.rs`): the calling thread is member 0, and T − 1 helper threads wait for the
//! next job by spinning for a while, then sleeping.
//!
//! Why not a rayon pool's `broadcast`: each phase is only 0.1-1 ms of work, three times a
//! batch, and a broadcast from outside the pool puts the caller to sleep while T workers run
//! (T + 1 threads for T cores) and wakes it through the kernel at the end, which on a virtual
//! machine costs tens of microseconds each time. Here the caller does its own share, and the
//! hand-over is one atomic counter that the helpers watch.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it sleeps: longer than the serial work between two
/// phases of a step (the loss, the small parameters, the learner's bookkeeping), much
/// shorter than anything a user would notice as a busy core.
const SPIN: Duration = Duration::from_micros(300);

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped by the caller for every job; a helper runs the job when it sees a new value.
    generation: AtomicU64,
    /// The current job, written before `generation` is bumped and read after it is seen.
    job: UnsafeCell<Option<Job>>,
    /// Helpers finished with the current job.
    done: AtomicUsize,
    /// Helpers asleep (or about to sleep) on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    quit: AtomicBool,
    /// A helper's job panicked (the caller re-raises it).
    panicked: AtomicBool,
}

// SAFETY: `job` is written only by the caller while no helper reads it (between jobs, all
// helpers have counted themselves done) and read by helpers only during a job; the
// generation counter orders the two (release on bump, acquire on read).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
}

impl Team {
    /// A team of `size` members (the caller and size − 1 helper threads, named `name-i`).
    pub fn new(size: usize, name: &str) -> std::io::Result<Team> {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            quit: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let mut team = Team {
            shared,
            helpers: Vec::new(),
        };
        for member in 1..size.max(1) {
            let shared = team.shared.clone();
            // On error the team built so far is dropped, which stops its helpers.
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{member}"))
                .spawn(move || helper(&shared, member))?;
            team.helpers.push(handle);
        }
        Ok(team)
    }

    /// Runs `f(member)` on every member at once and returns when all are done. A panic in
    /// any member is raised again here, after all have finished.
    pub fn run(&self, f: impl Fn(usize) + Sync) {
        let helpers = self.helpers.len();
        if helpers == 0 {
            return f(0);
        }
        let sh = &*self.shared;
        let job: &(dyn Fn(usize) + Sync) = &f;
        // SAFETY: the lifetime is erased only for the duration of this call: every helper
        // has finished with the job (`done == helpers`) before `run` returns or unwinds,
        // and the slot is cleared then.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(job) };
        // SAFETY: no job is running (the previous `run` waited for all helpers).
        unsafe { *sh.job.get() = Some(job) };
        sh.done.store(0, Ordering::Relaxed);
        sh.generation.fetch_add(1, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let mut spins = 0u32;
        while sh.done.load(Ordering::Acquire) < helpers {
            spins = spins.wrapping_add(1);
            if spins % 1024 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // SAFETY: all helpers are done with the job.
        unsafe { *sh.job.get() = None };
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if sh.panicked.swap(false, Ordering::Relaxed) {
            panic!("a thread of the head step panicked");
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.quit.store(true, Ordering::SeqCst);
        sh.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _guard = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

fn helper(sh: &Shared, member: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin first (the next phase usually follows within
        // microseconds), then sleep until the caller wakes us.
        let start = Instant::now();
        let mut spins = 0u32;
        let mut current = sh.generation.load(Ordering::Acquire);
        while current == seen {
            spins = spins.wrapping_add(1);
            if spins % 256 == 0 && start.elapsed() > SPIN {
                sh.sleepers.fetch_add(1, Ordering::SeqCst);
                let mut guard = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
                while sh.generation.load(Ordering::SeqCst) == seen {
                    guard = sh.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                drop(guard);
                sh.sleepers.fetch_sub(1, Ordering::SeqCst);
            } else {
                std::hint::spin_loop();
            }
            current = sh.generation.load(Ordering::Acquire);
        }
        seen = current;
        if sh.quit.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the caller wrote the job before bumping the generation we just read
        // (acquire), and keeps it alive until we count ourselves done below.
        if let Some(job) = unsafe { *sh.job.get() } {
            // SAFETY: see above: the closure outlives this call.
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| f(member))).is_err() {
                sh.panicked.store(true, Ordering::Relaxed);
            }
        }
        sh.done.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_runs_every_job_once() {
        let team = Team::new(3, "test").expect("threads");
        let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..2000 {
            team.run(|m| {
                counts[m].fetch_add(1, Ordering::Relaxed);
            });
            // Every job is finished when run returns.
            for c in &counts {
                assert_eq!(c.load(Ordering::Relaxed), round + 1);
            }
            if round == 1000 {
                // Long enough for the helpers to fall asleep: they must wake up.
                std::thread::sleep(SPIN * 4);
            }
        }
    }

    #[test]
    fn a_panicking_helper_is_raised_in_the_caller_and_the_team_goes_on() {
        let team = Team::new(2, "test").expect("threads");
        let r = catch_unwind(AssertUnwindSafe(|| {
            team.run(|m| {
                if m == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let hits = AtomicUsize::new(0);
        team.run(|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 2);
    }
}
