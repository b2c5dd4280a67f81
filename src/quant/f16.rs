//! `f16`: IEEE 754 binary16, one value per "block".
//!
//! ```text
//! value  bytes
//! -----  -----
//! x      2      u16 little-endian: sign(1) | exponent(5, bias 15) | mantissa(10)
//! ```
//!
//! ggml converts with `ggml_compute_fp32_to_fp16`: IEEE round-to-nearest-even
//! for every finite value (overflow gives ±inf, tiny values give signed
//! subnormals or zero), and every NaN becomes the canonical quiet NaN `0x7E00`
//! with the input's sign — its payload is dropped. `half::f16::from_f32` rounds
//! the same way but keeps NaN payloads, so NaN is handled here first.
//! Decoding is exact (f16 ⊂ f32); a signalling NaN comes back quiet, as it does
//! through ggml's multiply-based decoder on x86.

/// f32 → f16 bits, exactly as ggml.
#[inline]
pub fn from_f32(x: f32) -> u16 {
    if x.is_nan() {
        ((x.to_bits() >> 16) as u16 & 0x8000) | 0x7E00
    } else {
        half::f16::from_f32(x).to_bits()
    }
}

/// f16 bits → f32 (exact).
#[inline]
pub fn to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// Decodes `out.len()` values from `src` (`2 * out.len()` bytes).
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_eq!(src.len(), out.len() * 2, "f16: byte length");
    for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// Encodes `src` into `out` (`2 * src.len()` bytes).
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), src.len() * 2, "f16: byte length");
    for (o, &x) in out.chunks_exact_mut(2).zip(src) {
        o.copy_from_slice(&from_f32(x).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_is_canonical_and_signed() {
        assert_eq!(from_f32(f32::from_bits(0x7FC1_2345)), 0x7E00);
        assert_eq!(from_f32(f32::from_bits(0xFF80_0001)), 0xFE00);
        assert_eq!(from_f32(f32::INFINITY), 0x7C00);
        assert_eq!(from_f32(65520.0), 0x7C00); // tie above f16::MAX goes to inf
        assert_eq!(from_f32(65519.996), 0x7BFF);
    }

    #[test]
    fn ties_go_to_even() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: even (1.0) wins.
        assert_eq!(from_f32(f32::from_bits(0x3F80_1000)), 0x3C00);
        // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: even wins.
        assert_eq!(from_f32(f32::from_bits(0x3F80_3000)), 0x3C02);
        // 2^-25, halfway between 0 and the smallest subnormal: rounds to 0.
        assert_eq!(from_f32(f32::from_bits(0x3300_0000)), 0x0000);
    }
}
