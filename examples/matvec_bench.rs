//! Decode mat-vec throughput (GB/s of weight bytes read) per weight type.
//!
//! ```text
//! cargo run --release --example matvec_bench [-- TYPES [ROWSxCOLS ...]]
//! TAH_KERNELS=avx2 cargo run --release --example matvec_bench   # force a path
//! ```
//!
//! For each type and shape, at 1 and 2 threads (a pool of that size, as
//! the CLI's `-t` does): one activation row (`n = 1`) times the matrix.
//! * `hot`: the same matrix every time (it stays in L2/L3: a compute bound);
//! * `cold`: a different copy each time, cycling through ≥ 512 MiB of copies,
//!   so the weights come from DRAM (the decode situation).
//!
//! Reported: median GB/s over many timed calls (weight bytes / time per call).

use std::time::Instant;

#[path = "common/args.rs"]
mod args;

use tah::kernels::{self, MatmulScratch, Matrix};
use tah::quant;

fn splitmix(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median seconds per call of `f` over ~`budget` seconds (at least 20 calls).
fn time_calls(budget: f64, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..5 {
        f(i);
    }
    let mut times = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while times.len() < 20 || start.elapsed().as_secs_f64() < budget {
        let t = Instant::now();
        f(i);
        times.push(t.elapsed().as_secs_f64());
        i += 1;
    }
    median(&mut times)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let types = args::types(args.first(), "q4_0,q4_1,q5_0,q8_0,q4_k,q6_k");
    let shapes = args::shapes(
        args.get(1..).unwrap_or(&[]),
        &[(4864, 896), (896, 4864), (896, 896)],
    );
    println!("kernels: {}", kernels::kernels().name);
    println!(
        "{:<6} {:>10} {:>9} {:>4} {:>10} {:>10} {:>10}",
        "type", "shape", "MiB", "thr", "hot GB/s", "cold GB/s", "cold µs"
    );
    for &ty in &types {
        for &(rows, cols) in &shapes {
            if ty.row_bytes(cols as u64).is_none() {
                println!(
                    "{:<6} {:>10} (skipped: {cols} columns are not whole {}-value blocks)",
                    ty.name(),
                    format!("{rows}x{cols}"),
                    ty.block_len()
                );
                continue;
            }
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut seed = 42u64;
            let vals: Vec<f32> = (0..rows * cols).map(|_| splitmix(&mut seed)).collect();
            let mut data = vec![0u8; rows * rb];
            for r in 0..rows {
                quant::quantize(
                    ty,
                    &vals[r * cols..(r + 1) * cols],
                    &mut data[r * rb..(r + 1) * rb],
                );
            }
            let bytes = data.len();
            let copies = (512usize << 20).div_ceil(bytes).max(2);
            let cold: Vec<Vec<u8>> = (0..copies).map(|_| data.clone()).collect();
            let x: Vec<f32> = (0..cols).map(|_| splitmix(&mut seed) * 10.0).collect();
            let mut y = vec![0f32; rows];
            for threads in [1usize, 2] {
                let pool = tah::threads::Threads::new(threads).unwrap();
                let mut scratch = MatmulScratch::default();
                let hot = pool.install(|| {
                    time_calls(0.4, |_| {
                        let w = Matrix {
                            ty,
                            data: &data,
                            rows,
                            cols,
                        };
                        kernels::matmul(&w, &x, 1, &mut y, &mut scratch);
                    })
                });
                let cold_t = pool.install(|| {
                    time_calls(0.6, |i| {
                        let w = Matrix {
                            ty,
                            data: &cold[i % copies],
                            rows,
                            cols,
                        };
                        kernels::matmul(&w, &x, 1, &mut y, &mut scratch);
                    })
                });
                println!(
                    "{:<6} {:>10} {:>9.2} {:>4} {:>10.1} {:>10.1} {:>10.1}",
                    ty.name(),
                    format!("{rows}x{cols}"),
                    bytes as f64 / (1 << 20) as f64,
                    threads,
                    bytes as f64 / hot / 1e9,
                    bytes as f64 / cold_t / 1e9,
                    cold_t * 1e6
                );
            }
        }
    }
}
