//! A pass through the network as one team of spinning threads: the parallel steps of a single image.
//!
//! A batch-1 pass has some thirty-five parallel steps (two per block), each a few tens to hundreds of
//! microseconds long. Run as rayon parallel loops, a worker that finds no work between two steps soon goes to
//! sleep, and waking it costs a system call and a trip through the scheduler: on two cores the median pass took
//! a third longer than the fastest. Here, for the duration of one pass, the other pool threads join a team and
//! keep polling for the next step instead (as ONNX Runtime's pool does), while the leading thread runs the
//! pass and posts its steps; every thread, the leader included, claims the step's parts one at a time.
//!
//! Nothing waits on a helper that has not started: the leader does every part no helper claims, so a pool
//! whose other threads are busy elsewhere (a server running several passes at once) still finishes the pass,
//! on one thread. Outside a team, [`for_each_index`] and [`for_each_chunk`] are ordinary rayon loops.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use rayon::prelude::*;

/// Polls a helper makes between steps before it starts yielding its core (`spin_loop` hints; how long that
/// takes depends on the CPU's pause latency — tens of microseconds or more, longer than a pass's serial gaps).
const SPINS_BEFORE_YIELD: u32 = 20_000;

/// One parallel step: `f` over the parts the team's state counts.
struct Step<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

/// Most parts one team step may have (they are counted in 16 bits of [`Team::state`]).
const MAX_PARTS: usize = u16::MAX as usize;

/// What the leader and its helpers share during one pass.
struct Team {
    /// The step's epoch (bits 32..64), its number of parts (16..32) and the next unclaimed part (0..16): a part
    /// is claimed by one compare-and-swap of the whole word, which fails once the leader has posted another
    /// step, so nothing read for a claim can belong to a step other than the one claimed from.
    state: AtomicU64,
    /// The current step (a `Step` on the leader's stack, alive until all its parts are done).
    step: AtomicPtr<()>,
    /// Parts of the current step finished.
    done: AtomicUsize,
    /// Set when the pass is over: helpers return to the pool.
    over: AtomicBool,
}

thread_local! {
    /// The team this thread leads, while it runs a pass.
    static LEADING: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

impl Team {
    /// Claims and runs parts of the current step until none is left; returns whether it ran any.
    fn work(&self) -> bool {
        let mut worked = false;
        loop {
            let s = self.state.load(Ordering::Acquire);
            let (parts, part) = ((s >> 16) & 0xffff, s & 0xffff);
            if part >= parts {
                return worked;
            }
            // Read before the claim: the step posted with `s` (or a later one, which the claim then rejects).
            let step = self.step.load(Ordering::Acquire) as *const Step;
            if step.is_null() {
                return worked;
            }
            if self.state.compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            // SAFETY: the claim succeeded, so the step posted with `s` is not over and `step` is it: the leader
            // posts the next step only after every part of this one is done, and holds this `Step` on its
            // stack until then.
            unsafe { ((*step).f)(part as usize) };
            self.done.fetch_add(1, Ordering::AcqRel);
            worked = true;
        }
    }

    /// A helper's life: work on every step posted until the pass is over.
    fn help(&self) {
        let mut idle = 0u32;
        while !self.over.load(Ordering::Acquire) {
            if self.work() {
                idle = 0;
            } else if idle < SPINS_BEFORE_YIELD {
                idle += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Posts `f` over `parts` (at most [`MAX_PARTS`]) parts, works on it, and returns when every part is done.
    fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        let step = Step { f };
        let epoch = (self.state.load(Ordering::Relaxed) >> 32).wrapping_add(1) & u64::from(u32::MAX);
        self.done.store(0, Ordering::Relaxed);
        self.step.store(&step as *const Step as *mut (), Ordering::Release);
        self.state.store(epoch << 32 | (parts as u64) << 16, Ordering::Release);
        self.work();
        while self.done.load(Ordering::Acquire) < parts {
            std::hint::spin_loop();
        }
        self.step.store(std::ptr::null_mut(), Ordering::Release);
    }
}

/// Runs `pass` on this thread with the current rayon pool's other threads as its team (see the module
/// documentation); directly when the pool has one thread, outside any pool, or inside another team's pass.
pub(crate) fn with_team<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    if helpers == 0 || rayon::current_thread_index().is_none() || !LEADING.with(|l| l.get().is_null()) {
        return pass();
    }
    let team = Team {
        state: AtomicU64::new(0),
        step: AtomicPtr::new(std::ptr::null_mut()),
        done: AtomicUsize::new(0),
        over: AtomicBool::new(false),
    };
    let team = &team;
    rayon::scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(move |_| {
                // A helper job the leader ends up running itself (it found its own job while waiting) has
                // nothing to help with.
                if LEADING.with(|l| l.get().is_null()) {
                    team.help();
                }
            });
        }
        /// Ends the pass when dropped, also when `pass` panics (the helpers would otherwise poll forever, and
        /// the scope would wait for them).
        struct Leading<'a>(&'a Team);
        impl Drop for Leading<'_> {
            fn drop(&mut self) {
                LEADING.with(|l| l.set(std::ptr::null()));
                self.0.over.store(true, Ordering::Release);
            }
        }
        LEADING.with(|l| l.set(team as *const Team));
        let _leading = Leading(team);
        pass()
    })
}

/// Runs `f(i)` for every `i < n` in parallel: on the team when this thread leads one, on rayon otherwise.
pub(crate) fn for_each_index(n: usize, f: impl Fn(usize) + Sync) {
    let team = LEADING.with(|l| l.get());
    if team.is_null() || n > MAX_PARTS {
        (0..n).into_par_iter().for_each(&f);
    } else if n > 0 {
        // SAFETY: `LEADING` points at the team of the pass this thread is running, alive until it ends.
        unsafe { (*team).run(n, &f) };
    }
}

/// A mutable buffer whose disjoint chunks the team's threads fill.
struct Chunks(*mut f32, usize);

// SAFETY: every part writes only its own chunk, and the buffer outlives the step.
unsafe impl Sync for Chunks {}

/// Runs `f(i, chunk)` for every `chunk`-sized piece of `out` (the last may be shorter) in parallel, like
/// `par_chunks_mut(chunk).enumerate()`.
pub(crate) fn for_each_chunk(out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if LEADING.with(|l| l.get().is_null()) {
        out.par_chunks_mut(chunk.max(1)).enumerate().for_each(|(i, o)| f(i, o));
        return;
    }
    let chunk = chunk.max(1);
    let len = out.len();
    let buf = Chunks(out.as_mut_ptr(), len);
    let buf = &buf;
    for_each_index(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        let n = chunk.min(buf.1 - start);
        // SAFETY: parts are distinct, so their chunks [start, start + n) are disjoint and inside `out`, which
        // is borrowed mutably for the whole step.
        let o = unsafe { std::slice::from_raw_parts_mut(buf.0.add(start), n) };
        f(i, o);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_pass_runs_every_part_once_and_in_step_order() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("thread pool");
        let out = pool.install(|| {
            with_team(|| {
                let mut v = vec![0f32; 1000];
                for step in 0..50 {
                    // Each step reads what the previous one wrote: a part that ran early or twice shows.
                    for_each_chunk(&mut v, 7, |i, o| {
                        for (j, x) in o.iter_mut().enumerate() {
                            assert_eq!(*x, step as f32, "part {i} value {j}");
                            *x += 1.0;
                        }
                    });
                }
                let hits = AtomicUsize::new(0);
                for_each_index(9, |_| {
                    hits.fetch_add(1, Ordering::Relaxed);
                });
                (v, hits.into_inner())
            })
        });
        assert!(out.0.iter().all(|&x| x == 50.0));
        assert_eq!(out.1, 9);
    }

    #[test]
    fn concurrent_passes_each_lead_a_team_and_help_each_other() {
        // As when a server or a training job runs single-image passes from several pool threads at once: every
        // pass leads its own team, a thread that finished its pass may help another's, and all results hold.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().expect("thread pool");
        let sums: Vec<usize> = pool.install(|| {
            (0..16usize)
                .into_par_iter()
                .map(|pass| {
                    with_team(|| {
                        let mut v = vec![0f32; 4096];
                        for _ in 0..20 {
                            for_each_chunk(&mut v, 100, |i, o| o.iter_mut().for_each(|x| *x += (pass + i) as f32));
                        }
                        let total = AtomicUsize::new(0);
                        for_each_index(64, |i| {
                            total.fetch_add(i, Ordering::Relaxed);
                        });
                        let expected: f32 = (0..4096).map(|j| 20.0 * (pass + j / 100) as f32).sum();
                        assert_eq!(v.iter().sum::<f32>(), expected, "pass {pass}");
                        total.into_inner()
                    })
                })
                .collect()
        });
        assert_eq!(sums, vec![2016; 16]);
    }

    #[test]
    fn a_pass_that_panics_releases_its_helpers() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("thread pool");
        let caught = pool.install(|| {
            std::panic::catch_unwind(|| {
                with_team(|| {
                    for_each_index(4, |_| {});
                    panic!("a pass failed");
                })
            })
        });
        assert!(caught.is_err());
        // The pool is still usable: its other thread went back to it.
        assert_eq!(pool.install(|| with_team(|| rayon::join(|| 1, || 2))), (1, 2));
    }

    #[test]
    fn a_team_whose_helpers_are_busy_finishes_on_its_leader() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("thread pool");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let sum = pool.install(|| {
            rayon::join(
                // The other thread is held until the team's pass is over.
                move || {
                    let _ = rx.recv();
                },
                move || {
                    let s = with_team(|| {
                        let total = AtomicUsize::new(0);
                        for_each_index(100, |i| {
                            total.fetch_add(i, Ordering::Relaxed);
                        });
                        total.into_inner()
                    });
                    let _ = tx.send(());
                    s
                },
            )
            .1
        });
        assert_eq!(sum, 4950);
    }
}
