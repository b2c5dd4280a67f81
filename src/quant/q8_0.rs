//! `q8_0`: blocks of 32 values as a scale and 32 signed bytes.
//!
//! ```text
//! field  bytes  meaning
//! -----  -----  -------------------------------------------
//! d      2      f16 scale
//! qs     32     i8 quants; value j = qs[j] * d
//! total  34
//! ```
//!
//! Quantizer (ggml `quantize_row_q8_0_ref`): `amax = max |x|`,
//! `d = amax / 127`, `qs[j] = roundf(x[j] * (1/d))` (half away from zero);
//! the f32 `d` is used for the quants, its f16 rounding is what is stored.

use super::{assert_blocks, c_trunc, read_f16, write_f16};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 34;

/// Decodes whole blocks from `src` into `out` (`out.len() / 32 * 34` bytes).
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_blocks("q8_0", out.len(), src.len(), QK, BLOCK_BYTES);
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(&b[0..2]);
        for (o, &q) in y.iter_mut().zip(&b[2..]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

/// Encodes whole blocks of `src` into `out`, byte-identical to ggml (with
/// AVX2 where the CPU has it; same bytes as [`quantize_row_scalar`]).
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    q8_row("q8_0", src, out, BLOCK_BYTES, 2, finish, true)
}

/// The scalar [`quantize_row`] (the reference for the SIMD code).
pub fn quantize_row_scalar(src: &[f32], out: &mut [u8]) {
    q8_row("q8_0", src, out, BLOCK_BYTES, 2, finish, false)
}

fn finish(b: &mut [u8], d: f32, _sum: i32) {
    write_f16(&mut b[0..2], d);
}

/// ggml's rule for one block of 32 values, shared with `q8_1`: the quants
/// into `qs`; returns the f32 `d` and Σ quants.
pub(crate) fn quantize_block(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
    let mut amax = 0.0f32;
    for &v in x {
        // MAX(amax, fabsf(v)) == amax > |v| ? amax : |v|
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let qi = c_trunc((v * id).round()) as i8;
        *q = qi as u8;
        sum += qi as i32;
    }
    (d, sum)
}

/// Whole blocks of `src` into `out` (`bb` bytes a block, quants at `qs`):
/// per block the quants, then `finish(block, d, Σq)` writes the header.
/// `simd`: use the AVX2 block code where the CPU has it (same bytes).
pub(crate) fn q8_row(
    name: &str,
    src: &[f32],
    out: &mut [u8],
    bb: usize,
    qs: usize,
    finish: fn(&mut [u8], f32, i32),
    simd: bool,
) {
    assert_blocks(name, src.len(), out.len(), QK, bb);
    #[cfg(target_arch = "x86_64")]
    let simd = simd && super::x86::has_avx2();
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    for (x, b) in src.chunks_exact(QK).zip(out.chunks_exact_mut(bb)) {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX2 detected above; x is 32 f32, b[qs..] 32 bytes.
            if let Some((d, sum)) =
                unsafe { super::x86::q8_block(x.as_ptr(), b[qs..].as_mut_ptr()) }
            {
                finish(b, d, sum);
                continue;
            }
        }
        let (d, sum) = quantize_block(x, &mut b[qs..qs + QK]);
        finish(b, d, sum);
    }
}
