//! The two vector steps of attention over an f16 KV cache, in the arithmetic of
//! llama.cpp's CPU flash attention on its AVX-512 build (so greedy near-ties
//! resolve as there, and every kernel table gives the same bits):
//!
//! * [`dot_f16`]: `Σ x[i]·y[i]` of f16 rows, exact f16×f16 products accumulated
//!   with fused multiply-adds in four 16-lane f32 accumulators over 64-element
//!   steps (`ggml_vec_dot_f16`), reduced `(a0+a2)+(a1+a3)` then as
//!   `_mm512_reduce_add_ps` does; the tail (< 64) added in f64.
//! * [`mad_f16`]: the f16 value accumulator's update: optionally
//!   `acc = f16(acc·ms)` (a new maximum rescales it, `ggml_vec_scale_f16`), then
//!   `acc = f16(fma(v, vs, acc))` (`ggml_vec_mad_f16`); every result rounded to
//!   f16 (nearest even), as the f16 accumulator stores it.
//!
//! The scalar versions define the result; the x86 ones (F16C conversions, FMA)
//! compute the same operations lane by lane, so they are bit-identical.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Elements per step of the dot product: four accumulators of 16 lanes.
const STEP: usize = 64;

/// Sums 16 lanes in `_mm512_reduce_add_ps`'s order: 256-bit halves, 128-bit
/// halves, then `(t0+t2)+(t1+t3)`.
#[inline]
fn reduce16(t: &[f32; 16]) -> f32 {
    let mut t8 = [0f32; 8];
    for i in 0..8 {
        t8[i] = t[i] + t[8 + i];
    }
    let mut t4 = [0f32; 4];
    for i in 0..4 {
        t4[i] = t8[i] + t8[4 + i];
    }
    (t4[0] + t4[2]) + (t4[1] + t4[3])
}

/// The tail (`np..n`) of a dot product, in f64 as ggml's leftover loop.
#[inline]
fn tail(x: &[f16], y: &[f16], np: usize, head: f32) -> f32 {
    let mut sum = head as f64;
    for i in np..x.len() {
        sum += (x[i].to_f32() * y[i].to_f32()) as f64;
    }
    sum as f32
}

/// Portable [`dot_f16`]: rows converted 64 at a time (half's slice conversion
/// uses the CPU's converter where it has one), then the lane arithmetic.
pub fn dot_f16(x: &[f16], y: &[f16]) -> f32 {
    assert_eq!(x.len(), y.len());
    let np = x.len() & !(STEP - 1);
    let mut acc = [[0f32; 16]; 4];
    let (mut xf, mut yf) = ([0f32; STEP], [0f32; STEP]);
    for c in (0..np).step_by(STEP) {
        x[c..c + STEP].convert_to_f32_slice(&mut xf);
        y[c..c + STEP].convert_to_f32_slice(&mut yf);
        for (r, a) in acc.iter_mut().enumerate() {
            for (lane, av) in a.iter_mut().enumerate() {
                let i = r * 16 + lane;
                *av = xf[i].mul_add(yf[i], *av);
            }
        }
    }
    let mut t = [0f32; 16];
    for lane in 0..16 {
        t[lane] = (acc[0][lane] + acc[2][lane]) + (acc[1][lane] + acc[3][lane]);
    }
    tail(x, y, np, reduce16(&t))
}

/// Portable [`mad_f16`]: `acc = f16(acc·ms)` when `ms != 1`, then
/// `acc = f16(fma(v, vs, acc))`.
pub fn mad_f16(acc: &mut [f16], v: &[f16], ms: f32, vs: f32) {
    assert_eq!(acc.len(), v.len());
    let (mut af, mut vf) = ([0f32; STEP], [0f32; STEP]);
    for (a, v) in acc.chunks_mut(STEP).zip(v.chunks(STEP)) {
        let n = a.len();
        let (af, vf) = (&mut af[..n], &mut vf[..n]);
        if ms != 1.0 {
            a.convert_to_f32_slice(af);
            for x in af.iter_mut() {
                *x *= ms;
            }
            a.convert_from_f32_slice(af);
        }
        a.convert_to_f32_slice(af);
        v.convert_to_f32_slice(vf);
        for (x, y) in af.iter_mut().zip(vf.iter()) {
            *x = y.mul_add(vs, *x);
        }
        a.convert_from_f32_slice(af);
    }
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    //! F16C + FMA versions: AVX-512 (16 lanes) and AVX2 (two 8-lane halves
    //! per 16-lane accumulator), the same lane arithmetic as the scalar code.
    use super::{f16, reduce16, tail, STEP};
    use core::arch::x86_64::*;

    // round to nearest even (the 512-bit form also suppresses exceptions)
    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT;
    const RNE_SAE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    fn dot_512(x: &[f16], y: &[f16]) -> f32 {
        let np = x.len() & !(STEP - 1);
        let mut acc = [_mm512_setzero_ps(); 4];
        for c in (0..np).step_by(STEP) {
            for (r, a) in acc.iter_mut().enumerate() {
                let at = c + r * 16;
                // SAFETY: at + 16 <= np <= len of both slices (checked by caller).
                let (xv, yv) = unsafe {
                    (
                        _mm512_cvtph_ps(_mm256_loadu_si256(x.as_ptr().add(at).cast())),
                        _mm512_cvtph_ps(_mm256_loadu_si256(y.as_ptr().add(at).cast())),
                    )
                };
                *a = _mm512_fmadd_ps(xv, yv, *a);
            }
        }
        let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]));
        let mut t = [0f32; 16];
        // SAFETY: t holds 16 f32.
        unsafe { _mm512_storeu_ps(t.as_mut_ptr(), s) };
        tail(x, y, np, reduce16(&t))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot_256(x: &[f16], y: &[f16]) -> f32 {
        let np = x.len() & !(STEP - 1);
        // acc[r][h]: lanes 8h..8h+8 of 16-lane accumulator r
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        for c in (0..np).step_by(STEP) {
            for (r, a) in acc.iter_mut().enumerate() {
                for (h, a) in a.iter_mut().enumerate() {
                    let at = c + r * 16 + h * 8;
                    // SAFETY: at + 8 <= np <= len of both slices.
                    let (xv, yv) = unsafe {
                        (
                            _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(at).cast())),
                            _mm256_cvtph_ps(_mm_loadu_si128(y.as_ptr().add(at).cast())),
                        )
                    };
                    *a = _mm256_fmadd_ps(xv, yv, *a);
                }
            }
        }
        let mut t = [0f32; 16];
        for (h, th) in t.chunks_exact_mut(8).enumerate() {
            let s = _mm256_add_ps(
                _mm256_add_ps(acc[0][h], acc[2][h]),
                _mm256_add_ps(acc[1][h], acc[3][h]),
            );
            // SAFETY: `th` holds 8 f32s.
            unsafe { _mm256_storeu_ps(th.as_mut_ptr(), s) };
        }
        tail(x, y, np, reduce16(&t))
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    fn mad_512(acc: &mut [f16], v: &[f16], ms: f32, vs: f32) {
        let n16 = acc.len() & !15;
        let (msv, vsv) = (_mm512_set1_ps(ms), _mm512_set1_ps(vs));
        for at in (0..n16).step_by(16) {
            // SAFETY: at + 16 <= n16 <= len of both slices.
            unsafe {
                let pa = acc.as_mut_ptr().add(at).cast::<__m256i>();
                let mut a = _mm512_cvtph_ps(_mm256_loadu_si256(pa));
                if ms != 1.0 {
                    a = _mm512_cvtph_ps(_mm512_cvtps_ph::<RNE_SAE>(_mm512_mul_ps(a, msv)));
                }
                let x = _mm512_cvtph_ps(_mm256_loadu_si256(v.as_ptr().add(at).cast()));
                _mm256_storeu_si256(pa, _mm512_cvtps_ph::<RNE_SAE>(_mm512_fmadd_ps(x, vsv, a)));
            }
        }
        if n16 < acc.len() {
            super::mad_f16(&mut acc[n16..], &v[n16..], ms, vs);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn mad_256(acc: &mut [f16], v: &[f16], ms: f32, vs: f32) {
        let n8 = acc.len() & !7;
        let (msv, vsv) = (_mm256_set1_ps(ms), _mm256_set1_ps(vs));
        for at in (0..n8).step_by(8) {
            // SAFETY: at + 8 <= n8 <= len of both slices.
            unsafe {
                let pa = acc.as_mut_ptr().add(at).cast::<__m128i>();
                let mut a = _mm256_cvtph_ps(_mm_loadu_si128(pa));
                if ms != 1.0 {
                    a = _mm256_cvtph_ps(_mm256_cvtps_ph::<RNE>(_mm256_mul_ps(a, msv)));
                }
                let x = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(at).cast()));
                _mm_storeu_si128(pa, _mm256_cvtps_ph::<RNE>(_mm256_fmadd_ps(x, vsv, a)));
            }
        }
        if n8 < acc.len() {
            super::mad_f16(&mut acc[n8..], &v[n8..], ms, vs);
        }
    }

    /// [`super::dot_f16`] with AVX-512.
    pub fn dot_f16_avx512(x: &[f16], y: &[f16]) -> f32 {
        assert_eq!(x.len(), y.len());
        // SAFETY: only reachable through the AVX512 table, handed out after
        // its features (a superset of these) were detected.
        unsafe { dot_512(x, y) }
    }

    /// [`super::dot_f16`] with AVX2.
    pub fn dot_f16_avx2(x: &[f16], y: &[f16]) -> f32 {
        assert_eq!(x.len(), y.len());
        // SAFETY: only reachable through the AVX2/AVX512 tables (AVX2, FMA and
        // F16C detected).
        unsafe { dot_256(x, y) }
    }

    /// [`super::mad_f16`] with AVX-512.
    pub fn mad_f16_avx512(acc: &mut [f16], v: &[f16], ms: f32, vs: f32) {
        assert_eq!(acc.len(), v.len());
        // SAFETY: as in dot_f16_avx512.
        unsafe { mad_512(acc, v, ms, vs) }
    }

    /// [`super::mad_f16`] with AVX2.
    pub fn mad_f16_avx2(acc: &mut [f16], v: &[f16], ms: f32, vs: f32) {
        assert_eq!(acc.len(), v.len());
        // SAFETY: as in dot_f16_avx2.
        unsafe { mad_256(acc, v, ms, vs) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths with and without a tail, values with a wide exponent range
    /// (so rounding to f16 matters in every step).
    fn rows(n: usize, seed: u32) -> Vec<f16> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                let u = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                f16::from_f32(u * 8.0 * (1.0 + (s & 7) as f32))
            })
            .collect()
    }

    /// A plain scalar statement of the arithmetic (one element at a time, half's
    /// scalar conversions), independent of the slice-based portable version.
    fn dot_ref(x: &[f16], y: &[f16]) -> f32 {
        let np = x.len() & !63;
        let mut acc = [[0f32; 16]; 4];
        for c in (0..np).step_by(64) {
            for (r, a) in acc.iter_mut().enumerate() {
                for (lane, av) in a.iter_mut().enumerate() {
                    let i = c + r * 16 + lane;
                    *av = x[i].to_f32().mul_add(y[i].to_f32(), *av);
                }
            }
        }
        let t: [f32; 16] =
            std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
        let t8: [f32; 8] = std::array::from_fn(|i| t[i] + t[8 + i]);
        let t4: [f32; 4] = std::array::from_fn(|i| t8[i] + t8[4 + i]);
        let mut sum = ((t4[0] + t4[2]) + (t4[1] + t4[3])) as f64;
        for i in np..x.len() {
            sum += (x[i].to_f32() * y[i].to_f32()) as f64;
        }
        sum as f32
    }

    fn mad_ref(acc: &mut [f16], v: &[f16], ms: f32, vs: f32) {
        for (a, x) in acc.iter_mut().zip(v) {
            if ms != 1.0 {
                *a = f16::from_f32(a.to_f32() * ms);
            }
            *a = f16::from_f32(x.to_f32().mul_add(vs, a.to_f32()));
        }
    }

    #[test]
    fn every_table_matches_the_scalar_statement() {
        for k in crate::kernels::available() {
            for n in [1, 7, 16, 63, 64, 65, 128, 200] {
                let (x, y) = (rows(n, 1 + n as u32), rows(n, 99 + n as u32));
                assert_eq!(
                    (k.dot_f16)(&x, &y).to_bits(),
                    dot_ref(&x, &y).to_bits(),
                    "{}: dot_f16 n={n}",
                    k.name
                );
                for (ms, vs) in [(1.0, 0.37), (0.0123, 1.0), (0.5, 0.999), (1.0, 1.0)] {
                    let (mut a, mut b) = (rows(n, 7), rows(n, 7));
                    (k.mad_f16)(&mut a, &y, ms, vs);
                    mad_ref(&mut b, &y, ms, vs);
                    let (a, b): (Vec<u16>, Vec<u16>) = (
                        a.iter().map(|v| v.to_bits()).collect(),
                        b.iter().map(|v| v.to_bits()).collect(),
                    );
                    assert_eq!(a, b, "{}: mad_f16 n={n} ms={ms} vs={vs}", k.name);
                }
            }
        }
    }
}
