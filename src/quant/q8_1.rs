//! `q8_1`: the activation format paired with `q4_1` / `q5_1` weights (ggml's
//! "vec_dot type" for them). Never stored in our files; GGUF type id 9.
//!
//! ```text
//! field  bytes  meaning
//! -----  -----  ---------------------------------------------------------
//! d      2      f16 scale
//! s      2      f16 of d · Σ qs (f32 d times the integer sum, then rounded)
//! qs     32     i8 quants; value j = qs[j] * d
//! total  36
//! ```
//!
//! Quantizer (ggml `quantize_row_q8_1_ref`): as `q8_0`, plus `s`, which lets a
//! `q4_1` / `q5_1` dot product add the weight block's minimum times the sum of
//! the activations in one multiply.

use super::q8_0::q8_row;
use super::{assert_blocks, read_f16, write_f16};

/// ggml's type id (`GGML_TYPE_Q8_1`).
pub const GGML_ID: u32 = 9;
/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 36;

/// Encodes whole blocks of `src` into `out`, byte-identical to ggml (with
/// AVX2 where the CPU has it; same bytes as [`quantize_row_scalar`]).
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    q8_row("q8_1", src, out, BLOCK_BYTES, 4, finish, true)
}

/// The scalar [`quantize_row`] (the reference for the SIMD code).
pub fn quantize_row_scalar(src: &[f32], out: &mut [u8]) {
    q8_row("q8_1", src, out, BLOCK_BYTES, 4, finish, false)
}

/// q8_0's block rule, plus `s = d · Σq`.
fn finish(b: &mut [u8], d: f32, sum: i32) {
    write_f16(&mut b[0..2], d);
    write_f16(&mut b[2..4], sum as f32 * d);
}

/// Decodes whole blocks (`qs[j] * d`), for tests.
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_blocks("q8_1", out.len(), src.len(), QK, BLOCK_BYTES);
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(&b[0..2]);
        for (o, &q) in y.iter_mut().zip(&b[4..]) {
            *o = (q as i8) as f32 * d;
        }
    }
}
