//! The matmul kernels: every kernel table this CPU can run (generic, avx2,
//! avx512, ...), for every weight type, against
//! * ggml's own activation quantizers and `vec_dot` results (golden data from
//!   `tools/ggml-ref dot`, see its README), and
//! * the generic (scalar reference) path, through the whole `matmul_with`
//!   (activation quantization, parallel chunks, tiles, transposition) on odd
//!   shapes: one row, odd row counts, rows spanning several tiles and tasks,
//!   n = 1 and n > 1.
//!
//! Tolerance for a dot product of `cols` terms: `|ours − theirs| ≤ 1e-5 ·
//! Σ|wᵢ·xᵢ|` (plus 1e-30 for all-zero rows). Rationale: each path sums the
//! same exactly-computed block integers, scaled by the same f32 products; they
//! differ only in the order of at most ~1024 f32 additions, whose error is
//! bounded by about (number of additions on the longest chain) · 2⁻²⁴ · Σ|terms|
//! ≈ 32 · 6e-8 ≈ 2e-6 for the SIMD lane layouts here. 1e-5 leaves 5× margin
//! while still catching any wrong block, scale or offset (which shows as an
//! error of the order of a whole block's contribution, ≥ 1e-3 relative).

use std::path::{Path, PathBuf};

use tah::kernels::{self, ActType, Kernels, MatmulScratch, Matrix};
use tah::quant::{self, GgmlType, ALL_TYPES};

const REL_TOL: f64 = 1e-5;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ggml-golden")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&read(&data_dir().join("dot-manifest.json"))).expect("dot-manifest.json")
}

/// Dequantized activation row (any ActType).
fn act_values(at: ActType, b: &[u8], cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; cols];
    match at {
        ActType::F32 => out.copy_from_slice(&f32s(b)),
        ActType::F16 => quant::dequantize(GgmlType::F16, b, &mut out),
        ActType::Bf16 => quant::dequantize(GgmlType::Bf16, b, &mut out),
        ActType::Q8_0 => quant::dequantize(GgmlType::Q8_0, b, &mut out),
        ActType::Q8_1 => quant::q8_1::dequantize_row(b, &mut out),
        ActType::Q8K => quant::q8_k::dequantize_row(b, &mut out),
    }
    out
}

/// Σ|w·x| over dequantized values: the scale of the rounding error.
fn abs_terms(w: &[f32], x: &[f32]) -> f64 {
    w.iter()
        .zip(x)
        .map(|(a, b)| (*a as f64 * *b as f64).abs())
        .sum()
}

fn close(ours: f32, theirs: f32, scale: f64) -> bool {
    ((ours as f64) - (theirs as f64)).abs() <= REL_TOL * scale + 1e-30
}

#[test]
fn activation_quantizers_match_ggml_bytes() {
    let m = manifest();
    let acts = m["acts"].as_array().unwrap();
    assert_eq!(acts.len(), 3);
    for a in acts {
        let name = a["name"].as_str().unwrap();
        let (rows, cols) = (
            a["rows"].as_u64().unwrap() as usize,
            a["cols"].as_u64().unwrap() as usize,
        );
        let rb = a["row_bytes"].as_u64().unwrap() as usize;
        let at = match name {
            "q8_0" => ActType::Q8_0,
            "q8_1" => ActType::Q8_1,
            "q8_k" => ActType::Q8K,
            _ => panic!("{name}"),
        };
        assert_eq!(at.row_bytes(cols), rb, "{name} row bytes");
        assert_eq!(
            a["ggml_id"].as_u64().unwrap() as u32,
            at.ggml_id(),
            "{name} id"
        );
        let input = f32s(&read(&data_dir().join(format!("act-{name}.in.f32"))));
        let want = read(&data_dir().join(format!("act-{name}.ggml.bin")));
        let descs = a["row_descriptions"].as_array().unwrap();
        let mut ours = vec![0u8; rb];
        for r in 0..rows {
            ours.fill(0xA5);
            at.quantize(&input[r * cols..(r + 1) * cols], &mut ours);
            let theirs = &want[r * rb..(r + 1) * rb];
            if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
                panic!(
                    "{name} row {r} ({}): byte {i} ours {:#04x} ggml {:#04x}",
                    descs[r], ours[i], theirs[i]
                );
            }
        }
    }
}

#[test]
fn every_path_matches_ggml_vec_dot() {
    let m = manifest();
    let dots = m["dots"].as_array().unwrap();
    for ty in ALL_TYPES {
        assert!(
            dots.iter().any(|d| d["name"] == ty.name()),
            "no dot data for {ty}"
        );
    }
    let paths = kernels::available();
    eprintln!(
        "kernel paths on this CPU: {:?}",
        paths.iter().map(|k| k.name).collect::<Vec<_>>()
    );
    let mut failures = Vec::new();
    for d in dots {
        let name = d["name"].as_str().unwrap();
        let ty = GgmlType::from_name(name).unwrap();
        let at = ActType::of(ty);
        assert_eq!(
            d["vec_dot_type"].as_u64().unwrap() as u32,
            at.ggml_id(),
            "{name}: vec_dot type"
        );
        let g = |k: &str| d[k].as_u64().unwrap() as usize;
        let (cols, wr, xr, wb, xb) = (
            g("cols"),
            g("w_rows"),
            g("x_rows"),
            g("w_row_bytes"),
            g("x_row_bytes"),
        );
        assert_eq!(ty.row_bytes(cols as u64), Some(wb as u64));
        assert_eq!(at.row_bytes(cols), xb);
        let dir = data_dir();
        let w = read(&dir.join(format!("dot-{name}.w.bin")));
        let x = f32s(&read(&dir.join(format!("dot-{name}.x.f32"))));
        let xq = read(&dir.join(format!("dot-{name}.xq.bin")));
        let want = f32s(&read(&dir.join(format!("dot-{name}.out.f32"))));
        // our activation conversion gives ggml's bytes
        let mut ours = vec![0u8; xb];
        for i in 0..xr {
            at.quantize(&x[i * cols..(i + 1) * cols], &mut ours);
            assert!(
                ours == xq[i * xb..(i + 1) * xb],
                "{name}: activation row {i} differs from ggml's from_float"
            );
        }
        let wdeq: Vec<Vec<f32>> = (0..wr)
            .map(|j| quant::dequantize_to_vec(ty, &w[j * wb..(j + 1) * wb], cols))
            .collect();
        let xdeq: Vec<Vec<f32>> = (0..xr)
            .map(|i| act_values(at, &xq[i * xb..(i + 1) * xb], cols))
            .collect();
        for k in &paths {
            let mut out = vec![f32::NAN; wr * xr];
            (k.tile(ty))(cols, &w, wb, &xq, xb, xr, &mut out);
            // and one activation row at a time (the decode shape)
            let mut out1 = vec![f32::NAN; wr];
            let mut exact = 0;
            for i in 0..xr {
                (k.tile(ty))(cols, &w, wb, &xq[i * xb..(i + 1) * xb], xb, 1, &mut out1);
                for j in 0..wr {
                    let theirs = want[j * xr + i];
                    let scale = abs_terms(&wdeq[j], &xdeq[i]);
                    for (what, v) in [("tile", out[j * xr + i]), ("n=1", out1[j])] {
                        if v.to_bits() == theirs.to_bits() {
                            exact += 1;
                        }
                        if !close(v, theirs, scale) {
                            failures.push(format!(
                                "{} {name} {what} w{j}·x{i}: ours {v:e} ggml {theirs:e} (Σ|terms| {scale:e}, rel {:e})",
                                k.name,
                                ((v as f64 - theirs as f64).abs() / scale)
                            ));
                        }
                    }
                }
            }
            eprintln!(
                "{:>8} {name:>5}: {exact}/{} bit-identical to ggml",
                k.name,
                2 * wr * xr
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn generic_matches_ggml_scalar_vec_dot() {
    // ggml's own portable `ggml_vec_dot_*_generic` (quantized types): the
    // arithmetic our generic path copies. Bit-identical unless ggml's compiler
    // contracted a multiply-add into an FMA (ggml-cpu is built with -mfma).
    let m = manifest();
    let mut failures = Vec::new();
    for d in m["dots"].as_array().unwrap() {
        if d["generic"].is_null() {
            continue;
        }
        let name = d["name"].as_str().unwrap();
        let ty = GgmlType::from_name(name).unwrap();
        let at = ActType::of(ty);
        let g = |k: &str| d[k].as_u64().unwrap() as usize;
        let (cols, wr, xr, wb, xb) = (
            g("cols"),
            g("w_rows"),
            g("x_rows"),
            g("w_row_bytes"),
            g("x_row_bytes"),
        );
        let dir = data_dir();
        let w = read(&dir.join(format!("dot-{name}.w.bin")));
        let xq = read(&dir.join(format!("dot-{name}.xq.bin")));
        let want = f32s(&read(&dir.join(format!("dot-{name}.out-generic.f32"))));
        let mut out = vec![0f32; wr * xr];
        kernels::generic::KERNELS.tile(ty)(cols, &w, wb, &xq, xb, xr, &mut out);
        let mut exact = 0;
        for j in 0..wr {
            let wd = quant::dequantize_to_vec(ty, &w[j * wb..(j + 1) * wb], cols);
            for i in 0..xr {
                let xd = act_values(at, &xq[i * xb..(i + 1) * xb], cols);
                let (ours, theirs) = (out[j * xr + i], want[j * xr + i]);
                exact += (ours.to_bits() == theirs.to_bits()) as usize;
                if !close(ours, theirs, abs_terms(&wd, &xd)) {
                    failures.push(format!(
                        "{name} w{j}·x{i}: ours {ours:e} ggml generic {theirs:e}"
                    ));
                }
            }
        }
        eprintln!(
            "generic {name:>5}: {exact}/{} bit-identical to ggml's scalar vec_dot",
            wr * xr
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// splitmix64 for test inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn gauss(&mut self) -> f32 {
        let u1 = 1.0 - (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let u2 = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let vals: Vec<f32> = (0..rows * cols)
        .map(|i| rng.gauss() * 0.05 * (1 + (i / 32) % 3) as f32)
        .collect();
    let mut bytes = vec![0u8; rows * ty.row_bytes(cols as u64).unwrap() as usize];
    let rb = bytes.len() / rows;
    for r in 0..rows {
        quant::quantize(
            ty,
            &vals[r * cols..(r + 1) * cols],
            &mut bytes[r * rb..(r + 1) * rb],
        );
    }
    bytes
}

fn check_against_generic(
    k: &Kernels,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    n: usize,
    seed: u64,
) -> Vec<String> {
    let mut rng = Rng(seed);
    let data = random_matrix(ty, rows, cols, &mut rng);
    let w = Matrix {
        ty,
        data: &data,
        rows,
        cols,
    };
    let x: Vec<f32> = (0..n * cols).map(|_| rng.gauss()).collect();
    let mut want = vec![0f32; n * rows];
    let mut got = vec![f32::NAN; n * rows];
    let mut s1 = MatmulScratch::default();
    let mut s2 = MatmulScratch::default();
    kernels::matmul_with(&kernels::generic::KERNELS, &w, &x, n, &mut want, &mut s1);
    kernels::matmul_with(k, &w, &x, n, &mut got, &mut s2);
    // scale: Σ|w·x| with the dequantized weights and activations
    let at = ActType::of(ty);
    let mut xq = vec![0u8; at.row_bytes(cols)];
    let mut bad = Vec::new();
    for i in 0..n {
        at.quantize(&x[i * cols..(i + 1) * cols], &mut xq);
        let xd = act_values(at, &xq, cols);
        for r in 0..rows {
            let wd = quant::dequantize_to_vec(ty, w.row(r), cols);
            let scale = abs_terms(&wd, &xd);
            let (a, b) = (got[i * rows + r], want[i * rows + r]);
            if !close(a, b, scale) {
                bad.push(format!(
                    "{} {ty} {rows}x{cols} n={n}: y[{i}][{r}] = {a:e}, generic {b:e} (Σ|terms| {scale:e})",
                    k.name
                ));
            }
        }
    }
    bad
}

#[test]
fn every_path_matches_generic_on_odd_shapes() {
    let mut failures = Vec::new();
    for k in kernels::available() {
        for ty in ALL_TYPES {
            let bl = ty.block_len().max(32);
            // one block; a few blocks; seven (whole pairs, then a single
            // block, as in the decode kernels' tail); many (more than one
            // tile of columns)
            let col_cases = if bl == 256 {
                [256, 512, 768, 1280]
            } else {
                [32, 96, 224, 1056]
            };
            for (ci, &cols) in col_cases.iter().enumerate() {
                for &rows in &[1usize, 3, 5, 8, 13] {
                    for &n in &[1usize, 2, 3, 4, 5, 9] {
                        let seed = (ty.id() as u64) << 32
                            | (ci as u64) << 16
                            | (rows as u64) << 8
                            | n as u64;
                        failures.extend(check_against_generic(k, ty, rows, cols, n, seed));
                    }
                }
            }
            // large enough to be split over several parallel tasks
            for &n in &[1usize, 6] {
                failures.extend(check_against_generic(k, ty, 301, 1024, n, 7 + n as u64));
            }
        }
    }
    let count = failures.len();
    failures.truncate(30);
    assert!(
        count == 0,
        "{count} mismatches, first ones:\n{}",
        failures.join("\n")
    );
}

#[test]
fn generic_matmul_is_close_to_f32_product() {
    // The quantized product approximates the f32 product of the dequantized
    // weights with the unquantized activations (a sanity check of the whole
    // pipeline independent of ggml data).
    let (rows, cols, n) = (17, 512, 3);
    for ty in ALL_TYPES {
        let mut rng = Rng(99 + ty.id() as u64);
        let data = random_matrix(ty, rows, cols, &mut rng);
        let w = Matrix {
            ty,
            data: &data,
            rows,
            cols,
        };
        let x: Vec<f32> = (0..n * cols).map(|_| rng.gauss()).collect();
        let mut y = vec![0f32; n * rows];
        kernels::matmul(&w, &x, n, &mut y, &mut MatmulScratch::default());
        for i in 0..n {
            for r in 0..rows {
                let wd = quant::dequantize_to_vec(ty, w.row(r), cols);
                let exact: f64 = wd
                    .iter()
                    .zip(&x[i * cols..])
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                let scale = abs_terms(&wd, &x[i * cols..(i + 1) * cols]);
                // activation quantization error: ≤ half a q8 step per value
                let tol = match ActType::of(ty) {
                    ActType::F32 => 1e-5,
                    ActType::F16 => 1e-3,
                    ActType::Bf16 => 8e-3,
                    _ => 1.5e-2,
                } * scale;
                assert!(
                    (y[i * rows + r] as f64 - exact).abs() <= tol,
                    "{ty}: y[{i}][{r}] = {} vs {exact} (tol {tol:e})",
                    y[i * rows + r]
                );
            }
        }
    }
}

#[test]
fn dispatch_names_and_dot_f32() {
    let avail = kernels::available();
    assert_eq!(avail[0].name, "generic");
    for k in &avail {
        assert!(std::ptr::eq(kernels::by_name(k.name).unwrap(), *k));
        for len in [0usize, 1, 7, 8, 31, 64, 65, 200] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = (k.dot_f32)(&a, &b);
            assert!(
                (got as f64 - want).abs() <= 1e-5 * len as f64 + 1e-6,
                "{} len {len}",
                k.name
            );
        }
    }
    assert!(kernels::by_name("no-such-isa").is_none());
    // the selected table is one of the available ones
    let chosen = kernels::kernels();
    assert!(avail.iter().any(|k| std::ptr::eq(*k, chosen)));
}

/// Batched decoding's products (`MatmulScratch::rowwise`): every activation
/// row of a several-row product bit-for-bit what the row gives alone, on
/// every table and type — through the table's `decode_multi` kernel where
/// it has one, else the one-row tile in turn — over shapes with odd block
/// counts, weight rows not a multiple of 4, activation rows not a multiple
/// of 4, and enough rows for several parallel tasks.
#[test]
fn rowwise_products_equal_each_row_alone() {
    let mut failures = Vec::new();
    for k in kernels::available() {
        for ty in ALL_TYPES {
            let bl = ty.block_len().max(32);
            let cols_cases = if bl == 256 {
                [256, 768, 1280]
            } else {
                [96, 224, 1056]
            };
            for (ci, &cols) in cols_cases.iter().enumerate() {
                for &(rows, n) in &[(5usize, 2usize), (8, 3), (13, 4), (301, 7), (9, 9)] {
                    let mut rng = Rng(0xB47C4
                        ^ (ty.id() as u64) << 20
                        ^ (ci as u64) << 12
                        ^ (rows * 16 + n) as u64);
                    let data = random_matrix(ty, rows, cols, &mut rng);
                    let w = Matrix {
                        ty,
                        data: &data,
                        rows,
                        cols,
                    };
                    let x: Vec<f32> = (0..n * cols).map(|_| rng.gauss()).collect();
                    let mut together = vec![f32::NAN; n * rows];
                    let mut s = MatmulScratch::default();
                    s.rowwise = true;
                    kernels::matmul_with(k, &w, &x, n, &mut together, &mut s);
                    for i in 0..n {
                        let mut alone = vec![f32::NAN; rows];
                        let mut s1 = MatmulScratch::default();
                        kernels::matmul_with(
                            k,
                            &w,
                            &x[i * cols..(i + 1) * cols],
                            1,
                            &mut alone,
                            &mut s1,
                        );
                        let got = &together[i * rows..(i + 1) * rows];
                        if got
                            .iter()
                            .zip(&alone)
                            .any(|(a, b)| a.to_bits() != b.to_bits())
                        {
                            failures.push(format!(
                                "{} {ty} {rows}x{cols} n={n}: row {i} differs (multi kernel: {})",
                                k.name,
                                (k.decode_multi)(ty).is_some()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
