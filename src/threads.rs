//! The thread pools behind the parallel sections of the forward pass (the
//! matmul's output rows, attention's rows × heads): [`for_each`] and
//! [`for_each_chunk_mut`] run their tasks on the *current* rayon pool.
//!
//! Which pool is current: the one a [`Threads`] made current with
//! [`Threads::install`] (the benchmark's per-thread-count pools, each
//! app-API model's own pool), else rayon's process-wide one ([`set_global`],
//! the CLI's `-t`; all cores by default). Which thread runs a task never
//! changes its result.
//!
//! A dedicated spin pool (workers that spin between decode's parallel sections
//! instead of sleeping) was measured against rayon and never beat it on decode
//! or prefill (bench/README.md, "Threads"), so it was removed.

use rayon::prelude::*;
use std::sync::mpsc;

/// The most threads a pool may have: four per core. More only adds
/// scheduling overhead to a memory-bound decode (5,000 threads took 106 s
/// for 2 tokens), and a caller's typo should not start thousands of threads.
pub fn max_threads() -> usize {
    4 * cores()
}

/// The cores the process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `n` when it is a sensible thread count (0 = one per core).
pub fn check_count(n: usize) -> Result<usize, String> {
    if n > max_threads() {
        return Err(format!(
            "{n} threads is more than {} (four per core on this machine)",
            max_threads()
        ));
    }
    Ok(n)
}

/// Sets the process-wide pool to `n` threads (0 = one per core). Only the
/// first call counts (later ones are ignored), as with rayon's global pool.
pub fn set_global(n: usize) -> Result<(), String> {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(check_count(n)?)
        .build_global();
    Ok(())
}

/// Threads of the current pool (the caller included).
pub fn current_threads() -> usize {
    rayon::current_num_threads()
}

/// Calls `f(i)` for every `i < tasks`, in parallel on the current pool;
/// returns when all are done. A panic in a task is raised again here.
pub fn for_each(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    (0..tasks).into_par_iter().for_each(f)
}

/// `f(i, chunk)` for the chunks of `data` (`chunk` items each, the last one
/// may be shorter), in parallel on the current pool.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    assert!(chunk > 0, "chunk size 0");
    data.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, c)| f(i, c))
}

/// An owned pool that can be made current ([`Threads::install`]).
pub struct Threads(rayon::ThreadPool);

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Threads({})", self.threads())
    }
}

impl Threads {
    /// `n` threads (0 = one per core).
    pub fn new(n: usize) -> Result<Threads, String> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(check_count(n)?)
            .thread_name(|i| format!("tah-worker-{i}"))
            .build()
            .map(Threads)
            .map_err(|e| format!("cannot start the thread pool: {e}"))
    }

    /// Threads of the pool (the caller included).
    pub fn threads(&self) -> usize {
        self.0.current_num_threads()
    }

    /// Runs `f` on one of the pool's workers with the pool current (the caller
    /// blocks).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.0.install(f)
    }

    /// Runs `work` with this pool current while `on_event` handles, on the
    /// calling thread, each event `work` emits (its answer is `emit`'s): the
    /// job runs on a worker and hands its events over, so callbacks reach
    /// the caller's thread (a C or Java caller's callbacks must run there).
    pub fn install_with_events<E: Send, R: Send>(
        &self,
        work: impl FnOnce(&mut dyn FnMut(E) -> bool) -> R + Send,
        on_event: &mut dyn FnMut(E) -> bool,
    ) -> R {
        let (ev_tx, ev_rx) = mpsc::sync_channel::<E>(0);
        let (ack_tx, ack_rx) = mpsc::sync_channel::<bool>(0);
        let mut result = None;
        self.0.in_place_scope(|s| {
            let result = &mut result;
            s.spawn(move |_| {
                let mut emit = |e: E| ev_tx.send(e).is_ok() && ack_rx.recv().unwrap_or(false);
                *result = Some(work(&mut emit));
                // ev_tx drops here: the loop below ends.
            });
            for e in ev_rx.iter() {
                if ack_tx.send(on_event(e)).is_err() {
                    break;
                }
            }
        });
        result.expect("the job ran")
    }
}
