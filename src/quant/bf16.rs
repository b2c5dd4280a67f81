//! `bf16`: bfloat16, the top half of an f32, one value per "block".
//!
//! ```text
//! value  bytes
//! -----  -----
//! x      2      u16 little-endian: sign(1) | exponent(8, bias 127) | mantissa(7)
//! ```
//!
//! ggml converts with `ggml_compute_fp32_to_bf16`: round-to-nearest-even on the
//! dropped 16 bits (`(u + 0x7fff + ((u >> 16) & 1)) >> 16`, so the largest
//! finite values round up to ±inf), and a NaN keeps its top 16 bits with the
//! quiet bit (0x40) forced on. `half::bf16::from_f32` is the same function
//! (checked bit for bit in the golden tests). Decoding is `bits << 16`,
//! exactly as ggml: a signalling-NaN bf16 stays signalling, unlike
//! `half::bf16::to_f32`, which quiets it — so we do not use that one.

/// f32 → bf16 bits, exactly as ggml.
#[inline]
pub fn from_f32(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// bf16 bits → f32 (exact; NaN payloads kept as they are).
#[inline]
pub fn to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Decodes `out.len()` values from `src` (`2 * out.len()` bytes).
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_eq!(src.len(), out.len() * 2, "bf16: byte length");
    for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// Encodes `src` into `out` (`2 * src.len()` bytes).
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), src.len() * 2, "bf16: byte length");
    for (o, &x) in out.chunks_exact_mut(2).zip(src) {
        o.copy_from_slice(&from_f32(x).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's formula, written out, to pin `half`'s behaviour.
    fn ggml_formula(x: f32) -> u16 {
        let u = x.to_bits();
        if u & 0x7FFF_FFFF > 0x7F80_0000 {
            return ((u >> 16) | 64) as u16;
        }
        (u.wrapping_add(0x7FFF + ((u >> 16) & 1)) >> 16) as u16
    }

    #[test]
    fn matches_ggml_formula() {
        let mut s = 0x1234_5678_9ABC_DEF0u64;
        for i in 0..200_000u32 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let bits = match i % 4 {
                0 => (s >> 32) as u32,
                1 => ((s >> 32) as u32 & !0xFFFF) | 0x8000,
                2 => ((s >> 32) as u32 & !0xFFFF) | 0x7FFF,
                _ => (s >> 32) as u32 | 0x7F80_0000,
            };
            let x = f32::from_bits(bits);
            assert_eq!(from_f32(x), ggml_formula(x), "bits {bits:#010x}");
        }
    }

    #[test]
    fn decode_keeps_signalling_nan() {
        assert_eq!(to_f32(0x7F81).to_bits(), 0x7F81_0000);
    }
}
