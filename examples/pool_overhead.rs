//! Cost of one parallel section (fork + join) on each kind of pool.
//!
//! ```text
//! cargo run --release --example pool_overhead
//! ```
//!
//! For rayon and the spin pool at 1 and 2 threads: jobs of 8 tasks that each
//! do ~0 or ~2 µs of work, back to back, as decode's sections come. Reported:
//! the median over 9 batches of the mean µs per job.

use std::hint::black_box;
use std::time::Instant;
use tah::threads::{self, Kind, Threads};

fn spin_work(iters: u32) -> u32 {
    let mut x = 1u32;
    for i in 0..iters {
        x = black_box(x.wrapping_mul(1664525).wrapping_add(i));
    }
    x
}

fn main() {
    const JOBS: usize = 2000;
    for (work, label) in [(0u32, "empty tasks"), (2000, "~2 µs tasks")] {
        for t in [1usize, 2] {
            for kind in [Kind::Rayon, Kind::Spin] {
                let pool = Threads::with_kind(kind, t).unwrap();
                let mut batches: Vec<f64> = pool.install(|| {
                    (0..9)
                        .map(|_| {
                            let t0 = Instant::now();
                            for _ in 0..JOBS {
                                threads::for_each(8, &|i| {
                                    black_box(spin_work(work + i as u32));
                                });
                            }
                            t0.elapsed().as_secs_f64() * 1e6 / JOBS as f64
                        })
                        .collect()
                });
                batches.sort_by(f64::total_cmp);
                println!(
                    "{label:<12} threads {t}  {kind:?}  {:>7.2} µs/job  [{:.2} – {:.2}]",
                    batches[4], batches[0], batches[8]
                );
            }
        }
    }
}
