//! `q5_0`: blocks of 32 values as a scale and 32 unsigned 5-bit quants.
//!
//! ```text
//! field  bytes  meaning
//! -----  -----  ------------------------------------------------------------
//! d      2      f16 scale
//! qh     4      u32 little-endian: bit j = 5th bit of quant j (j = 0..32)
//! qs     16     low 4 bits: byte j holds quant j (low nibble) and quant
//!               j+16 (high nibble); value = (q - 16) * d
//! total  22
//! ```
//!
//! Quantizer (ggml `quantize_row_q5_0_ref`): `max` is the value of largest
//! magnitude with its sign, `d = max / -16`,
//! `q = min(31, (int8_t)(x / d + 16.5))`.

use super::{assert_blocks, c_trunc, read_f16, write_f16};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 22;

/// Decodes whole blocks from `src` into `out`.
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_blocks("q5_0", out.len(), src.len(), QK, BLOCK_BYTES);
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(&b[0..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            let q = b[6 + j] as u32;
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            lo[j] = (((q & 0x0F) | h0) as i32 - 16) as f32 * d;
            hi[j] = (((q >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }
}

/// Encodes whole blocks of `src` into `out`, byte-identical to ggml.
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    assert_blocks("q5_0", src.len(), out.len(), QK, BLOCK_BYTES);
    for (x, b) in src.chunks_exact(QK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(&mut b[0..2], d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = quant(x[j] * id);
            let q1 = quant(x[j + QK / 2] * id);
            b[6 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + QK / 2);
        }
        b[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

/// `MIN(31, (int8_t)(v + 16.5f))` narrowed to `uint8_t`.
#[inline]
fn quant(v: f32) -> u8 {
    (c_trunc(v + 16.5) as i8 as i32).min(31) as u8
}
