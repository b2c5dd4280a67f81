//! The thread pools of `tah::threads`: a parallel-for equals the sequential
//! loop, on both kinds of pool; many threads may share one spin pool; a
//! panicking task reaches the caller and leaves the pool usable; a pool shuts
//! down when dropped, idle or parked.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tah::kernels::{self, MatmulScratch, Matrix};
use tah::quant::GgmlType;
use tah::threads::{self, Kind, SpinPool, Threads};

fn squares_in_parallel(pool: &SpinPool, tasks: usize) -> Vec<usize> {
    let out: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
    pool.run(tasks, &|i| {
        out[i].fetch_add(i * i + 1, Ordering::Relaxed);
    });
    out.into_iter().map(AtomicUsize::into_inner).collect()
}

#[test]
fn spin_run_equals_the_sequential_loop() {
    for threads in [1, 2, 3, 8] {
        let pool = SpinPool::new(threads);
        assert_eq!(pool.threads(), threads);
        for tasks in [0, 1, 2, 7, 64, 1000] {
            let want: Vec<usize> = (0..tasks).map(|i| i * i + 1).collect();
            for _ in 0..20 {
                // each index exactly once
                assert_eq!(squares_in_parallel(&pool, tasks), want, "{threads} threads");
            }
        }
    }
}

#[test]
fn chunks_equal_the_sequential_loop_on_both_kinds() {
    let want: Vec<u64> = (0..1003u64).map(|i| i * 3 + i / 10).collect();
    for kind in [Kind::Spin, Kind::Rayon] {
        for n in [1, 2, 4] {
            let pool = Threads::with_kind(kind, n).unwrap();
            assert_eq!(pool.kind(), kind);
            pool.install(|| {
                assert_eq!(threads::current_threads(), n);
                for chunk in [1, 10, 64, 2000] {
                    let mut v = vec![0u64; 1003];
                    threads::for_each_chunk_mut(&mut v, chunk, |c, xs| {
                        for (j, x) in xs.iter_mut().enumerate() {
                            let i = (c * chunk + j) as u64;
                            *x += i * 3 + i / 10;
                        }
                    });
                    assert_eq!(v, want, "{kind:?} {n} threads, chunks of {chunk}");
                }
                let sum = AtomicUsize::new(0);
                threads::for_each(100, &|i| {
                    sum.fetch_add(i, Ordering::Relaxed);
                });
                assert_eq!(sum.into_inner(), 4950);
            });
        }
    }
}

/// A product split over the pool gives the bits of the single-threaded one,
/// with either kind of pool.
#[test]
fn matmul_is_the_same_on_every_pool() {
    let (rows, cols) = (300, 256);
    let mut seed = 1u32;
    let mut next = || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
    };
    let wf: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
    let mut data = vec![0u8; rows * cols / 32 * 34];
    for (r, w) in wf
        .chunks_exact(cols)
        .zip(data.chunks_exact_mut(cols / 32 * 34))
    {
        tah::quant::q8_0::quantize_row(r, w);
    }
    let w = Matrix {
        ty: GgmlType::Q8_0,
        data: &data,
        rows,
        cols,
    };
    let product = |pool: &Threads, n: usize| {
        let x: Vec<f32> = (0..n * cols).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
        let mut y = vec![0f32; n * rows];
        pool.install(|| kernels::matmul(&w, &x, n, &mut y, &mut MatmulScratch::default()));
        y
    };
    let one = Threads::with_kind(Kind::Spin, 1).unwrap();
    for n in [1, 3] {
        let want = product(&one, n);
        for kind in [Kind::Spin, Kind::Rayon] {
            for t in [2, 3] {
                let pool = Threads::with_kind(kind, t).unwrap();
                assert_eq!(product(&pool, n), want, "{kind:?} {t} threads, n = {n}");
            }
        }
    }
}

#[test]
fn many_threads_share_one_spin_pool() {
    let pool = Arc::new(SpinPool::new(3));
    std::thread::scope(|s| {
        for user in 0..8 {
            let pool = Arc::clone(&pool);
            s.spawn(move || {
                for round in 0..300 {
                    let tasks = 1 + (user * 7 + round) % 40;
                    let want: Vec<usize> = (0..tasks).map(|i| i * i + 1).collect();
                    assert_eq!(squares_in_parallel(&pool, tasks), want);
                }
            });
        }
    });
}

#[test]
fn a_section_inside_a_task_runs_inline() {
    let pool = Threads::with_kind(Kind::Spin, 3).unwrap();
    let sum = AtomicUsize::new(0);
    pool.install(|| {
        threads::for_each(8, &|i| {
            threads::for_each(5, &|j| {
                sum.fetch_add(i * 5 + j, Ordering::Relaxed);
            })
        })
    });
    assert_eq!(sum.into_inner(), (0..40).sum::<usize>());
}

#[test]
fn a_panicking_task_reaches_the_caller_and_the_pool_goes_on() {
    let pool = SpinPool::new(3);
    for bad in [0, 5, 63] {
        let ran = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(64, &|i| {
                if i == bad {
                    panic!("task {i} fails");
                }
                std::thread::sleep(Duration::from_micros(20));
                ran.fetch_add(1, Ordering::Relaxed);
            })
        }));
        let msg = r.expect_err("the panic is raised again");
        assert_eq!(
            msg.downcast_ref::<String>().map(String::as_str),
            Some(format!("task {bad} fails").as_str())
        );
        assert!(ran.into_inner() < 64);
        // the pool still works, and its next job is complete
        assert_eq!(
            squares_in_parallel(&pool, 50),
            (0..50).map(|i| i * i + 1).collect::<Vec<_>>()
        );
    }
}

#[test]
fn pools_shut_down_when_dropped() {
    // never used
    drop(SpinPool::new(4));
    // idle: just after a job (workers spinning)
    let pool = SpinPool::new(4);
    squares_in_parallel(&pool, 100);
    drop(pool);
    // parked
    let pool = SpinPool::new(4);
    squares_in_parallel(&pool, 100);
    std::thread::sleep(Duration::from_millis(20));
    // and woken again from the parked state
    assert_eq!(
        squares_in_parallel(&pool, 10),
        (0..10).map(|i| i * i + 1).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_millis(20));
    drop(pool);
    // made current, then dropped
    let t = Threads::with_kind(Kind::Spin, 2).unwrap();
    t.install(|| threads::for_each(10, &|_| ()));
    drop(t);
}

/// Sessions on several threads installing one rayon-backed pool: a worker that
/// waits inside a parallel section runs other threads' queued `install` jobs,
/// which set their own current pool on that worker. (The first version kept
/// the current-pool cell borrowed across the section: "RefCell already
/// borrowed", seen through the C ABI's concurrent-sessions test.)
#[test]
fn concurrent_installs_on_one_rayon_pool() {
    let pool = Threads::with_kind(Kind::Rayon, 2).unwrap();
    std::thread::scope(|sc| {
        for t in 0..4usize {
            let pool = &pool;
            sc.spawn(move || {
                for round in 0..200usize {
                    let sum = pool.install(|| {
                        let acc = AtomicUsize::new(0);
                        threads::for_each(16, &|i| {
                            // a little work, so that workers block and steal
                            let mut x = i + t + round;
                            for _ in 0..200 {
                                x = x.wrapping_mul(31).wrapping_add(7);
                            }
                            std::hint::black_box(x);
                            acc.fetch_add(i, Ordering::Relaxed);
                        });
                        acc.into_inner()
                    });
                    assert_eq!(sum, (0..16).sum::<usize>());
                }
            });
        }
    });
}
