//! Batched decode (`tah serve`'s step): the products of N activation rows,
//! each computed exactly as alone (`MatmulScratch::rowwise`), against N
//! one-row products, on cold weights (a set of matrices larger than the
//! caches, cycled), on the machine's threads.
//!
//! ```text
//! cargo run --release --example multi_bench [-- TYPES [N [ROWSxCOLS ...]]]
//! HOT=1 cargo run --release --example multi_bench   # weights in cache: compute
//! ```
//!
//! Reported per type and shape: weight bytes read per second by one-row
//! decode (GB/s), the time of one N-row product over one one-row product
//! (1.0 = the N rows come free; N = no gain over one after another), median
//! of 7 alternating rounds.

use std::time::Instant;

#[path = "common/args.rs"]
mod args;
#[path = "common/sample.rs"]
mod sample;

use sample::{median, splitmix};
use tah::kernels::{self, MatmulScratch, Matrix};
use tah::quant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let types = args::types(args.first(), "q5_0,q8_0,q4_k,q6_k");
    let n: usize = args.get(1).map_or(4, |s| s.parse().expect("N"));
    let shapes = args::shapes(args.get(2..).unwrap_or(&[]), &[(4864, 896), (896, 4864)]);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // HOT=1: one copy of each matrix, which stays in cache (the kernels'
    // arithmetic alone)
    let hot = std::env::var_os("HOT").is_some();
    println!(
        "kernels: {}, {n} rows vs 1, {threads} threads, {} weights",
        kernels::kernels().name,
        if hot { "hot" } else { "cold" }
    );
    println!(
        "{:<6} {:>10} {:>10} {:>12}",
        "type", "shape", "1-row GB/s", "N-row/1-row"
    );
    let pool = tah::threads::Threads::new(threads).unwrap();
    for &ty in &types {
        for &(rows, cols) in &shapes {
            let Some(rb) = ty.row_bytes(cols as u64) else {
                continue;
            };
            let rb = rb as usize;
            // enough copies to overflow the last-level cache
            let copies = if hot {
                1
            } else {
                (256 << 20) / (rows * rb) + 1
            };
            let mut seed = 7u64;
            let vals: Vec<f32> = (0..rows * cols).map(|_| splitmix(&mut seed)).collect();
            let mut one = vec![0u8; rows * rb];
            for r in 0..rows {
                quant::quantize(ty, &vals[r * cols..][..cols], &mut one[r * rb..][..rb]);
            }
            let data: Vec<Vec<u8>> = (0..copies).map(|_| one.clone()).collect();
            let x: Vec<f32> = (0..n * cols).map(|_| splitmix(&mut seed)).collect();
            let mut y = vec![0f32; n * rows];
            let mut scratch = MatmulScratch::default();
            scratch.rowwise = true;
            // seconds per product of `m` rows
            let mut time = |m: usize| {
                pool.install(|| {
                    let t = Instant::now();
                    let mut calls = 0;
                    while calls < copies || t.elapsed().as_secs_f64() < 0.2 {
                        let w = Matrix {
                            ty,
                            data: &data[calls % copies],
                            rows,
                            cols,
                        };
                        kernels::matmul(&w, &x[..m * cols], m, &mut y[..m * rows], &mut scratch);
                        calls += 1;
                    }
                    t.elapsed().as_secs_f64() / calls as f64
                })
            };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..7 {
                a.push(time(1));
                b.push(time(n));
            }
            let (a, b) = (median(a), median(b));
            println!(
                "{:<6} {:>10} {:>10.1} {:>12.2}",
                ty.name(),
                format!("{rows}x{cols}"),
                (rows * rb) as f64 / a / 1e9,
                b / a
            );
        }
    }
}
