//! The thread pools of `tah::threads`: a parallel-for equals the sequential
//! loop; a product split over a pool gives the single-threaded bits; several
//! threads may install one pool at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use tah::kernels::{self, MatmulScratch, Matrix};
use tah::quant::GgmlType;
use tah::threads::{self, Threads};

#[test]
fn chunks_equal_the_sequential_loop() {
    let want: Vec<u64> = (0..1003u64).map(|i| i * 3 + i / 10).collect();
    for n in [1, 2, 4] {
        let pool = Threads::new(n).unwrap();
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
                assert_eq!(v, want, "{n} threads, chunks of {chunk}");
            }
            let sum = AtomicUsize::new(0);
            threads::for_each(100, &|i| {
                sum.fetch_add(i, Ordering::Relaxed);
            });
            assert_eq!(sum.into_inner(), 4950);
        });
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
    let one = Threads::new(1).unwrap();
    for n in [1, 3] {
        let want = product(&one, n);
        for t in [2, 3] {
            let pool = Threads::new(t).unwrap();
            assert_eq!(product(&pool, n), want, "{t} threads, n = {n}");
        }
    }
}

/// Sessions on several threads installing one rayon-backed pool: a worker that
/// waits inside a parallel section runs other threads' queued `install` jobs,
/// which set their own current pool on that worker. (The first version kept
/// the current-pool cell borrowed across the section: "RefCell already
/// borrowed", seen through the C ABI's concurrent-sessions test.)
#[test]
fn concurrent_installs_on_one_rayon_pool() {
    let pool = Threads::new(2).unwrap();
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
