//! Prefill matrix-product throughput per weight type: the selected table with
//! and without its panel products, alternating, one thread.
//!
//! ```text
//! cargo run --release --example matmul_bench [-- TYPES [N [ROWSxCOLS ...]]]
//! ```
//!
//! `N` activation rows (default 128) times each matrix (hot: it stays in
//! cache, so this measures compute). Reported: median multiply-adds per
//! second (10⁹) of each path over 7 alternating rounds, and their ratio.

use std::time::Instant;

#[path = "common/args.rs"]
mod args;
#[path = "common/sample.rs"]
mod sample;

use sample::{median, splitmix};
use tah::kernels::{self, Kernels, MatmulScratch, Matrix};
use tah::quant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let types = args::types(args.first(), "q4_0,q4_1,q5_0,q8_0,q4_k,q6_k");
    let n: usize = args.get(1).map_or(128, |s| s.parse().expect("N"));
    let shapes = args::shapes(
        args.get(2..).unwrap_or(&[]),
        &[(1536, 576), (576, 1536), (4864, 896), (896, 4864)],
    );
    let with = kernels::kernels();
    let without = Kernels {
        panel: kernels::no_panel,
        ..*with
    };
    println!("kernels: {}, {n} activation rows, 1 thread", with.name);
    println!(
        "{:<6} {:>10} {:>12} {:>12} {:>7}",
        "type", "shape", "tiles GMAC/s", "panel GMAC/s", "ratio"
    );
    let pool = tah::threads::Threads::new(1).unwrap();
    for &ty in &types {
        for &(rows, cols) in &shapes {
            let Some(rb) = ty.row_bytes(cols as u64) else {
                continue;
            };
            let rb = rb as usize;
            let mut seed = 7u64;
            let vals: Vec<f32> = (0..rows * cols).map(|_| splitmix(&mut seed)).collect();
            let mut data = vec![0u8; rows * rb];
            for r in 0..rows {
                quant::quantize(ty, &vals[r * cols..][..cols], &mut data[r * rb..][..rb]);
            }
            let w = Matrix {
                ty,
                data: &data,
                rows,
                cols,
            };
            let x: Vec<f32> = (0..n * cols).map(|_| splitmix(&mut seed)).collect();
            let mut y = vec![0f32; n * rows];
            let mut scratch = MatmulScratch::default();
            let mut time = |k: &Kernels| {
                pool.install(|| {
                    kernels::matmul_with(k, &w, &x, n, &mut y, &mut scratch);
                    let t = Instant::now();
                    let mut calls = 0;
                    while calls < 3 || t.elapsed().as_secs_f64() < 0.15 {
                        kernels::matmul_with(k, &w, &x, n, &mut y, &mut scratch);
                        calls += 1;
                    }
                    (rows * cols * n) as f64 * calls as f64 / t.elapsed().as_secs_f64() / 1e9
                })
            };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..7 {
                a.push(time(&without));
                b.push(time(with));
            }
            let (a, b) = (median(a), median(b));
            println!(
                "{:<6} {:>10} {:>12.1} {:>12.1} {:>7.2}",
                ty.name(),
                format!("{rows}x{cols}"),
                a,
                b,
                b / a
            );
        }
    }
}
