//! `ggml-ref`: runs the real ggml / llama.cpp (vendored by the `llama-cpp-sys-2`
//! crate) to produce golden data for tah's tests.
//!
//! ```text
//! ggml-ref quant OUT_DIR [--extra-rows N]  quantize fixed inputs with ggml_quantize_chunk
//!                                          (N more random rows per type: a stress set)
//! ggml-ref tokenize MODEL.gguf OUT.json  tokenize fixed strings with llama_tokenize
//! ggml-ref dot OUT_DIR                   activation quantizers (q8_0, q8_1, q8_K) and
//!                                          the CPU backend's vec_dot for every weight type
//! ```
//!
//! See README.md next to this file for the exact regeneration commands.

use std::ffi::{CStr, CString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use llama_cpp_sys_2 as sys;
use serde_json::{json, Value};

/// The crate version in Cargo.toml (pinned with `=`), recorded in the manifests.
const SYS_CRATE: &str = "llama-cpp-sys-2 0.1.161";
/// The llama-cpp-rs commit that crate version was published from (its
/// `.cargo_vcs_info.json`); ggml itself reports no commit in this build.
const SYS_CRATE_VCS: &str = "utilityai/llama-cpp-rs e7af607ebd5ec2932709ef918c17cca2f9b0fce4";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let res = match args.get(1).map(String::as_str) {
        Some("quant") if args.len() == 3 => quant(Path::new(&args[2]), 0),
        Some("quant") if args.len() == 5 && args[3] == "--extra-rows" => {
            let n = args[4].parse().map_err(|e| format!("--extra-rows: {e}"));
            n.and_then(|n| quant(Path::new(&args[2]), n))
        }
        Some("tokenize") if args.len() == 4 => tokenize(Path::new(&args[2]), Path::new(&args[3])),
        Some("dot") if args.len() == 3 => dot(Path::new(&args[2])),
        _ => Err("usage: ggml-ref quant OUT_DIR [--extra-rows N] | ggml-ref tokenize MODEL.gguf OUT.json | ggml-ref dot OUT_DIR".into()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ggml-ref: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Deterministic inputs

/// splitmix64: a tiny, well-known PRNG; fixed seeds make the inputs repeatable
/// (the inputs are stored anyway, so tests never need to rerun this).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Standard normal by Box–Muller.
    fn gauss(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

const COLS: usize = 512;

/// One input row: what it exercises, and its values.
struct Row {
    desc: &'static str,
    vals: Vec<f32>,
}

/// Values on a grid of `1/den` in `[lo, hi]`, with `lo` and `hi` placed in every
/// block of 32 so each block's scale is a power of two and many values fall
/// exactly on rounding ties.
fn grid_row(rng: &mut SplitMix64, den: f64, lo: f64, hi: f64) -> Vec<f32> {
    let steps = ((hi - lo) * den).round() as u64;
    let mut v: Vec<f32> = (0..COLS)
        .map(|_| (lo + rng.below(steps + 1) as f64 / den) as f32)
        .collect();
    for b in 0..COLS / 32 {
        let a = b * 32 + rng.below(16) as usize;
        v[a] = lo as f32;
        v[a + 16] = hi as f32;
    }
    v
}

/// The rows shared by all quantized types (14 rows of 512 values).
fn quant_rows(seed: u64) -> Vec<Row> {
    let mut rng = SplitMix64(seed);
    let mut rows = Vec::new();
    let gauss = |rng: &mut SplitMix64, s: f64| -> Vec<f32> {
        (0..COLS).map(|_| (rng.gauss() * s) as f32).collect()
    };
    rows.push(Row {
        desc: "gaussian sigma 1",
        vals: gauss(&mut rng, 1.0),
    });
    rows.push(Row {
        desc: "gaussian sigma 0.02 (weight-like)",
        vals: gauss(&mut rng, 0.02),
    });
    rows.push(Row {
        desc: "all zeros",
        vals: vec![0.0; COLS],
    });
    let mut v = gauss(&mut rng, 0.1);
    v[37] = 1000.0;
    v[300] = -5000.0;
    rows.push(Row {
        desc: "gaussian sigma 0.1 with outliers +1000 at 37, -5000 at 300",
        vals: v,
    });
    rows.push(Row {
        desc: "tiny gaussian sigma 1e-8",
        vals: gauss(&mut rng, 1e-8),
    });
    let mut v: Vec<f32> = (0..COLS)
        .map(|i| {
            let m = 0.5 + 1.5 * rng.uniform();
            (if (i + (i / 7)) % 2 == 0 { m } else { -m }) as f32
        })
        .collect();
    for x in &mut v[64..96] {
        *x = x.abs();
    }
    for x in &mut v[96..128] {
        *x = -x.abs();
    }
    rows.push(Row {
        desc: "mixed signs |x| in [0.5,2]; block 2 all positive, block 3 all negative",
        vals: v,
    });
    rows.push(Row {
        desc: "ties: multiples of 1/8 in [-4,3.5], -4 and 3.5 in every block of 32",
        vals: grid_row(&mut rng, 8.0, -4.0, 3.5),
    });
    rows.push(Row {
        desc: "ties: multiples of 1/16 in [-4,3.75], -4 and 3.75 in every block of 32",
        vals: grid_row(&mut rng, 16.0, -4.0, 3.75),
    });
    rows.push(Row {
        desc: "ties: multiples of 1/128 in [-127/64,127/64], both ends in every block of 32",
        vals: grid_row(&mut rng, 128.0, -127.0 / 64.0, 127.0 / 64.0),
    });
    let v: Vec<f32> = (0..COLS)
        .map(|i| {
            let e = ((i / 32) as i32 * 7 % 21) - 10;
            ((2.0 * rng.uniform() - 1.0) * 2f64.powi(e)) as f32
        })
        .collect();
    rows.push(Row {
        desc: "uniform [-1,1] times 2^e, e varying per block of 32 in [-10,10]",
        vals: v,
    });
    let v: Vec<f32> = (0..COLS).map(|_| (0.5 + rng.uniform()) as f32).collect();
    rows.push(Row {
        desc: "positive only, uniform [0.5,1.5]",
        vals: v,
    });
    let v: Vec<f32> = (0..COLS)
        .map(|_| {
            if rng.below(16) == 0 {
                rng.gauss() as f32
            } else {
                0.0
            }
        })
        .collect();
    rows.push(Row {
        desc: "sparse: 1 in 16 gaussian, rest zero",
        vals: v,
    });
    let mut v = vec![0.3f32; COLS];
    for (i, x) in v[256..].iter_mut().enumerate() {
        *x = if (i / 32) % 2 == 0 {
            0.0
        } else {
            (rng.gauss() * 0.5) as f32
        };
    }
    rows.push(Row {
        desc: "constant 0.3 for 256 values; then alternating all-zero and gaussian blocks of 32",
        vals: v,
    });
    let v: Vec<f32> = (0..COLS).map(|_| rng.gauss().powi(3) as f32).collect();
    rows.push(Row {
        desc: "heavy-tailed: gaussian cubed",
        vals: v,
    });
    rows
}

/// Rows for the float types (f32/f16/bf16): the quantized rows plus special bit
/// patterns (ties between neighbours, subnormals, overflow, inf, NaN payloads).
fn float_rows(seed: u64) -> Vec<Row> {
    let mut rows = quant_rows(seed);
    let mut rng = SplitMix64(seed ^ 0xF10A7);
    // Random finite f32 bit patterns whose low bits sit exactly on the f16 and
    // bf16 rounding ties, or one ulp either side.
    let lows: [u32; 9] = [
        0x8000, 0x7FFF, 0x8001, 0x1000, 0x0FFF, 0x1001, 0x18000, 0x0000, 0xFFFF,
    ];
    let v: Vec<f32> = (0..COLS)
        .map(|i| {
            // exponent in a range that covers f16 normals, subnormals and overflow
            let e = 127 - 30 + rng.below(48) as u32;
            let sign = (rng.below(2) as u32) << 31;
            let mant = (rng.next_u64() as u32) & 0x7F_FFFF;
            let low = lows[i % lows.len()];
            let mask = if low > 0xFFFF { 0x1_FFFF } else { 0xFFFF };
            f32::from_bits(sign | (e << 23) | (mant & !mask) | low)
        })
        .collect();
    rows.push(Row {
        desc: "random bit patterns on / next to f16 and bf16 ties",
        vals: v,
    });
    let specials: [u32; 24] = [
        0x0000_0000, // +0
        0x8000_0000, // -0
        0x7F80_0000, // +inf
        0xFF80_0000, // -inf
        0x7FC0_0000, // canonical quiet NaN
        0xFFC0_0000, // negative quiet NaN
        0x7F80_0001, // signalling NaN, low payload
        0x7FA0_0000, // signalling NaN, high payload
        0xFFC1_2345, // quiet NaN with payload
        0x0000_0001, // smallest f32 subnormal
        0x807F_FFFF, // largest f32 subnormal, negative
        0x7F7F_FFFF, // f32 max (overflows f16; rounds to inf in bf16)
        0x477F_E000, // 65504, f16 max
        0x477F_F000, // 65520: f16 tie to inf
        0x477F_EFFF, // just below 65520
        0x3380_0000, // 2^-24: smallest f16 subnormal
        0x3300_0000, // 2^-25: tie between 0 and 2^-24
        0x3300_0001, // just above that tie
        0x3880_0000, // 2^-14: smallest f16 normal
        0x387F_E000, // largest f16 subnormal
        0x3F80_8000, // 1 + 2^-8: bf16 tie, rounds to even (down)
        0x3F81_8000, // bf16 tie, rounds to even (up)
        0x3F80_1000, // 1 + 2^-11: f16 tie
        0x3F80_3000, // f16 tie, rounds up
    ];
    let v: Vec<f32> = (0..COLS)
        .map(|i| {
            if i < specials.len() {
                f32::from_bits(specials[i])
            } else {
                let s = specials[rng.below(specials.len() as u64) as usize];
                f32::from_bits(s ^ ((rng.below(2) as u32) << 31))
            }
        })
        .collect();
    rows.push(Row {
        desc: "special values: zeros, infinities, NaNs, subnormals, f16 limits",
        vals: v,
    });
    rows
}

/// `n` extra random rows (for stress runs, not committed): each row picks a
/// distribution and a scale at random.
fn extra_rows(seed: u64, n: usize) -> Vec<Row> {
    let mut rng = SplitMix64(seed ^ 0xE47A_0000);
    (0..n)
        .map(|_| {
            let scale = 10f64.powf(rng.uniform() * 9.0 - 6.0);
            let kind = rng.below(7);
            let mut v: Vec<f32> = (0..COLS)
                .map(|i| {
                    let g = rng.gauss();
                    let x = match kind {
                        0 => g,
                        1 => 2.0 * rng.uniform() - 1.0,
                        2 => rng.uniform() + 0.1,
                        3 => {
                            if rng.below(8) == 0 {
                                g
                            } else {
                                0.0
                            }
                        }
                        4 => g * g * g,
                        5 => (g * 8.0).round() / 8.0,
                        _ => g * 2f64.powi((i / 32) as i32 % 9 - 4),
                    };
                    (x * scale) as f32
                })
                .collect();
            if rng.below(4) == 0 {
                let i = rng.below(COLS as u64) as usize;
                v[i] *= 100.0;
            }
            Row {
                desc: "extra random row",
                vals: v,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// `quant`

/// The types we generate, with their ggml ids (must match `tah::quant::GgmlType`).
const TYPES: [(&str, sys::ggml_type); 10] = [
    ("f32", sys::GGML_TYPE_F32),
    ("f16", sys::GGML_TYPE_F16),
    ("bf16", sys::GGML_TYPE_BF16),
    ("q8_0", sys::GGML_TYPE_Q8_0),
    ("q4_0", sys::GGML_TYPE_Q4_0),
    ("q4_1", sys::GGML_TYPE_Q4_1),
    ("q5_0", sys::GGML_TYPE_Q5_0),
    ("q5_1", sys::GGML_TYPE_Q5_1),
    ("q4_k", sys::GGML_TYPE_Q4_K),
    ("q6_k", sys::GGML_TYPE_Q6_K),
];

fn write_f32(path: &Path, v: &[f32]) -> Result<(), String> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: ggml returns pointers to static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Quantizes `x` (one row of whole blocks) with ggml.
fn ggml_quantize(ty: sys::ggml_type, x: &[f32]) -> Vec<u8> {
    // SAFETY: ggml_row_size only reads its static type table.
    let n = unsafe { sys::ggml_row_size(ty, x.len() as i64) };
    let mut out = vec![0u8; n];
    // SAFETY: `x` is one row of x.len() floats (a whole number of blocks) and
    // `out` has exactly the row's size; no importance matrix.
    let w = unsafe {
        sys::ggml_quantize_chunk(
            ty,
            x.as_ptr(),
            out.as_mut_ptr().cast(),
            0,
            1,
            x.len() as i64,
            std::ptr::null(),
        )
    };
    assert_eq!(w, n);
    out
}

/// `nrows` rows made of blocks on which ggml's quantizer sits near a decision:
/// from a pool of random blocks (the `extra_rows` distributions), keep those
/// whose bytes change when every input moves by one ulp. Such blocks catch a
/// reimplementation that evaluates a sum or product in a different order,
/// which ordinary random blocks rarely do.
fn near_tie_rows(ty: sys::ggml_type, block: usize, seed: u64, nrows: usize) -> Vec<Row> {
    let mut rng = SplitMix64(seed ^ 0x0071_E5ED);
    let want = nrows * COLS / block;
    let mut kept: Vec<f32> = Vec::with_capacity(nrows * COLS);
    let mut pool_seed = seed ^ 0x9001;
    let mut tried = 0usize;
    while kept.len() < want * block && tried < 2_000_000 {
        pool_seed += 1;
        for r in extra_rows(pool_seed, 1) {
            for x in r.vals.chunks_exact(block) {
                tried += 1;
                let nudged: Vec<f32> = x
                    .iter()
                    .map(|&v| {
                        if v == 0.0 {
                            v
                        } else if rng.below(2) == 0 {
                            f32::from_bits(v.to_bits() + 1)
                        } else {
                            f32::from_bits(v.to_bits() - 1)
                        }
                    })
                    .collect();
                if kept.len() < want * block && ggml_quantize(ty, x) != ggml_quantize(ty, &nudged) {
                    kept.extend_from_slice(x);
                }
            }
        }
    }
    eprintln!(
        "  near-tie blocks: kept {} of {tried} tried",
        kept.len() / block
    );
    kept.chunks_exact(COLS)
        .map(|c| Row {
            desc: "near-tie blocks: ggml's bytes change when the inputs move by one ulp",
            vals: c.to_vec(),
        })
        .collect()
}

fn quant(out: &Path, extra: usize) -> Result<(), String> {
    fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    // SAFETY: plain initialisers with no arguments; they fill ggml's global
    // tables (fp16 lookup, CPU feature detection) and may be called repeatedly.
    unsafe {
        sys::ggml_cpu_init();
    }
    let mut types = Vec::new();
    for (ti, &(name, ty)) in TYPES.iter().enumerate() {
        let seed = 0x7A4_0000 + ti as u64;
        let mut rows = if matches!(name, "f32" | "f16" | "bf16") {
            float_rows(seed)
        } else {
            quant_rows(seed)
        };
        let (block, near) = match name {
            "q4_k" | "q6_k" => (256, 32),
            "q8_0" | "q4_0" | "q4_1" | "q5_0" | "q5_1" => (32, 8),
            _ => (1, 0),
        };
        if near > 0 {
            rows.extend(near_tie_rows(ty, block, seed, near));
        }
        rows.extend(extra_rows(seed, extra));
        let nrows = rows.len();
        let input: Vec<f32> = rows.iter().flat_map(|r| r.vals.iter().copied()).collect();
        // SAFETY: ggml_row_size only reads its static type table.
        let row_bytes = unsafe { sys::ggml_row_size(ty, COLS as i64) };
        let mut bytes = vec![0u8; row_bytes * nrows];
        // SAFETY: `input` holds nrows*COLS floats and `bytes` nrows*row_bytes
        // bytes, exactly what ggml_quantize_chunk reads and writes for
        // start = 0; no importance matrix (NULL) is allowed for these types.
        let written = unsafe {
            sys::ggml_quantize_chunk(
                ty,
                input.as_ptr(),
                bytes.as_mut_ptr().cast(),
                0,
                nrows as i64,
                COLS as i64,
                std::ptr::null(),
            )
        };
        if written != bytes.len() {
            return Err(format!(
                "{name}: ggml wrote {written} bytes, expected {}",
                bytes.len()
            ));
        }
        let mut deq = vec![0f32; nrows * COLS];
        if ty == sys::GGML_TYPE_F32 {
            deq.copy_from_slice(&input);
        } else {
            // SAFETY: ggml_get_type_traits returns a pointer into ggml's static
            // table, valid for the whole program.
            let traits = unsafe { &*sys::ggml_get_type_traits(ty) };
            let to_float = traits.to_float.ok_or(format!("{name}: no to_float"))?;
            for r in 0..nrows {
                // SAFETY: one row of row_bytes bytes in, COLS floats out.
                unsafe {
                    to_float(
                        bytes[r * row_bytes..].as_ptr().cast(),
                        deq[r * COLS..].as_mut_ptr(),
                        COLS as i64,
                    )
                };
            }
        }
        write_f32(&out.join(format!("{name}.in.f32")), &input)?;
        fs::write(out.join(format!("{name}.ggml.bin")), &bytes).map_err(|e| e.to_string())?;
        write_f32(&out.join(format!("{name}.deq.f32")), &deq)?;
        types.push(json!({
            "name": name,
            "ggml_id": ty,
            "rows": nrows,
            "cols": COLS,
            "row_bytes": row_bytes,
            "seed": seed,
            "row_descriptions": rows.iter().map(|r| r.desc).collect::<Vec<_>>(),
        }));
        eprintln!("{name}: {nrows} rows x {COLS}, {row_bytes} bytes/row");
    }
    let manifest = json!({
        "generator": "tools/ggml-ref: ggml-ref quant tests/data/ggml-golden",
        "source": SYS_CRATE,
        "source_vcs": SYS_CRATE_VCS,
        "ggml_version": cstr(unsafe_ggml_version()),
        "ggml_commit": cstr(unsafe_ggml_commit()),
        "call": "ggml_quantize_chunk(type, in, out, 0, rows, cols, NULL); dequantized with ggml_get_type_traits(type)->to_float per row (f32: copy)",
        "files": "<name>.in.f32 = input rows (little-endian f32, row-major); <name>.ggml.bin = ggml's bytes (rows * row_bytes); <name>.deq.f32 = ggml's dequantized values (little-endian f32)",
        "types": types,
    });
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())? + "\n";
    fs::write(out.join("manifest.json"), text).map_err(|e| e.to_string())?;
    Ok(())
}

fn unsafe_ggml_version() -> *const std::os::raw::c_char {
    // SAFETY: returns a pointer to a static string.
    unsafe { sys::ggml_version() }
}

fn unsafe_ggml_commit() -> *const std::os::raw::c_char {
    // SAFETY: returns a pointer to a static string.
    unsafe { sys::ggml_commit() }
}

// ---------------------------------------------------------------------------
// `dot`

/// Columns of the dot-product rows: four k-quant super-blocks, 32 blocks of 32.
const DOT_COLS: usize = 1024;
/// Weight rows and activation rows per type in the dot-product data.
const DOT_W_ROWS: usize = 8;
const DOT_X_ROWS: usize = 6;

/// Weight-like rows: small gaussians with per-block scale changes, outliers,
/// sparse and one-signed blocks.
fn dot_weight_rows(seed: u64, n: usize, cols: usize) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64(seed);
    (0..n)
        .map(|r| {
            let mut v: Vec<f32> = (0..cols)
                .map(|i| {
                    let g = rng.gauss();
                    let x = match r % 4 {
                        0 => g * 0.02,
                        1 => g * 0.05 * 2f64.powi((i / 32) as i32 % 5 - 2),
                        2 => {
                            if (i / 32) % 3 == 0 {
                                (0.01 + 0.02 * rng.uniform())
                                    * if (i / 96) % 2 == 0 { 1.0 } else { -1.0 }
                            } else {
                                g * 0.03
                            }
                        }
                        _ => g * g * g * 0.01,
                    };
                    x as f32
                })
                .collect();
            if r % 3 == 1 {
                let i = rng.below(cols as u64) as usize;
                v[i] = 0.5;
            }
            v
        })
        .collect()
}

/// Activation-like rows: gaussian, large outliers (as in residual streams),
/// positive only (after SwiGLU-like gates), sparse, all zero, tiny.
fn dot_act_rows(seed: u64, cols: usize) -> (Vec<Vec<f32>>, Vec<&'static str>) {
    let mut rng = SplitMix64(seed);
    let mut rows = Vec::new();
    let mut descs = Vec::new();
    rows.push((0..cols).map(|_| rng.gauss() as f32).collect());
    descs.push("gaussian sigma 1");
    let mut v: Vec<f32> = (0..cols).map(|_| (rng.gauss() * 0.3) as f32).collect();
    v[5] = 40.0;
    v[700] = -90.0;
    rows.push(v);
    descs.push("gaussian sigma 0.3, outliers 40 at 5 and -90 at 700");
    rows.push((0..cols).map(|_| rng.uniform() as f32 * 3.0).collect());
    descs.push("uniform [0,3)");
    rows.push(
        (0..cols)
            .map(|i| {
                if i % 256 < 32 || rng.below(8) == 0 {
                    rng.gauss() as f32
                } else {
                    0.0
                }
            })
            .collect(),
    );
    descs.push("sparse: first 32 of each 256, then 1 in 8");
    let mut v = vec![0f32; cols];
    for x in &mut v[512..] {
        *x = (rng.gauss() * 2.0) as f32;
    }
    rows.push(v);
    descs.push("first half all zero, then gaussian sigma 2");
    rows.push((0..cols).map(|_| (rng.gauss() * 1e-3) as f32).collect());
    descs.push("gaussian sigma 1e-3");
    assert_eq!(rows.len(), DOT_X_ROWS);
    (rows, descs)
}

// ggml's reference quantizers for the activation formats (GGML_API in
// ggml-quants.h; not in the crate's bindings, but exported by ggml-base).
extern "C" {
    fn quantize_row_q8_0_ref(x: *const f32, y: *mut std::ffi::c_void, k: i64);
    fn quantize_row_q8_1_ref(x: *const f32, y: *mut std::ffi::c_void, k: i64);
    fn quantize_row_q8_K_ref(x: *const f32, y: *mut std::ffi::c_void, k: i64);
}

type VecDot = unsafe extern "C" fn(
    i32,
    *mut f32,
    usize,
    *const std::ffi::c_void,
    usize,
    *const std::ffi::c_void,
    usize,
    i32,
);

// ggml's portable scalar dot products (ggml-cpu/quants.c), compiled into
// ggml-cpu beside the SIMD ones, which fall back to them.
extern "C" {
    fn ggml_vec_dot_q4_0_q8_0_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        x: *const std::ffi::c_void,
        bx: usize,
        y: *const std::ffi::c_void,
        by: usize,
        nrc: i32,
    );
    fn ggml_vec_dot_q4_1_q8_1_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        x: *const std::ffi::c_void,
        bx: usize,
        y: *const std::ffi::c_void,
        by: usize,
        nrc: i32,
    );
    fn ggml_vec_dot_q5_0_q8_0_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        x: *const std::ffi::c_void,
        bx: usize,
        y: *const std::ffi::c_void,
        by: usize,
        nrc: i32,
    );
    fn ggml_vec_dot_q5_1_q8_1_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        x: *const std::ffi::c_void,
        bx: usize,
        y: *const std::ffi::c_void,
        by: usize,
        nrc: i32,
    );
    fn ggml_vec_dot_q8_0_q8_0_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        x: *const std::ffi::c_void,
        bx: usize,
        y: *const std::ffi::c_void,
        by: usize,
        nrc: i32,
    );
    fn ggml_vec_dot_q4_K_q8_K_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        x: *const std::ffi::c_void,
        bx: usize,
        y: *const std::ffi::c_void,
        by: usize,
        nrc: i32,
    );
    fn ggml_vec_dot_q6_K_q8_K_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        x: *const std::ffi::c_void,
        bx: usize,
        y: *const std::ffi::c_void,
        by: usize,
        nrc: i32,
    );
}

/// ggml's scalar `vec_dot` for a weight type (`None` for the float types,
/// whose scalar loops are compiled out of a SIMD build).
fn generic_dot(ty: sys::ggml_type) -> Option<(VecDot, &'static str)> {
    Some(match ty {
        sys::GGML_TYPE_Q4_0 => (
            ggml_vec_dot_q4_0_q8_0_generic as VecDot,
            "ggml_vec_dot_q4_0_q8_0_generic",
        ),
        sys::GGML_TYPE_Q4_1 => (
            ggml_vec_dot_q4_1_q8_1_generic,
            "ggml_vec_dot_q4_1_q8_1_generic",
        ),
        sys::GGML_TYPE_Q5_0 => (
            ggml_vec_dot_q5_0_q8_0_generic,
            "ggml_vec_dot_q5_0_q8_0_generic",
        ),
        sys::GGML_TYPE_Q5_1 => (
            ggml_vec_dot_q5_1_q8_1_generic,
            "ggml_vec_dot_q5_1_q8_1_generic",
        ),
        sys::GGML_TYPE_Q8_0 => (
            ggml_vec_dot_q8_0_q8_0_generic,
            "ggml_vec_dot_q8_0_q8_0_generic",
        ),
        sys::GGML_TYPE_Q4_K => (
            ggml_vec_dot_q4_K_q8_K_generic,
            "ggml_vec_dot_q4_K_q8_K_generic",
        ),
        sys::GGML_TYPE_Q6_K => (
            ggml_vec_dot_q6_K_q8_K_generic,
            "ggml_vec_dot_q6_K_q8_K_generic",
        ),
        _ => return None,
    })
}

/// The reference quantizer for an activation format (`None` for float types).
fn act_ref(
    ty: sys::ggml_type,
) -> Option<unsafe extern "C" fn(*const f32, *mut std::ffi::c_void, i64)> {
    match ty {
        sys::GGML_TYPE_Q8_0 => Some(quantize_row_q8_0_ref),
        sys::GGML_TYPE_Q8_1 => Some(quantize_row_q8_1_ref),
        sys::GGML_TYPE_Q8_K => Some(quantize_row_q8_K_ref),
        _ => None,
    }
}

fn row_size(ty: sys::ggml_type, cols: usize) -> usize {
    // SAFETY: ggml_row_size only reads its static type table.
    unsafe { sys::ggml_row_size(ty, cols as i64) }
}

fn dot(out: &Path) -> Result<(), String> {
    fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    // SAFETY: fills ggml's global tables; may be called repeatedly.
    unsafe {
        sys::ggml_cpu_init();
    }
    let write =
        |name: String, b: &[u8]| fs::write(out.join(&name), b).map_err(|e| format!("{name}: {e}"));

    // Activation quantizers: the reference (from_float_ref) bytes, and whether
    // the CPU backend's from_float (what a matmul runs) gives the same bytes.
    let mut acts = Vec::new();
    for (ai, &(name, ty)) in [
        ("q8_0", sys::GGML_TYPE_Q8_0),
        ("q8_1", sys::GGML_TYPE_Q8_1),
        ("q8_k", sys::GGML_TYPE_Q8_K),
    ]
    .iter()
    .enumerate()
    {
        let seed = 0xAC7_0000 + ai as u64;
        let rows = quant_rows(seed);
        let input: Vec<f32> = rows.iter().flat_map(|r| r.vals.iter().copied()).collect();
        let rb = row_size(ty, COLS);
        // zero-filled: ggml's q8_K leaves the bsums of an all-zero block unwritten
        let mut refb = vec![0u8; rb * rows.len()];
        let mut cpub = vec![0u8; rb * rows.len()];
        // SAFETY: static table, valid for the whole program.
        let cpu = unsafe { &*sys::ggml_get_type_traits_cpu(ty) };
        let fref = act_ref(ty).unwrap();
        let fcpu = cpu.from_float.ok_or(format!("{name}: no cpu from_float"))?;
        for r in 0..rows.len() {
            // SAFETY: COLS floats in, one row of rb bytes out.
            unsafe {
                fref(
                    input[r * COLS..].as_ptr(),
                    refb[r * rb..].as_mut_ptr().cast(),
                    COLS as i64,
                );
                fcpu(
                    input[r * COLS..].as_ptr(),
                    cpub[r * rb..].as_mut_ptr().cast(),
                    COLS as i64,
                );
            }
        }
        write_f32(&out.join(format!("act-{name}.in.f32")), &input)?;
        write(format!("act-{name}.ggml.bin"), &refb)?;
        acts.push(json!({
            "name": name,
            "ggml_id": ty,
            "rows": rows.len(),
            "cols": COLS,
            "row_bytes": rb,
            "seed": seed,
            "cpu_from_float_equals_ref": refb == cpub,
            "row_descriptions": rows.iter().map(|r| r.desc).collect::<Vec<_>>(),
        }));
        eprintln!(
            "act {name}: {} rows, cpu from_float == ref: {}",
            rows.len(),
            refb == cpub
        );
    }

    // Dot products: weights quantized by ggml_quantize_chunk, activations
    // converted by the CPU backend's from_float for the vec_dot type, and the
    // CPU backend's vec_dot of every weight row against every activation row.
    let mut dots = Vec::new();
    for (ti, &(name, ty)) in TYPES.iter().enumerate() {
        let seed = 0xD07_0000 + ti as u64;
        // SAFETY: static table.
        let cpu = unsafe { &*sys::ggml_get_type_traits_cpu(ty) };
        let vty = cpu.vec_dot_type;
        let vec_dot = cpu.vec_dot.ok_or(format!("{name}: no vec_dot"))?;
        if cpu.nrows != 1 {
            return Err(format!("{name}: vec_dot nrows {}", cpu.nrows));
        }
        let w_rows = dot_weight_rows(seed, DOT_W_ROWS, DOT_COLS);
        let (x_rows, x_descs) = dot_act_rows(seed ^ 0xAC7, DOT_COLS);
        let wb = row_size(ty, DOT_COLS);
        let xb = row_size(vty, DOT_COLS);
        let w_in: Vec<f32> = w_rows.concat();
        let x_in: Vec<f32> = x_rows.concat();
        let mut w = vec![0u8; wb * DOT_W_ROWS];
        // SAFETY: DOT_W_ROWS rows of DOT_COLS floats in, as many rows of wb bytes out.
        let written = unsafe {
            sys::ggml_quantize_chunk(
                ty,
                w_in.as_ptr(),
                w.as_mut_ptr().cast(),
                0,
                DOT_W_ROWS as i64,
                DOT_COLS as i64,
                std::ptr::null(),
            )
        };
        if written != w.len() {
            return Err(format!("{name}: quantize wrote {written}"));
        }
        let mut xq = vec![0u8; xb * DOT_X_ROWS];
        if vty == sys::GGML_TYPE_F32 {
            xq.copy_from_slice(
                &x_in
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            );
        } else {
            // The reference quantizer for q8 formats (bit-exact with tah's);
            // the CPU backend's from_float for f16 / bf16.
            // SAFETY: static table.
            let vcpu = unsafe { &*sys::ggml_get_type_traits_cpu(vty) };
            let from = match act_ref(vty) {
                Some(f) => f,
                None => vcpu
                    .from_float
                    .ok_or(format!("{name}: no from_float for its vec_dot type"))?,
            };
            for r in 0..DOT_X_ROWS {
                // SAFETY: DOT_COLS floats in, one row of xb bytes out.
                unsafe {
                    from(
                        x_in[r * DOT_COLS..].as_ptr(),
                        xq[r * xb..].as_mut_ptr().cast(),
                        DOT_COLS as i64,
                    )
                };
            }
        }
        let mut res = vec![0f32; DOT_W_ROWS * DOT_X_ROWS];
        for j in 0..DOT_W_ROWS {
            for i in 0..DOT_X_ROWS {
                let mut s = 0f32;
                // SAFETY: one weight row (wb bytes) and one activation row (xb
                // bytes) of DOT_COLS values; nrc = 1, so the strides are unused.
                unsafe {
                    vec_dot(
                        DOT_COLS as i32,
                        &mut s,
                        0,
                        w[j * wb..].as_ptr().cast(),
                        0,
                        xq[i * xb..].as_ptr().cast(),
                        0,
                        1,
                    )
                };
                res[j * DOT_X_ROWS + i] = s;
            }
        }
        let generic = generic_dot(ty);
        if let Some((gdot, _)) = generic {
            let mut resg = vec![0f32; DOT_W_ROWS * DOT_X_ROWS];
            for j in 0..DOT_W_ROWS {
                for i in 0..DOT_X_ROWS {
                    let mut s = 0f32;
                    // SAFETY: as for vec_dot above.
                    unsafe {
                        gdot(
                            DOT_COLS as i32,
                            &mut s,
                            0,
                            w[j * wb..].as_ptr().cast(),
                            0,
                            xq[i * xb..].as_ptr().cast(),
                            0,
                            1,
                        )
                    };
                    resg[j * DOT_X_ROWS + i] = s;
                }
            }
            write_f32(&out.join(format!("dot-{name}.out-generic.f32")), &resg)?;
        }
        write_f32(&out.join(format!("dot-{name}.x.f32")), &x_in)?;
        write(format!("dot-{name}.w.bin"), &w)?;
        write(format!("dot-{name}.xq.bin"), &xq)?;
        write_f32(&out.join(format!("dot-{name}.out.f32")), &res)?;
        dots.push(json!({
            "name": name,
            "ggml_id": ty,
            "vec_dot_type": vty,
            "cols": DOT_COLS,
            "w_rows": DOT_W_ROWS,
            "x_rows": DOT_X_ROWS,
            "w_row_bytes": wb,
            "x_row_bytes": xb,
            "seed": seed,
            "x_row_descriptions": x_descs,
            "generic": generic.map(|g| g.1),
        }));
        eprintln!(
            "dot {name}: vec_dot_type {vty}, {DOT_W_ROWS} x {DOT_X_ROWS} products of {DOT_COLS}"
        );
    }
    // SAFETY: feature queries over ggml's static CPU info.
    let (avx, avx2, f16c, fma, avx512) = unsafe {
        (
            sys::ggml_cpu_has_avx(),
            sys::ggml_cpu_has_avx2(),
            sys::ggml_cpu_has_f16c(),
            sys::ggml_cpu_has_fma(),
            sys::ggml_cpu_has_avx512(),
        )
    };
    let manifest = json!({
        "generator": "tools/ggml-ref: ggml-ref dot tests/data/ggml-golden",
        "source": SYS_CRATE,
        "source_vcs": SYS_CRATE_VCS,
        "ggml_version": cstr(unsafe_ggml_version()),
        "ggml_build_features": {"avx": avx, "avx2": avx2, "f16c": f16c, "fma": fma, "avx512": avx512},
        "act_call": "quantize_row_{q8_0,q8_1,q8_K}_ref(in, out, cols) per row, into a zero-filled buffer; cpu_from_float_equals_ref tells whether the CPU backend's from_float (what its matmul runs; may round ties to even) gave the same bytes",
        "act_files": "act-<name>.in.f32 = input rows (f32 LE, row-major); act-<name>.ggml.bin = ggml's bytes",
        "dot_call": "w = ggml_quantize_chunk(type, w_in, .., NULL); xq = quantize_row_<vec_dot_type>_ref(x) per row for q8_0/q8_1/q8_K, ggml_get_type_traits_cpu(vec_dot_type)->from_float(x) for f16/bf16, a copy for f32; out[j][i] = ggml_get_type_traits_cpu(type)->vec_dot(cols, &s, 0, w_j, 0, xq_i, 0, 1)",
        "dot_files": "dot-<name>.w.bin = weight rows (ggml bytes); dot-<name>.x.f32 = activation rows (f32); dot-<name>.xq.bin = activations in the vec_dot type (ggml bytes); dot-<name>.out.f32 = w_rows x x_rows results (f32 LE, row j of weights first); dot-<name>.out-generic.f32 = the same from ggml's scalar ggml_vec_dot_*_generic (quantized types only; named in 'generic')",
        "acts": acts,
        "dots": dots,
    });
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())? + "\n";
    fs::write(out.join("dot-manifest.json"), text).map_err(|e| e.to_string())?;
    Ok(())
}

// ---------------------------------------------------------------------------
// `tokenize`

/// The fixed strings; the first two are the raw prompts of shared/anchors.
const TEXTS: [&str; 15] = [
    "The capital of France is",
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have? Answer:",
    "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n",
    "你好，世界！今天天气很好。",
    "日本語のテキストと한국어 텍스트",
    "Emoji: 🙂🚀👩‍👩‍👧 ok",
    "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
    "def f(x):\n\treturn x**2  # square\n",
    "  leading spaces and   multiple   gaps\n\n\nnewlines",
    "Numbers: 1234567 3.14159 -42 1,000,000",
    "Ünïcödé àccents naïve café",
    "",
    // additions
    "<|endoftext|>text after a special token<|im_end|>",
    "don't won't I'm they're WE'LL",
    "\u{00a0}non-breaking\u{2003}em space\r\nCRLF\ttab",
];

fn tokenize(model: &Path, out: &Path) -> Result<(), String> {
    let path = CString::new(model.to_str().ok_or("model path is not UTF-8")?)
        .map_err(|e| e.to_string())?;
    // SAFETY: initialises llama's global backend state; no arguments.
    unsafe { sys::llama_backend_init() };
    // SAFETY: returns a plain struct of defaults.
    let mut params = unsafe { sys::llama_model_default_params() };
    params.vocab_only = true;
    // SAFETY: `path` is a valid NUL-terminated string for the call; the returned
    // model is checked for NULL and freed below.
    let m = unsafe { sys::llama_model_load_from_file(path.as_ptr(), params) };
    if m.is_null() {
        return Err(format!("cannot load {}", model.display()));
    }
    // SAFETY: `m` is a live model; the vocab lives as long as the model.
    let vocab = unsafe { sys::llama_model_get_vocab(m) };
    let mut cases = Vec::new();
    for text in TEXTS {
        let mut ids: Vec<sys::llama_token> = vec![0; text.len() + 16];
        // SAFETY: `text` is valid for text.len() bytes (no NUL needed, the length
        // is passed) and `ids` has room for ids.len() tokens.
        let mut n = unsafe {
            sys::llama_tokenize(
                vocab,
                text.as_ptr().cast(),
                text.len() as i32,
                ids.as_mut_ptr(),
                ids.len() as i32,
                true,
                true,
            )
        };
        if n < 0 {
            // too small: -n is the needed size
            ids.resize((-n) as usize, 0);
            // SAFETY: as above, with the buffer grown to the size llama asked for.
            n = unsafe {
                sys::llama_tokenize(
                    vocab,
                    text.as_ptr().cast(),
                    text.len() as i32,
                    ids.as_mut_ptr(),
                    ids.len() as i32,
                    true,
                    true,
                )
            };
            if n < 0 {
                return Err(format!("tokenize failed for {text:?}"));
            }
        }
        ids.truncate(n as usize);
        cases.push(json!({ "text": text, "ids": ids }));
    }
    // SAFETY: `m` came from llama_model_load_from_file and is not used after.
    unsafe { sys::llama_model_free(m) };
    let name = model
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doc: Value = json!({
        "model": name,
        "source": SYS_CRATE,
        "ggml_version": cstr(unsafe_ggml_version()),
        "call": "llama_tokenize(vocab, text, len, ids, cap, add_special=true, parse_special=true) on a vocab_only model",
        "cases": cases,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
    let out: PathBuf = out.to_path_buf();
    fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(())
}
