//! The two vector steps of attention over a q8_0 KV cache, in the arithmetic of
//! llama.cpp's CPU flash attention with a q8_0 cache (`ggml_compute_forward_
//! flash_attn_ext_f16_one_chunk`): the query is quantized to q8_0 once per head
//! (the caller does it, with [`crate::quant::q8_0::quantize_row`]), then
//!
//! * [`dot_q8_0`]: the scores of a run of keys, each `Σ_b sumi_b · (dk_b · dq_b)`
//!   over the head's blocks in order, `sumi_b` the exact integer dot of the
//!   block's 32 quants (`ggml_vec_dot_q8_0_q8_0_generic`);
//! * [`mad_q8_0`]: the f32 value accumulator's update: optionally `acc·ms` (a new
//!   maximum rescales it, `ggml_vec_scale_f32`), then `acc = fma(v, vs, acc)` with
//!   the value row dequantized block by block (`v = q·d`, exact in f32)
//!   (`ggml_vec_mad_f32`).
//!
//! Rows are q8_0 blocks of 34 bytes (f16 scale `d`, 32 i8 quants): see
//! [`crate::quant::q8_0`]. The scalar versions define the result; the SIMD ones
//! (AVX2, AVX-512 VNNI, NEON) compute each block's integer dot exactly and then
//! the same float operations in the same order, so every table gives the same
//! bits. Quants of −128 (never written by ggml's quantizer, which stays within
//! ±127) may give another score on the x86 tables (the sign trick), never
//! undefined behaviour.

use crate::quant::f16;
use crate::quant::q8_0::{BLOCK_BYTES, QK};

/// The block's scale (f16 at its start) as f32.
#[inline]
fn scale(b: &[u8]) -> f32 {
    f16::to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// Checks the shapes of a [`dot_q8_0`] call: `q` whole blocks, and `n` keys
/// `stride` bytes apart, each `q.len()` bytes, inside `keys`.
#[inline]
fn check_dot(q: &[u8], keys: &[u8], stride: usize, n: usize) {
    assert!(
        q.len().is_multiple_of(BLOCK_BYTES),
        "q8_0 query: {} bytes",
        q.len()
    );
    if n > 0 {
        let end = (n - 1)
            .checked_mul(stride)
            .and_then(|x| x.checked_add(q.len()));
        assert!(
            end.is_some_and(|e| e <= keys.len()),
            "{n} q8_0 keys of {} bytes, {stride} apart, in {} bytes",
            q.len(),
            keys.len()
        );
    }
}

/// Checks the shapes of a [`mad_q8_0`] call.
#[inline]
fn check_mad(acc: &[f32], v: &[u8]) {
    assert!(
        acc.len().is_multiple_of(QK) && v.len() == acc.len() / QK * BLOCK_BYTES,
        "q8_0 value row of {} bytes for {} values",
        v.len(),
        acc.len()
    );
}

/// Portable [`dot_q8_0`]: `out[j] = q · key j` for the keys at `keys[j·stride..]`
/// (each as many blocks as `q`), `Σ_b sumi_b · (dk_b · dq_b)` summed in block
/// order from 0.
pub fn dot_q8_0(q: &[u8], keys: &[u8], stride: usize, out: &mut [f32]) {
    check_dot(q, keys, stride, out.len());
    for (j, o) in out.iter_mut().enumerate() {
        let k = &keys[j * stride..][..q.len()];
        let mut sumf = 0f32;
        for (kb, qb) in k.chunks_exact(BLOCK_BYTES).zip(q.chunks_exact(BLOCK_BYTES)) {
            let sumi: i32 = kb[2..]
                .iter()
                .zip(&qb[2..])
                .map(|(&x, &y)| (x as i8 as i32) * (y as i8 as i32))
                .sum();
            sumf += sumi as f32 * (scale(kb) * scale(qb));
        }
        *o = sumf;
    }
}

/// Portable [`mad_q8_0`]: `acc = acc·ms` when `ms != 1`, then
/// `acc = fma(q·d, vs, acc)` for the values of the blocks `v`.
pub fn mad_q8_0(acc: &mut [f32], v: &[u8], ms: f32, vs: f32) {
    check_mad(acc, v);
    for (a, b) in acc.chunks_exact_mut(QK).zip(v.chunks_exact(BLOCK_BYTES)) {
        let d = scale(b);
        for (a, &q) in a.iter_mut().zip(&b[2..]) {
            let y = if ms != 1.0 { *a * ms } else { *a };
            *a = ((q as i8) as f32 * d).mul_add(vs, y);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    //! AVX2 (`vpmaddubsw` on |k| and sign(q, k)) and AVX-512 (`vpdpbusd` on two
    //! blocks per 512-bit vector) integer dots, F16C scales, FMA accumulator.
    use super::{check_dot, check_mad, BLOCK_BYTES, QK};
    use core::arch::x86_64::*;

    /// f16 scale at `p` as f32.
    ///
    /// # Safety
    /// `p..p+2` readable; F16C available.
    #[inline]
    #[target_feature(enable = "f16c")]
    unsafe fn scale_at(p: *const u8) -> f32 {
        // SAFETY: the caller guarantees `p..p+2` readable; unaligned read.
        let h = u16::from_le(unsafe { p.cast::<u16>().read_unaligned() });
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }

    /// The sums of the two 8-lane i32 vectors `a` and `b`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum2(a: __m256i, b: __m256i) -> (i32, i32) {
        // [a01 a23 b01 b23 | a45 a67 b45 b67] → [a0123+a4567.., b..] → [a b a b]
        let h = _mm256_hadd_epi32(a, b);
        let x = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
        let x = _mm_hadd_epi32(x, x);
        (_mm_cvtsi128_si32(x), _mm_extract_epi32::<1>(x))
    }

    /// The products `sumi_b · (dk_b · dq_b)` of blocks `b` and `b + 1` added
    /// to `sumf` in order (the scalar code's float steps).
    ///
    /// # Safety
    /// Blocks `b` and `b + 1` of the rows at `k` and `q` readable; F16C.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn add2(sumf: f32, (s0, s1): (i32, i32), k: *const u8, q: *const u8, b: usize) -> f32 {
        // SAFETY: the caller guarantees both blocks readable.
        unsafe {
            let (k0, q0) = (k.add(b * BLOCK_BYTES), q.add(b * BLOCK_BYTES));
            let (k1, q1) = (k0.add(BLOCK_BYTES), q0.add(BLOCK_BYTES));
            let sumf = sumf + s0 as f32 * (scale_at(k0) * scale_at(q0));
            sumf + s1 as f32 * (scale_at(k1) * scale_at(q1))
        }
    }

    /// The 8 i32 partial sums of the integer dot of the 32 quants at `k` and
    /// `q`: |k| · sign(q, k), pairs of products summed in i16 (≤ 2·127² fits),
    /// then in i32.
    ///
    /// # Safety
    /// `k..k+32` and `q..q+32` readable; AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn block_256(k: *const u8, q: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes at each; unaligned loads.
        let (kv, qv) = unsafe { (_mm256_loadu_si256(k.cast()), _mm256_loadu_si256(q.cast())) };
        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(kv), _mm256_sign_epi8(qv, kv));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot_256(q: &[u8], keys: &[u8], stride: usize, out: &mut [f32]) {
        let nb = q.len() / BLOCK_BYTES;
        let qp = q.as_ptr();
        for (j, o) in out.iter_mut().enumerate() {
            // SAFETY: key j is `q.len()` bytes at `j·stride` inside `keys`
            // (check_dot), so every block read below is inside `keys` / `q`.
            unsafe {
                let kp = keys.as_ptr().add(j * stride);
                let qs = |b: usize| qp.add(b * BLOCK_BYTES + 2);
                let ks = |b: usize| kp.add(b * BLOCK_BYTES + 2);
                let mut sumf = 0f32;
                let mut b = 0;
                while b + 2 <= nb {
                    let s = hsum2(block_256(ks(b), qs(b)), block_256(ks(b + 1), qs(b + 1)));
                    sumf = add2(sumf, s, kp, qp, b);
                    b += 2;
                }
                if b < nb {
                    let (s, _) = hsum2(block_256(ks(b), qs(b)), _mm256_setzero_si256());
                    let (kb, qb) = (kp.add(b * BLOCK_BYTES), qp.add(b * BLOCK_BYTES));
                    sumf += s as f32 * (scale_at(kb) * scale_at(qb));
                }
                *o = sumf;
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn dot_512(q: &[u8], keys: &[u8], stride: usize, out: &mut [f32]) {
        let nb = q.len() / BLOCK_BYTES;
        let qp = q.as_ptr();
        // 32 bytes at `p` and at `p + BLOCK_BYTES` (two blocks' quants) in one
        // vector. SAFETY (of callers): both ranges readable.
        let ld2 = |p: *const u8| unsafe {
            let lo = _mm256_loadu_si256(p.cast());
            let hi = _mm256_loadu_si256(p.add(BLOCK_BYTES).cast());
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
        };
        for (j, o) in out.iter_mut().enumerate() {
            // SAFETY: as in dot_256.
            unsafe {
                let kp = keys.as_ptr().add(j * stride);
                let mut sumf = 0f32;
                let mut b = 0;
                while b + 2 <= nb {
                    let off = b * BLOCK_BYTES + 2;
                    let (kv, qv) = (ld2(kp.add(off)), ld2(qp.add(off)));
                    // q negated where k < 0, times |k|: k·q per byte, summed
                    // by fours into i32 (no saturation)
                    let neg = _mm512_movepi8_mask(kv);
                    let sq = _mm512_mask_sub_epi8(qv, neg, _mm512_setzero_si512(), qv);
                    let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(kv), sq);
                    let s = hsum2(_mm512_castsi512_si256(p), _mm512_extracti64x4_epi64::<1>(p));
                    sumf = add2(sumf, s, kp, qp, b);
                    b += 2;
                }
                if b < nb {
                    let (kb, qb) = (kp.add(b * BLOCK_BYTES), qp.add(b * BLOCK_BYTES));
                    let kv = _mm256_loadu_si256(kb.add(2).cast());
                    let qv = _mm256_loadu_si256(qb.add(2).cast());
                    let p = _mm256_dpbusd_epi32(
                        _mm256_setzero_si256(),
                        _mm256_abs_epi8(kv),
                        _mm256_sign_epi8(qv, kv),
                    );
                    let (s, _) = hsum2(p, _mm256_setzero_si256());
                    sumf += s as f32 * (scale_at(kb) * scale_at(qb));
                }
                *o = sumf;
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn mad_256(acc: &mut [f32], v: &[u8], ms: f32, vs: f32) {
        let (msv, vsv) = (_mm256_set1_ps(ms), _mm256_set1_ps(vs));
        for (a, blk) in acc.chunks_exact_mut(QK).zip(v.chunks_exact(BLOCK_BYTES)) {
            // SAFETY: `blk` is 34 bytes (scale, 32 quants) and `a` 32 f32s, so
            // every load/store below is inside them; unaligned accesses.
            unsafe {
                let d = _mm256_set1_ps(scale_at(blk.as_ptr()));
                for i in 0..4 {
                    let q8 = _mm_loadl_epi64(blk.as_ptr().add(2 + 8 * i).cast());
                    let x = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), d);
                    let pa = a.as_mut_ptr().add(8 * i);
                    let mut y = _mm256_loadu_ps(pa);
                    if ms != 1.0 {
                        y = _mm256_mul_ps(y, msv);
                    }
                    _mm256_storeu_ps(pa, _mm256_fmadd_ps(x, vsv, y));
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    fn mad_512(acc: &mut [f32], v: &[u8], ms: f32, vs: f32) {
        let (msv, vsv) = (_mm512_set1_ps(ms), _mm512_set1_ps(vs));
        for (a, blk) in acc.chunks_exact_mut(QK).zip(v.chunks_exact(BLOCK_BYTES)) {
            // SAFETY: as in mad_256.
            unsafe {
                let d = _mm512_set1_ps(scale_at(blk.as_ptr()));
                for i in 0..2 {
                    let q8 = _mm_loadu_si128(blk.as_ptr().add(2 + 16 * i).cast());
                    let x = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q8)), d);
                    let pa = a.as_mut_ptr().add(16 * i);
                    let mut y = _mm512_loadu_ps(pa);
                    if ms != 1.0 {
                        y = _mm512_mul_ps(y, msv);
                    }
                    _mm512_storeu_ps(pa, _mm512_fmadd_ps(x, vsv, y));
                }
            }
        }
    }

    /// [`super::dot_q8_0`] with AVX2.
    pub fn dot_q8_0_avx2(q: &[u8], keys: &[u8], stride: usize, out: &mut [f32]) {
        check_dot(q, keys, stride, out.len());
        // SAFETY: only reachable through the AVX2/AVX512 tables, handed out
        // after AVX2, FMA and F16C were detected; shapes checked above.
        unsafe { dot_256(q, keys, stride, out) }
    }

    /// [`super::dot_q8_0`] with AVX-512 VNNI.
    pub fn dot_q8_0_avx512(q: &[u8], keys: &[u8], stride: usize, out: &mut [f32]) {
        check_dot(q, keys, stride, out.len());
        // SAFETY: only reachable through the AVX512 table, handed out after
        // its features (these) were detected; shapes checked above.
        unsafe { dot_512(q, keys, stride, out) }
    }

    /// [`super::mad_q8_0`] with AVX2.
    pub fn mad_q8_0_avx2(acc: &mut [f32], v: &[u8], ms: f32, vs: f32) {
        check_mad(acc, v);
        // SAFETY: as in dot_q8_0_avx2.
        unsafe { mad_256(acc, v, ms, vs) }
    }

    /// [`super::mad_q8_0`] with AVX-512.
    pub fn mad_q8_0_avx512(acc: &mut [f32], v: &[u8], ms: f32, vs: f32) {
        check_mad(acc, v);
        // SAFETY: as in dot_q8_0_avx512.
        unsafe { mad_512(acc, v, ms, vs) }
    }
}

#[cfg(target_arch = "aarch64")]
pub mod neon {
    //! Plain NEON (every aarch64 table): widening `smull` products summed
    //! pairwise into i32, `fcvt` scales, `fmla` accumulator.
    use super::{check_dot, check_mad, BLOCK_BYTES, QK};
    use crate::kernels::aarch64::f16_at;
    use core::arch::aarch64::*;

    /// The exact integer dot of the 32 quants at `k` and `q`.
    ///
    /// # Safety
    /// `k..k+32` and `q..q+32` readable.
    #[inline(always)]
    unsafe fn block(k: *const u8, q: *const u8) -> i32 {
        // SAFETY: the caller guarantees 32 readable bytes at each; `ld1` has
        // no alignment requirement; NEON is baseline on aarch64.
        unsafe {
            let (k0, k1) = (vld1q_s8(k.cast()), vld1q_s8(k.add(16).cast()));
            let (q0, q1) = (vld1q_s8(q.cast()), vld1q_s8(q.add(16).cast()));
            let mut s = vpaddlq_s16(vmull_s8(vget_low_s8(k0), vget_low_s8(q0)));
            s = vpadalq_s16(s, vmull_high_s8(k0, q0));
            s = vpadalq_s16(s, vmull_s8(vget_low_s8(k1), vget_low_s8(q1)));
            s = vpadalq_s16(s, vmull_high_s8(k1, q1));
            vaddvq_s32(s)
        }
    }

    /// [`super::dot_q8_0`] with NEON.
    pub fn dot_q8_0(q: &[u8], keys: &[u8], stride: usize, out: &mut [f32]) {
        check_dot(q, keys, stride, out.len());
        let nb = q.len() / BLOCK_BYTES;
        for (j, o) in out.iter_mut().enumerate() {
            let mut sumf = 0f32;
            for b in 0..nb {
                // SAFETY: key j is `q.len()` bytes at `j·stride` inside `keys`
                // (check_dot), so block b of it and of `q` is readable.
                unsafe {
                    let kb = keys.as_ptr().add(j * stride + b * BLOCK_BYTES);
                    let qb = q.as_ptr().add(b * BLOCK_BYTES);
                    let s = block(kb.add(2), qb.add(2));
                    sumf += s as f32 * (f16_at(kb) * f16_at(qb));
                }
            }
            *o = sumf;
        }
    }

    /// [`super::mad_q8_0`] with NEON.
    pub fn mad_q8_0(acc: &mut [f32], v: &[u8], ms: f32, vs: f32) {
        check_mad(acc, v);
        for (a, blk) in acc.chunks_exact_mut(QK).zip(v.chunks_exact(BLOCK_BYTES)) {
            // SAFETY: `blk` is 34 bytes (scale, 32 quants) and `a` 32 f32s, so
            // every load/store below is inside them; NEON is baseline.
            unsafe {
                let d = f16_at(blk.as_ptr());
                for h in 0..2 {
                    let q = vld1q_s8(blk.as_ptr().add(2 + 16 * h).cast());
                    let w = [vmovl_s8(vget_low_s8(q)), vmovl_high_s8(q)];
                    for (i, w) in w.into_iter().enumerate() {
                        for (t, x) in [vmovl_s16(vget_low_s16(w)), vmovl_high_s16(w)]
                            .into_iter()
                            .enumerate()
                        {
                            let x = vmulq_n_f32(vcvtq_f32_s32(x), d);
                            let pa = a.as_mut_ptr().add(16 * h + 8 * i + 4 * t);
                            let mut y = vld1q_f32(pa);
                            if ms != 1.0 {
                                y = vmulq_n_f32(y, ms);
                            }
                            vst1q_f32(pa, vfmaq_n_f32(y, x, vs));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::q8_0;

    /// `n` values with a spread of magnitudes per block.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                let u = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                u * 3.0 * (1.0 + (i / 32 % 5) as f32)
            })
            .collect()
    }

    fn quantize(x: &[f32]) -> Vec<u8> {
        let mut b = vec![0u8; x.len() / QK * BLOCK_BYTES];
        q8_0::quantize_row_scalar(x, &mut b);
        b
    }

    fn dequantize(b: &[u8]) -> Vec<f32> {
        let mut x = vec![0f32; b.len() / BLOCK_BYTES * QK];
        q8_0::dequantize_row(b, &mut x);
        x
    }

    /// Head dimensions: 1 to 5 blocks (odd counts exercise the SIMD leftovers).
    const DIMS: [usize; 5] = [32, 64, 96, 128, 160];

    /// The scalar kernels against a plain dequantize-then-f32 statement: the
    /// score is the f64 dot of the dequantized rows (within rounding), the
    /// accumulator `acc·ms + v·vs` in f64.
    #[test]
    fn scalar_kernels_match_dequantized_arithmetic() {
        for hd in DIMS {
            let (n, stride) = (5, hd / QK * BLOCK_BYTES + 34); // rows with a gap
            let q = quantize(&values(hd, 1));
            let mut keys = vec![0u8; n * stride];
            for j in 0..n {
                keys[j * stride..][..q.len()]
                    .copy_from_slice(&quantize(&values(hd, 10 + j as u32)));
            }
            let mut out = vec![0f32; n];
            dot_q8_0(&q, &keys, stride, &mut out);
            let qf = dequantize(&q);
            for (j, &o) in out.iter().enumerate() {
                let kf = dequantize(&keys[j * stride..][..q.len()]);
                let want: f64 = qf.iter().zip(&kf).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = qf
                    .iter()
                    .zip(&kf)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                assert!(
                    (o as f64 - want).abs() <= 1e-6 * mag,
                    "hd {hd} key {j}: {o} vs {want}"
                );
            }
            let v = quantize(&values(hd, 77));
            let vf = dequantize(&v);
            for (ms, vs) in [(1.0, 0.3), (0.25, 1.0), (0.0, 1.0)] {
                let acc0 = values(hd, 5);
                let mut acc = acc0.clone();
                mad_q8_0(&mut acc, &v, ms, vs);
                for i in 0..hd {
                    let want = acc0[i] as f64 * ms as f64 + vf[i] as f64 * vs as f64;
                    assert!(
                        (acc[i] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "hd {hd} ms {ms} vs {vs} [{i}]: {} vs {want}",
                        acc[i]
                    );
                }
            }
        }
    }

    /// Every table this CPU runs gives the scalar kernels' bits: the integer
    /// dots are exact and the float steps the same, in the same order.
    #[test]
    fn every_table_matches_the_scalar_kernels() {
        for k in crate::kernels::available() {
            for hd in DIMS {
                let n = 9;
                let stride = 3 * hd / QK * BLOCK_BYTES; // a head in rows of 3 heads
                let q = quantize(&values(hd, 3 + hd as u32));
                let keys = quantize(&values((n - 1) * 3 * hd + hd, 4));
                let keys = &keys[..(n - 1) * stride + q.len()];
                let (mut got, mut want) = (vec![0f32; n], vec![0f32; n]);
                (k.dot_q8_0)(&q, keys, stride, &mut got);
                dot_q8_0(&q, keys, stride, &mut want);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{}: dot_q8_0 hd={hd}", k.name);
                let v = quantize(&values(hd, 8));
                for (ms, vs) in [(1.0, 0.37), (0.0123, 1.0), (0.5, 0.999), (1.0, 1.0)] {
                    let (mut a, mut b) = (values(hd, 6), values(hd, 6));
                    (k.mad_q8_0)(&mut a, &v, ms, vs);
                    mad_q8_0(&mut b, &v, ms, vs);
                    assert_eq!(
                        bits(&a),
                        bits(&b),
                        "{}: mad_q8_0 hd={hd} ms={ms} vs={vs}",
                        k.name
                    );
                }
            }
        }
    }

    /// Extreme quants: ±127 everywhere (the largest i16 pair sums) and zero
    /// scales.
    #[test]
    fn extreme_blocks_agree() {
        let mut q = vec![0u8; 4 * BLOCK_BYTES];
        let mut k = q.clone();
        for (b, (qb, kb)) in q
            .chunks_exact_mut(34)
            .zip(k.chunks_exact_mut(34))
            .enumerate()
        {
            qb[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
            kb[..2].copy_from_slice(&f16::from_f32(if b == 2 { 0.0 } else { 2.0 }).to_le_bytes());
            for i in 0..32 {
                qb[2 + i] = if (i + b) % 2 == 0 {
                    127
                } else {
                    (-127i8) as u8
                };
                kb[2 + i] = if b % 2 == 0 { 127 } else { (-127i8) as u8 };
            }
        }
        let mut want = [0f32; 1];
        dot_q8_0(&q, &k, k.len(), &mut want);
        // blocks 0 and 1: ±127² alternating → 0; block 3: likewise → 0
        assert_eq!(want[0], 0.0);
        for kt in crate::kernels::available() {
            let mut got = [0f32; 1];
            (kt.dot_q8_0)(&q, &k, k.len(), &mut got);
            assert_eq!(got[0].to_bits(), want[0].to_bits(), "{}", kt.name);
        }
        // all +127 · +127 over one block: 32 · 127² · (2 · 0.5)
        let (mut q1, mut k1) = (vec![127u8; 34], vec![127u8; 34]);
        q1[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        k1[..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        for kt in crate::kernels::available() {
            let mut got = [0f32; 1];
            (kt.dot_q8_0)(&q1, &k1, 34, &mut got);
            assert_eq!(got[0], 32.0 * 127.0 * 127.0, "{}", kt.name);
        }
    }
}
