//! The thread pools behind the parallel sections of the forward pass (the
//! matmul's output rows, attention's rows × heads): [`for_each`] and
//! [`for_each_chunk_mut`] run their tasks on the *current* pool.
//!
//! Two kinds, chosen at run time by the environment variable `TAH_POOL`:
//!
//! * `rayon` (the default): a rayon pool (work stealing, sleeping workers).
//! * `spin`: [`SpinPool`], N−1 dedicated workers plus the
//!   calling thread. A job is a parallel-for over task indices handed out by an
//!   atomic counter; between jobs the workers spin for [`SPIN`] (decode runs a
//!   parallel section every few tens of µs; they yield the core now and then)
//!   and then park, so an idle engine burns no CPU. The caller never waits
//!   for a worker that has not joined its job.
//!
//! Measured on decode and prefill (bench/README.md, "Threads"), neither won
//! on the shared 2-core development box (within ±4 %, inside the noise), so
//! rayon, the incumbent, stays the default; `TAH_POOL=spin` selects the spin
//! pool for measuring on a quiet device.
//!
//! Which pool is current: the one a [`Threads`] made current with
//! [`Threads::install`] (the benchmark's per-thread-count pools, each
//! embedding model's own pool), else the process-wide one ([`set_global`], the
//! CLI's `-t`; all cores by default).
//!
//! One job at a time per spin pool: a caller that finds its pool busy (another
//! session on another thread, or a task inside a job) runs its tasks itself,
//! one after another. Which thread runs a task never changes its result.

use rayon::prelude::*;
use std::any::Any;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle spin worker waits for the next job before parking.
pub const SPIN: Duration = Duration::from_micros(50);
/// How many times the caller checks for its job's last workers before it
/// yields between checks (a worker inside the job may have been descheduled).
const CALLER_SPINS: u32 = 256;

/// The kinds of pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rayon,
    Spin,
}

impl Kind {
    /// `TAH_POOL` (`rayon` or `spin`), else [`Kind::Rayon`]. Read once; panics
    /// on another value (a benchmark asked for something that is not there).
    pub fn from_env() -> Kind {
        static KIND: OnceLock<Kind> = OnceLock::new();
        *KIND.get_or_init(|| match std::env::var("TAH_POOL").as_deref() {
            Ok("rayon") | Ok("") | Err(_) => Kind::Rayon,
            Ok("spin") => Kind::Spin,
            Ok(other) => panic!("TAH_POOL={other}: expected rayon or spin"),
        })
    }
}

/// `n`, or one per core when `n` is 0.
fn or_cores(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        thread::available_parallelism().map_or(1, |n| n.get())
    }
}

// ---------------------------------------------------------------------------
// The current pool

#[derive(Clone)]
enum Current {
    /// Running on a worker of a rayon pool: rayon's own notion of current.
    Rayon,
    Spin(Arc<SpinPool>),
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
    /// Set while this thread runs tasks of a spin job (always on its workers):
    /// a parallel section inside a task runs inline.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with `c` as this thread's current pool, then restores the previous.
fn with_current<R>(c: Current, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Current>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT.with(|cur| *cur.borrow_mut() = prev);
        }
    }
    let _restore = Restore(CURRENT.with(|cur| cur.borrow_mut().replace(c)));
    f()
}

static GLOBAL: OnceLock<Arc<SpinPool>> = OnceLock::new();

/// Sets the process-wide pool to `n` threads (0 = one per core) of the kind
/// `TAH_POOL` selects. Only the first call counts (later ones are ignored), as
/// with rayon's global pool.
pub fn set_global(n: usize) {
    match Kind::from_env() {
        Kind::Rayon => {
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global();
        }
        Kind::Spin => {
            let _ = GLOBAL.get_or_init(|| Arc::new(SpinPool::new(or_cores(n))));
        }
    }
}

fn global_spin() -> &'static SpinPool {
    GLOBAL.get_or_init(|| Arc::new(SpinPool::new(or_cores(0))))
}

/// Runs `f` with the current pool: `Some(spin pool)` or `None` for rayon's.
/// The thread-local is not borrowed while `f` runs: a rayon worker waiting in
/// `f` runs other queued jobs (another session's `install`), which set their
/// own current pool on this thread.
fn with_pool<R>(f: impl FnOnce(Option<&SpinPool>) -> R) -> R {
    match CURRENT.with(|cur| cur.borrow().clone()) {
        Some(Current::Spin(p)) => f(Some(&p)),
        Some(Current::Rayon) => f(None),
        None => match Kind::from_env() {
            Kind::Spin => f(Some(global_spin())),
            Kind::Rayon => f(None),
        },
    }
}

/// Threads of the current pool (the caller included).
pub fn current_threads() -> usize {
    with_pool(|p| p.map_or_else(rayon::current_num_threads, SpinPool::threads))
}

/// Calls `f(i)` for every `i < tasks`, in parallel on the current pool;
/// returns when all are done. A panic in a task is raised again here.
pub fn for_each(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    with_pool(|p| match p {
        Some(p) => p.run(tasks, f),
        None => (0..tasks).into_par_iter().for_each(f),
    })
}

/// `f(i, chunk)` for the chunks of `data` (`chunk` items each, the last one
/// may be shorter), in parallel on the current pool.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    assert!(chunk > 0, "chunk size 0");
    with_pool(|p| match p {
        None => data
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c)),
        Some(p) => {
            let len = data.len();
            let base = SendPtr(data.as_mut_ptr());
            p.run(len.div_ceil(chunk), &|i| {
                let start = i * chunk;
                let n = chunk.min(len - start);
                // SAFETY: `run` calls each index exactly once, so the chunks
                // handed out are disjoint parts of `data`, which stays
                // mutably borrowed until `run` has returned.
                let c = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
                f(i, c)
            });
        }
    })
}

/// A raw pointer the tasks may share (they write disjoint ranges).
struct SendPtr<T>(*mut T);
// SAFETY: only used by `for_each_chunk_mut`, whose tasks touch disjoint chunks
// of a `&mut [T]` with `T: Send`.
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

// ---------------------------------------------------------------------------
// Threads: an owned pool of either kind

/// A pool of either kind that can be made current ([`Threads::install`]).
pub struct Threads(Inner);

enum Inner {
    Rayon(rayon::ThreadPool),
    Spin(Arc<SpinPool>),
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Threads({:?}, {})", self.kind(), self.threads())
    }
}

impl Threads {
    /// `n` threads (0 = one per core) of the kind `TAH_POOL` selects.
    pub fn new(n: usize) -> Result<Threads, String> {
        Threads::with_kind(Kind::from_env(), n)
    }

    pub fn with_kind(kind: Kind, n: usize) -> Result<Threads, String> {
        Ok(Threads(match kind {
            Kind::Rayon => Inner::Rayon(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("tah-worker-{i}"))
                    .build()
                    .map_err(|e| format!("cannot start the thread pool: {e}"))?,
            ),
            Kind::Spin => Inner::Spin(Arc::new(SpinPool::new(or_cores(n)))),
        }))
    }

    pub fn kind(&self) -> Kind {
        match self.0 {
            Inner::Rayon(_) => Kind::Rayon,
            Inner::Spin(_) => Kind::Spin,
        }
    }

    /// Threads of the pool (the caller included).
    pub fn threads(&self) -> usize {
        match &self.0 {
            Inner::Rayon(p) => p.current_num_threads(),
            Inner::Spin(p) => p.threads(),
        }
    }

    /// Runs `f` with this pool current: on the calling thread for a spin
    /// pool, on one of its workers for rayon (the caller blocks).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.0 {
            Inner::Rayon(p) => p.install(|| with_current(Current::Rayon, f)),
            Inner::Spin(p) => with_current(Current::Spin(Arc::clone(p)), f),
        }
    }

    /// Runs `work` with this pool current while `on_event` handles, on the
    /// calling thread, each event `work` emits (its answer is `emit`'s).
    /// For a spin pool both run on this thread; a rayon job runs on a worker
    /// and hands its events over.
    pub fn install_with_events<E: Send, R: Send>(
        &self,
        work: impl FnOnce(&mut dyn FnMut(E) -> bool) -> R + Send,
        on_event: &mut dyn FnMut(E) -> bool,
    ) -> R {
        let pool = match &self.0 {
            Inner::Spin(p) => return with_current(Current::Spin(Arc::clone(p)), || work(on_event)),
            Inner::Rayon(p) => p,
        };
        let (ev_tx, ev_rx) = mpsc::sync_channel::<E>(0);
        let (ack_tx, ack_rx) = mpsc::sync_channel::<bool>(0);
        let mut result = None;
        pool.in_place_scope(|s| {
            let result = &mut result;
            s.spawn(move |_| {
                let mut emit = |e: E| ev_tx.send(e).is_ok() && ack_rx.recv().unwrap_or(false);
                *result = Some(with_current(Current::Rayon, || work(&mut emit)));
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

// ---------------------------------------------------------------------------
// The spin pool

/// One job: the tasks' function (its lifetime erased, see [`SpinPool::run`])
/// and the number of tasks.
#[derive(Clone, Copy)]
struct Job {
    f: &'static (dyn Fn(usize) + Sync),
    tasks: usize,
}

/// Bits of [`Shared::state`]: the number of workers inside the job (low 16
/// bits), whether the job takes more workers, and the job's epoch above.
const COUNT: u64 = 0xffff;
const OPEN: u64 = 1 << 16;
const EPOCH: u64 = 1 << 17;

/// What the caller and the workers share.
struct Shared {
    /// Epoch | open | count (see [`COUNT`]). The caller publishes a job by
    /// storing the next epoch, open, count 0; a worker joins by incrementing
    /// the count while the job is open and its epoch unchanged, and leaves by
    /// decrementing it. Once out of tasks the caller closes the job and waits
    /// for the count to reach 0: it never waits for a worker that did not join
    /// (a descheduled or parked one).
    state: AtomicU64,
    /// Written by the caller only while no worker is in a job (see `Sync`).
    job: UnsafeCell<Job>,
    /// The next task index to hand out.
    next: AtomicUsize,
    /// The first panic of the current job's tasks.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// A job is in progress (one at a time).
    busy: AtomicBool,
    shutdown: AtomicBool,
    /// Per worker: parked, or about to park (the caller unparks it).
    sleeping: Box<[AtomicBool]>,
}

// SAFETY: `job` is the only field without its own synchronization. The caller
// that holds `busy` writes it only when the previous job is closed with no
// worker inside (count 0, acquire), then publishes the new epoch (release); a
// worker copies it only after joining that epoch (acquire) and before leaving.
// So writes and reads never overlap.
unsafe impl Sync for Shared {}

fn noop(_: usize) {}

impl Shared {
    /// Takes task indices until there are none left. A panicking task ends the
    /// job: the remaining tasks are skipped and the panic kept for the caller.
    fn work(&self, job: Job) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= job.tasks {
                return;
            }
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| (job.f)(i))) {
                self.next.store(job.tasks, Ordering::Relaxed);
                let mut slot = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
                slot.get_or_insert(p);
                return;
            }
        }
    }

    /// Waits for a job with an epoch other than `seen` (or shutdown): spins
    /// for [`SPIN`], then parks. Returns the state seen, `None` at shutdown.
    fn wait(&self, me: usize, seen: u64) -> Option<u64> {
        let changed = || {
            let st = self.state.load(Ordering::SeqCst);
            if self.shutdown.load(Ordering::SeqCst) {
                Some(None)
            } else {
                (st / EPOCH != seen).then_some(Some(st))
            }
        };
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if let Some(r) = changed() {
                return r;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(32) {
                if start.elapsed() > SPIN {
                    break;
                }
                // Lets another runnable thread have this core (a busy machine:
                // pure spinning measured 20 % slower there); returns at once
                // on an idle core.
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        loop {
            // Announce, then look again: the caller publishes a job before it
            // reads `sleeping` (both SeqCst), so either we see the job here or
            // the caller sees us asleep and unparks us.
            self.sleeping[me].store(true, Ordering::SeqCst);
            if let Some(r) = changed() {
                self.sleeping[me].store(false, Ordering::Relaxed);
                return r;
            }
            thread::park();
        }
    }

    /// Joins the job of state `st` if it is still open.
    fn join(&self, mut st: u64) -> bool {
        let epoch = st / EPOCH;
        while st / EPOCH == epoch && st & OPEN != 0 {
            match self
                .state
                .compare_exchange_weak(st, st + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => st = now,
            }
        }
        false
    }
}

/// A pool of `threads − 1` dedicated workers plus the calling thread.
pub struct SpinPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    handles: Vec<Thread>,
}

impl std::fmt::Debug for SpinPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpinPool({})", self.threads())
    }
}

impl SpinPool {
    /// Starts `threads − 1` workers (none for 1 or 0: every job runs inline).
    pub fn new(threads: usize) -> SpinPool {
        let n = (threads.max(1) - 1).min(COUNT as usize);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: UnsafeCell::new(Job { f: &noop, tasks: 0 }),
            next: AtomicUsize::new(0),
            panic: Mutex::new(None),
            busy: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
        });
        let workers: Vec<_> = (0..n)
            .map(|me| {
                let shared = Arc::clone(&shared);
                thread::Builder::new()
                    .name(format!("tah-spin-{me}"))
                    .spawn(move || worker(&shared, me))
                    .expect("cannot start a pool thread")
            })
            .collect();
        let handles = workers.iter().map(|w| w.thread().clone()).collect();
        SpinPool {
            shared,
            workers,
            handles,
        }
    }

    /// Threads that run a job (the caller included).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i < tasks` on the workers and this thread;
    /// returns when all have finished. A panic in a task skips the tasks not
    /// yet started and is raised again here once every worker is done.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        if tasks <= 1
            || self.workers.is_empty()
            || IN_JOB.get()
            || s.busy.swap(true, Ordering::Acquire)
        {
            // One task, no workers, a section inside a task, or the pool is
            // busy with another caller's job: run them here.
            (0..tasks).for_each(f);
            return;
        }
        struct Idle<'a>(&'a AtomicBool);
        impl Drop for Idle<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _idle = Idle(&s.busy);
        // SAFETY: the job's `f` is only called by the workers that joined the
        // job, before they leave it; this function does not return (or unwind:
        // the caller's own tasks run under `catch_unwind`) before the job is
        // closed with no worker inside, so the borrow outlives every use.
        let f: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        let job = Job { f, tasks };
        // SAFETY: we hold `busy` and the previous job ended closed with no
        // worker inside: no worker reads `job` now (see `Shared`).
        unsafe { *s.job.get() = job };
        s.next.store(0, Ordering::Relaxed);
        let epoch = s.state.load(Ordering::Relaxed) / EPOCH + 1;
        s.state.store((epoch * EPOCH) | OPEN, Ordering::SeqCst);
        for (asleep, t) in s.sleeping.iter().zip(&self.handles) {
            if asleep.load(Ordering::SeqCst) {
                t.unpark();
            }
        }
        IN_JOB.set(true);
        s.work(job);
        IN_JOB.set(false);
        // Close the job, then wait for the workers still inside.
        let mut st = s.state.fetch_and(!OPEN, Ordering::Acquire);
        let mut spins = 0u32;
        while st & COUNT != 0 {
            if spins < CALLER_SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
            st = s.state.load(Ordering::Acquire);
        }
        let panic = s
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(p) = panic {
            drop(_idle);
            resume_unwind(p);
        }
    }
}

fn worker(s: &Shared, me: usize) {
    IN_JOB.set(true);
    let mut seen = 0;
    while let Some(st) = s.wait(me, seen) {
        seen = st / EPOCH;
        if s.join(st) {
            // SAFETY: joined an open job (acquire), see `Shared`.
            let job = unsafe { *s.job.get() };
            s.work(job);
            s.state.fetch_sub(1, Ordering::Release);
        }
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for t in &self.handles {
            t.unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
