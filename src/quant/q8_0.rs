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

/// Encodes whole blocks of `src` into `out`, byte-identical to ggml.
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    assert_blocks("q8_0", src.len(), out.len(), QK, BLOCK_BYTES);
    for (x, b) in src.chunks_exact(QK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let mut amax = 0.0f32;
        for &v in x {
            // MAX(amax, fabsf(v)) == amax > |v| ? amax : |v|
            let a = v.abs();
            amax = if amax > a { amax } else { a };
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(&mut b[0..2], d);
        for (q, &v) in b[2..].iter_mut().zip(x) {
            *q = c_trunc((v * id).round()) as i8 as u8;
        }
    }
}
