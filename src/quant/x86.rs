//! AVX2 versions of the activation quantizers (`q8_0`, `q8_1`, `q8_K`),
//! bit-identical to the scalar code in their modules, which stays the
//! reference and the path for CPUs without AVX2.
//!
//! Exactness: the scale (`d`, `1/d`, `iscale`) is computed in scalar f32 as
//! the scalar code does; per value the same f32 multiply (no FMA); `roundf`
//! as `trunc` plus `±1` where the dropped fraction is ≥ 0.5 (the fraction is
//! exact below 2^23, above it there is none); C's `(int)` as `cvttps2dq`
//! (the scalar code's `c_trunc` is `cvttss2si`); `(int8_t)` as the low byte.
//! The scalar max-abs loops depend on the order only for NaN: `q8_0`/`q8_1`
//! blocks holding a NaN go to the scalar code; `q8_K`'s loop ignores NaNs,
//! as `vmaxps(|x|, m)` does.

use core::arch::x86_64::*;

/// Whether the AVX2 quantizers can run (checked per call; std caches it).
#[inline]
pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

const ABS: i32 = 0x7FFF_FFFF;

/// The largest of 8 lanes (no NaN among them).
#[inline]
#[target_feature(enable = "avx2")]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// The low bytes of the 32 i32 lanes of `v`, in order (C's `(int8_t)`).
#[inline]
#[target_feature(enable = "avx2")]
fn low_bytes(v: [__m256i; 4]) -> __m256i {
    // masking first keeps the unsigned-saturating packs exact
    let m = _mm256_set1_epi32(0xFF);
    let [a, b, c, d] = v.map(|x| _mm256_and_si256(x, m));
    let p = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
    // the packs interleave 128-bit lanes: put the 4-byte groups back in order
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Σ of 32 i8 as 8 i32 lanes: lane k holds bytes 4k..4k+4.
#[inline]
#[target_feature(enable = "avx2")]
fn byte_sums(q: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// C's `(int)roundf(v)` per lane (round half away from zero, then `cvttps2dq`).
#[inline]
#[target_feature(enable = "avx2")]
fn round_away(t: __m256) -> __m256i {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(ABS));
    let r = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(t);
    let frac = _mm256_and_ps(_mm256_sub_ps(t, r), abs);
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_andnot_ps(abs, t), _mm256_set1_ps(1.0));
    _mm256_cvttps_epi32(_mm256_add_ps(r, _mm256_and_ps(up, one)))
}

/// One q8_0/q8_1 block: the 32 quants into `qs`; returns the f32 `d` and Σqs,
/// or `None` (nothing written) if `x` holds a NaN.
///
/// # Safety
/// AVX2 must be available; `x` points at 32 readable f32, `qs` at 32 writable bytes.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn q8_block(x: *const f32, qs: *mut u8) -> Option<(f32, i32)> {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(ABS));
    // SAFETY: 32 readable f32 (caller).
    let v: [__m256; 4] = core::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.add(8 * k)) });
    let mut m = _mm256_setzero_ps();
    let mut nan = _mm256_setzero_ps();
    for &vk in &v {
        m = _mm256_max_ps(m, _mm256_and_ps(vk, abs));
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(vk, vk));
    }
    if _mm256_movemask_ps(nan) != 0 {
        return None;
    }
    let amax = hmax(m);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let q = low_bytes(v.map(|vk| round_away(_mm256_mul_ps(vk, idv))));
    // SAFETY: 32 writable bytes (caller).
    unsafe { _mm256_storeu_si256(qs.cast(), q) };
    let s = byte_sums(q);
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    Some((d, _mm_cvtsi128_si32(s)))
}

/// One q8_K block of 256 values into `b` (292 bytes), as `q8_k::quantize_row`.
///
/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn q8k_block(x: &[f32; 256], b: &mut [u8; 292]) {
    use super::q8_k::{BSUMS, QS};
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(ABS));
    // SAFETY: x holds 256 f32: chunk k (k < 32) is in bounds.
    let ld = |k: usize| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) };
    let mut m = _mm256_setzero_ps();
    for k in 0..32 {
        // vmaxps returns its second operand when the first is NaN: NaNs are skipped
        m = _mm256_max_ps(_mm256_and_ps(ld(k), abs), m);
    }
    let amax = hmax(m);
    if amax == 0.0 {
        b.fill(0);
        return;
    }
    // the scalar loop keeps the first value reaching the largest magnitude
    let amaxv = _mm256_set1_ps(amax);
    let mut max = 0.0;
    for k in 0..32 {
        let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(
            _mm256_and_ps(ld(k), abs),
            amaxv,
        ));
        if hit != 0 {
            max = x[8 * k + hit.trailing_zeros() as usize];
            break;
        }
    }
    let iscale = -127.0 / max;
    let sv = _mm256_set1_ps(iscale);
    let magic = _mm256_set1_ps(12_582_912.0);
    for c in 0..8 {
        // nearest_int(iscale * x).min(127) for 32 values
        let qi: [__m256i; 4] = core::array::from_fn(|k| {
            let t = _mm256_add_ps(_mm256_mul_ps(sv, ld(4 * c + k)), magic);
            let i = _mm256_and_si256(_mm256_castps_si256(t), _mm256_set1_epi32(0x007F_FFFF));
            _mm256_min_epi32(
                _mm256_sub_epi32(i, _mm256_set1_epi32(0x0040_0000)),
                _mm256_set1_epi32(127),
            )
        });
        let q = low_bytes(qi);
        // SAFETY: QS + 32c + 32 <= QS + 256 <= 292.
        unsafe { _mm256_storeu_si256(b.as_mut_ptr().add(QS + 32 * c).cast(), q) };
        let mut s = [0i32; 8];
        // SAFETY: 8 writable i32.
        unsafe { _mm256_storeu_si256(s.as_mut_ptr().cast(), byte_sums(q)) };
        for g in 0..2 {
            let sum = (s[4 * g] + s[4 * g + 1] + s[4 * g + 2] + s[4 * g + 3]) as i16;
            let o = BSUMS + 2 * (2 * c + g);
            b[o..o + 2].copy_from_slice(&sum.to_le_bytes());
        }
    }
    b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use crate::quant::{q8_0, q8_1, q8_k};

    /// Rows that stress the rounding: random magnitudes and signs, exact ties
    /// after scaling, zeros, subnormals, infinities and NaNs.
    fn rows() -> Vec<Vec<f32>> {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut rows = Vec::new();
        for r in 0..400 {
            let n = 512;
            let row: Vec<f32> = (0..n)
                .map(|j| {
                    let u = next();
                    let f = (u >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                    match (r % 8, u % 29) {
                        // ties: 127 sets d = 1 (q8_0) and ±127 sets iscale = ±1 (q8_K)
                        (0, 0) => {
                            if (j / 32) % 2 == 0 {
                                127.0
                            } else {
                                -127.0
                            }
                        }
                        (0, _) => ((u >> 8) % 255) as f32 - 127.0 + 0.5,
                        (1, _) => (f * 8.0).round() / 16.0, // many exact halves
                        (2, 1..=10) => 0.0,
                        (2, _) => f * 1e-3,
                        (3, 0) => f32::NAN,
                        (3, 1) => f32::INFINITY,
                        (3, 2) => -f32::INFINITY,
                        (4, _) => f32::from_bits((u >> 20) as u32 & 0x807F_FFFF), // subnormals
                        (5, _) => -f.abs() * 1e6,
                        (6, _) => f32::from_bits(u as u32),
                        _ => f * 40.0,
                    }
                })
                .collect();
            rows.push(row);
        }
        rows.push(vec![0.0; 512]);
        rows.push(vec![-0.0; 512]);
        rows
    }

    #[test]
    fn simd_quantizers_match_scalar() {
        if !super::has_avx2() {
            return;
        }
        for x in rows() {
            let mut a = vec![0u8; 512 / 32 * 34];
            let mut b = a.clone();
            q8_0::quantize_row(&x, &mut a);
            q8_0::quantize_row_scalar(&x, &mut b);
            assert_eq!(a, b, "q8_0 {x:?}");
            let mut a = vec![0u8; 512 / 32 * 36];
            let mut b = a.clone();
            q8_1::quantize_row(&x, &mut a);
            q8_1::quantize_row_scalar(&x, &mut b);
            assert_eq!(a, b, "q8_1 {x:?}");
            let mut a = vec![0u8; 2 * 292];
            let mut b = a.clone();
            q8_k::quantize_row(&x, &mut a);
            q8_k::quantize_row_scalar(&x, &mut b);
            assert_eq!(a, b, "q8_K {x:?}");
        }
    }
}
