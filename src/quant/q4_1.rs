//! `q4_1`: blocks of 32 values as a scale, a minimum and 32 4-bit quants.
//!
//! ```text
//! field  bytes  meaning
//! -----  -----  ------------------------------------------------------------
//! d      2      f16 scale
//! m      2      f16 minimum
//! qs     16     nibbles: byte j holds value j (low 4 bits) and value j+16
//!               (high 4 bits); value = q * d + m
//! total  20
//! ```
//!
//! Quantizer (ggml `quantize_row_q4_1_ref`): `d = (max - min) / 15`,
//! `q = min(15, (int8_t)((x - min) / d + 0.5))`, with the f32 `min` and `1/d`
//! (not their f16 roundings) used for the quants.

use super::{assert_blocks, c_trunc, read_f16, write_f16};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 20;

/// Decodes whole blocks from `src` into `out`.
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_blocks("q4_1", out.len(), src.len(), QK, BLOCK_BYTES);
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(&b[0..2]);
        let m = read_f16(&b[2..4]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            let q = b[4 + j];
            lo[j] = (q & 0x0F) as f32 * d + m;
            hi[j] = (q >> 4) as f32 * d + m;
        }
    }
}

/// Encodes whole blocks of `src` into `out`, byte-identical to ggml.
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    assert_blocks("q4_1", src.len(), out.len(), QK, BLOCK_BYTES);
    for (x, b) in src.chunks_exact(QK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(&mut b[0..2], d);
        write_f16(&mut b[2..4], min);
        for j in 0..QK / 2 {
            let q0 = quant((x[j] - min) * id);
            let q1 = quant((x[j + QK / 2] - min) * id);
            b[4 + j] = q0 | (q1 << 4);
        }
    }
}

/// `MIN(15, (int8_t)(v + 0.5f))` narrowed to `uint8_t`.
#[inline]
fn quant(v: f32) -> u8 {
    (c_trunc(v + 0.5) as i8 as i32).min(15) as u8
}
