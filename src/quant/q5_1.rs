//! `q5_1`: blocks of 32 values as a scale, a minimum and 32 5-bit quants.
//!
//! ```text
//! field  bytes  meaning
//! -----  -----  ------------------------------------------------------------
//! d      2      f16 scale
//! m      2      f16 minimum
//! qh     4      u32 little-endian: bit j = 5th bit of quant j (j = 0..32)
//! qs     16     low 4 bits: byte j holds quant j (low nibble) and quant
//!               j+16 (high nibble); value = q * d + m
//! total  24
//! ```
//!
//! Quantizer (ggml `quantize_row_q5_1_ref`): `d = (max - min) / 31`,
//! `q = (uint8_t)((x - min) / d + 0.5)` — no clamp, unlike q4_1.

use super::{assert_blocks, c_trunc, read_f16, write_f16};

/// Values per block.
pub const QK: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 24;

/// Decodes whole blocks from `src` into `out`.
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_blocks("q5_1", out.len(), src.len(), QK, BLOCK_BYTES);
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(&b[0..2]);
        let m = read_f16(&b[2..4]);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            let q = b[8 + j] as u32;
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            lo[j] = ((q & 0x0F) | h0) as f32 * d + m;
            hi[j] = ((q >> 4) | h1) as f32 * d + m;
        }
    }
}

/// Encodes whole blocks of `src` into `out`, byte-identical to ggml.
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    assert_blocks("q5_1", src.len(), out.len(), QK, BLOCK_BYTES);
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
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(&mut b[0..2], d);
        write_f16(&mut b[2..4], min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            // (uint8_t)(v + 0.5f)
            let q0 = c_trunc((x[j] - min) * id + 0.5) as u8;
            let q1 = c_trunc((x[j + QK / 2] - min) * id + 0.5) as u8;
            b[8 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + QK / 2);
        }
        b[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}
