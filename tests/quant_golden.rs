//! Our block formats against golden vectors produced by the real ggml.
//!
//! The data in `tests/data/ggml-golden/` comes from `tools/ggml-ref` (see its
//! README): for each type, input rows (`<type>.in.f32`), the bytes
//! `ggml_quantize_chunk` made of them (`<type>.ggml.bin`) and what ggml's
//! `to_float` decodes those bytes to (`<type>.deq.f32`). No ggml is needed here.
//!
//! Checked for every type and every row:
//! * `quantize(input)` == ggml's bytes, byte for byte;
//! * `dequantize(ggml bytes)` == ggml's values, bit for bit;
//! * round trip: `dequantize(quantize(x))` is within the format's step of `x`.

use std::path::{Path, PathBuf};

use tah::quant::{dequantize, quantize, GgmlType, ALL_TYPES};

/// The committed data, or another set made by the same tool (for example a
/// larger stress set from `ggml-ref quant DIR --extra-rows N`) named by
/// `TAH_GGML_GOLDEN_DIR`.
fn data_dir() -> PathBuf {
    match std::env::var_os("TAH_GGML_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ggml-golden"),
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_f32(path: &Path) -> Vec<f32> {
    let b = read(path);
    assert_eq!(b.len() % 4, 0, "{}: not whole f32s", path.display());
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// One type's golden data.
struct Golden {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    descs: Vec<String>,
    input: Vec<f32>,
    bytes: Vec<u8>,
    deq: Vec<f32>,
}

fn load_all() -> Vec<Golden> {
    let dir = data_dir();
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&dir.join("manifest.json"))).expect("manifest.json parses");
    let types = manifest["types"].as_array().expect("manifest has types");
    let mut out = Vec::new();
    for t in types {
        let name = t["name"].as_str().expect("type name");
        let ty = GgmlType::from_name(name).unwrap_or_else(|| panic!("unknown type {name}"));
        assert_eq!(
            t["ggml_id"].as_u64(),
            Some(ty.id() as u64),
            "{name}: ggml id"
        );
        let rows = t["rows"].as_u64().unwrap() as usize;
        let cols = t["cols"].as_u64().unwrap() as usize;
        let row_bytes = t["row_bytes"].as_u64().unwrap() as usize;
        assert_eq!(
            ty.row_bytes(cols as u64),
            Some(row_bytes as u64),
            "{name}: row size"
        );
        let descs: Vec<String> = t["row_descriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string())
            .collect();
        assert_eq!(descs.len(), rows, "{name}: one description per row");
        let input = read_f32(&dir.join(format!("{name}.in.f32")));
        let bytes = read(&dir.join(format!("{name}.ggml.bin")));
        let deq = read_f32(&dir.join(format!("{name}.deq.f32")));
        assert_eq!(input.len(), rows * cols, "{name}: input size");
        assert_eq!(bytes.len(), rows * row_bytes, "{name}: ggml bytes size");
        assert_eq!(deq.len(), rows * cols, "{name}: dequantized size");
        out.push(Golden {
            ty,
            rows,
            cols,
            row_bytes,
            descs,
            input,
            bytes,
            deq,
        });
    }
    for ty in ALL_TYPES {
        assert!(out.iter().any(|g| g.ty == ty), "no golden data for {ty}");
    }
    out
}

#[test]
fn golden_data_is_substantial() {
    for g in load_all() {
        assert!(g.rows >= 8, "{}: only {} rows", g.ty, g.rows);
        assert!(
            g.cols >= 512 && g.cols % 256 == 0,
            "{}: {} cols",
            g.ty,
            g.cols
        );
        // guard against an accidentally blank data set
        assert!(
            g.bytes.iter().filter(|&&b| b != 0).count() > g.bytes.len() / 4,
            "{}",
            g.ty
        );
        assert!(
            g.input.iter().filter(|x| **x != 0.0).count() > g.input.len() / 2,
            "{}",
            g.ty
        );
    }
}

#[test]
fn quantize_matches_ggml_bytes() {
    let mut failures = Vec::new();
    for g in load_all() {
        assert!(g.ty.can_quantize(), "{}: every type quantizes", g.ty);
        let mut ours = vec![0u8; g.row_bytes];
        for r in 0..g.rows {
            let x = &g.input[r * g.cols..(r + 1) * g.cols];
            let theirs = &g.bytes[r * g.row_bytes..(r + 1) * g.row_bytes];
            ours.fill(0xA5);
            quantize(g.ty, x, &mut ours);
            if ours != theirs {
                let i = ours.iter().zip(theirs).position(|(a, b)| a != b).unwrap();
                let n = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
                failures.push(format!(
                    "{} row {r} ({}): {n} bytes differ, first at byte {i} (block {}): ours {:#04x}, ggml {:#04x}",
                    g.ty,
                    g.descs[r],
                    i / g.ty.block_bytes(),
                    ours[i],
                    theirs[i]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "quantize differs from ggml:\n{}",
        failures.join("\n")
    );
}

#[test]
fn dequantize_matches_ggml_values() {
    let mut failures = Vec::new();
    for g in load_all() {
        let mut ours = vec![0f32; g.cols];
        for r in 0..g.rows {
            let src = &g.bytes[r * g.row_bytes..(r + 1) * g.row_bytes];
            let theirs = &g.deq[r * g.cols..(r + 1) * g.cols];
            ours.fill(f32::from_bits(0x7FA5_A5A5));
            dequantize(g.ty, src, &mut ours);
            let bad: Vec<usize> = (0..g.cols)
                .filter(|&i| ours[i].to_bits() != theirs[i].to_bits())
                .collect();
            if let Some(&i) = bad.first() {
                failures.push(format!(
                    "{} row {r} ({}): {} values differ, first at {i}: ours {:e} ({:#010x}), ggml {:e} ({:#010x})",
                    g.ty,
                    g.descs[r],
                    bad.len(),
                    ours[i],
                    ours[i].to_bits(),
                    theirs[i],
                    theirs[i].to_bits()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dequantize differs from ggml:\n{}",
        failures.join("\n")
    );
}

/// The largest error a correct encoder of `ty` may make on one value of the
/// group `grp` (the block, or the super-block for k-quants).
fn tolerance(ty: GgmlType, grp: &[f32], x: f32) -> f32 {
    let amax = grp.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max = grp.iter().fold(f32::MIN, |m, &v| m.max(v));
    let min = grp.iter().fold(f32::MAX, |m, &v| m.min(v));
    // f16-stored scales are off by up to 2^-11 relative, or 2^-25 absolute in
    // the f16 subnormal range, times a quant of up to 128; values far below
    // the f16 range (the 1e-8 row) may vanish entirely.
    let slack = 4.0 * 2f32.powi(-11) * amax + 128.0 * 2f32.powi(-24) + 1e-6;
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => x.abs() * 2f32.powi(-11) + 2f32.powi(-25),
        GgmlType::Bf16 => x.abs() * 2f32.powi(-8) + 2f32.powi(-133), // + 2^-133: f32 subnormals
        GgmlType::Q8_0 => 0.5 * amax / 127.0 + slack,
        GgmlType::Q4_0 => amax / 8.0 + slack,
        GgmlType::Q5_0 => amax / 16.0 + slack,
        GgmlType::Q4_1 => 0.5 * (max - min) / 15.0 + slack,
        GgmlType::Q5_1 => 0.5 * (max - min) / 31.0 + slack,
        // k-quants: sub-block scales and mins are themselves 6/8-bit quantized
        // against the super-block's largest, so allow a whole step of the
        // super-block's range plus the scale quantization error.
        // The f16 super-scales lose relative precision below 2^-14, hence the
        // absolute term: 2^-25 times the largest sub-scale times the largest quant.
        GgmlType::Q4K => {
            let range = max - min.min(0.0);
            range / 15.0 + range / 63.0 + slack + 2.0 * 63.0 * 15.0 * 2f32.powi(-25)
        }
        GgmlType::Q6K => amax / 32.0 + amax / 128.0 + slack + 2.0 * 128.0 * 32.0 * 2f32.powi(-25),
    }
}

#[test]
fn round_trip_is_within_one_step() {
    let mut failures = Vec::new();
    for g in load_all() {
        let group = match g.ty.block_len() {
            1 => 32,
            n => n,
        };
        let mut bytes = vec![0u8; g.row_bytes];
        let mut back = vec![0f32; g.cols];
        for r in 0..g.rows {
            let x = &g.input[r * g.cols..(r + 1) * g.cols];
            quantize(g.ty, x, &mut bytes);
            dequantize(g.ty, &bytes, &mut back);
            for (bi, (xs, ys)) in x.chunks(group).zip(back.chunks(group)).enumerate() {
                // A quantized group whose min or scale overflows f16 cannot round
                // trip (ggml gives infinities too); only stress sets have them.
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                if g.ty.block_len() > 1 && amax > 30000.0 {
                    continue;
                }
                for (k, (&a, &b)) in xs.iter().zip(ys).enumerate() {
                    let exact_expected = g.ty == GgmlType::F32;
                    let skip = !a.is_finite()
                        || (g.ty == GgmlType::F16 && a.abs() > 65504.0)
                        || (g.ty == GgmlType::Bf16 && a.abs() > 3.38e38);
                    if exact_expected && a.to_bits() != b.to_bits() {
                        failures.push(format!("f32 row {r}: {a:e} came back as {b:e}"));
                    } else if !skip && (a - b).abs() > tolerance(g.ty, xs, a) {
                        failures.push(format!(
                            "{} row {r} ({}) value {}: {a:e} came back as {b:e} (tolerance {:e})",
                            g.ty,
                            g.descs[r],
                            bi * group + k,
                            tolerance(g.ty, xs, a)
                        ));
                    }
                }
            }
        }
    }
    let n = failures.len();
    for t in ALL_TYPES {
        let k = failures
            .iter()
            .filter(|f| f.starts_with(&format!("{t} ")))
            .count();
        if k > 0 {
            eprintln!("{t}: {k} round-trip errors");
        }
    }
    failures.truncate(20);
    assert!(
        n == 0,
        "{n} round-trip errors, first ones:\n{}",
        failures.join("\n")
    );
}

#[test]
#[should_panic(expected = "bytes")]
fn wrong_length_panics() {
    let mut out = vec![0u8; 17];
    quantize(GgmlType::Q4_0, &[0.0; 32], &mut out);
}
