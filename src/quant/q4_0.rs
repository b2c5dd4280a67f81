//! `q4_0`: blocks of 32 values as a scale and 32 unsigned 4-bit quants.
//!
//! ```text
//! field  bytes  meaning
//! -----  -----  ------------------------------------------------------------
//! d      2      f16 scale
//! qs     16     nibbles: byte j holds value j (low 4 bits) and value j+16
//!               (high 4 bits); value = (q - 8) * d
//! total  18
//! ```
//!
//! Quantizer (ggml `quantize_row_q4_0_ref`): `max` is the value of largest
//! magnitude *with its sign* (first one wins on equal magnitudes),
//! `d = max / -8`, `q = min(15, (int8_t)(x / d + 8.5))` — truncation, so the
//! rounding is half-up in the shifted domain, and `max` itself maps to 0.

use super::{assert_blocks, c_trunc, read_f16, write_f16};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 18;

/// Decodes whole blocks from `src` into `out`.
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_blocks("q4_0", out.len(), src.len(), QK, BLOCK_BYTES);
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(&b[0..2]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            let q = b[2 + j];
            lo[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            hi[j] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Encodes whole blocks of `src` into `out`, byte-identical to ggml.
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    assert_blocks("q4_0", src.len(), out.len(), QK, BLOCK_BYTES);
    for (x, b) in src.chunks_exact(QK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(&mut b[0..2], d);
        for j in 0..QK / 2 {
            let q0 = quant(x[j] * id);
            let q1 = quant(x[j + QK / 2] * id);
            b[2 + j] = q0 | (q1 << 4);
        }
    }
}

/// `MIN(15, (int8_t)(v + 8.5f))` narrowed to `uint8_t`.
#[inline]
fn quant(v: f32) -> u8 {
    (c_trunc(v + 8.5) as i8 as i32).min(15) as u8
}
