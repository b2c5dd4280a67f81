//! `e^x` of f32 values, in place: the softmax weights of attention.
//!
//! The scalar version calls the C library's `expf` (glibc's is within 0.502
//! ulp, nearly always the correctly rounded value), as llama.cpp's CPU flash
//! attention does. The x86 versions compute `e^x` in f64 vectors and round
//! once to f32, which gives the correctly rounded value unless the true one
//! lies within ~1e-13 of a rounding boundary; glibc's `expf` (≤ 0.502 ulp)
//! misses that on ~1 input in 2000, so the two differ there by 1 ulp and
//! agree everywhere else (the test counts), at a fraction of the cost.
//!
//! The f64 method: `k = round(x·log2 e)`, `r = x − k·ln 2` (two-part ln 2, so
//! `r` is exact to ~1e-19), `e^r` by its Taylor series to r¹¹ (|r| ≤ 0.35:
//! truncation < 3e-15 relative), `· 2^k`. Inputs are clamped to ±200 first,
//! where every f32 result is already 0 or ∞ (NaN passes through).

/// Portable: `x[i] = expf(x[i])`.
pub fn exp(x: &mut [f32]) {
    for v in x {
        *v = v.exp();
    }
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use core::arch::x86_64::*;

    const LOG2E: f64 = std::f64::consts::LOG2_E;
    /// ln 2 in two parts: the high one has 32 significant bits, so `k · LN2_HI`
    /// is exact for |k| < 2²¹.
    const LN2_HI: f64 = 0.693_147_180_601_954_5;
    const LN2_LO: f64 = std::f64::consts::LN_2 - LN2_HI;
    /// 1/n! for n = 11 down to 2 (Horner order).
    const INV_FACT: [f64; 10] = [
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        1.0 / 2.0,
    ];
    const CLAMP: f64 = 200.0;

    /// `e^x` of 8 f64 lanes (see the module documentation).
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn exp8_pd(x: __m512d) -> __m512d {
        // max/min return their second operand when one is NaN: NaN stays
        let x = _mm512_min_pd(
            _mm512_set1_pd(CLAMP),
            _mm512_max_pd(_mm512_set1_pd(-CLAMP), x),
        );
        let k = _mm512_roundscale_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_pd(x, _mm512_set1_pd(LOG2E)),
        );
        let r = _mm512_fnmadd_pd(
            k,
            _mm512_set1_pd(LN2_LO),
            _mm512_fnmadd_pd(k, _mm512_set1_pd(LN2_HI), x),
        );
        let mut p = _mm512_set1_pd(INV_FACT[0]);
        for c in &INV_FACT[1..] {
            p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(*c));
        }
        // 1 + r + r²·p
        let e = _mm512_fmadd_pd(
            _mm512_mul_pd(r, r),
            p,
            _mm512_add_pd(r, _mm512_set1_pd(1.0)),
        );
        _mm512_scalef_pd(e, k)
    }

    /// `e^x` of 4 f64 lanes with AVX2 (2^k from the exponent bits; |k| ≤ 289
    /// after the clamp, inside f64's range).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn exp4_pd(x: __m256d) -> __m256d {
        let x = _mm256_min_pd(
            _mm256_set1_pd(CLAMP),
            _mm256_max_pd(_mm256_set1_pd(-CLAMP), x),
        );
        let k = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_pd(x, _mm256_set1_pd(LOG2E)),
        );
        let r = _mm256_fnmadd_pd(
            k,
            _mm256_set1_pd(LN2_LO),
            _mm256_fnmadd_pd(k, _mm256_set1_pd(LN2_HI), x),
        );
        let mut p = _mm256_set1_pd(INV_FACT[0]);
        for c in &INV_FACT[1..] {
            p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(*c));
        }
        let e = _mm256_fmadd_pd(
            _mm256_mul_pd(r, r),
            p,
            _mm256_add_pd(r, _mm256_set1_pd(1.0)),
        );
        // 2^k: (k + 1023) << 52, k converted exactly (|k| ≤ 289)
        let ki = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k));
        let two_k = _mm256_slli_epi64::<52>(_mm256_add_epi64(ki, _mm256_set1_epi64x(1023)));
        _mm256_mul_pd(e, _mm256_castsi256_pd(two_k))
    }

    /// `e^x` of 16 f32 lanes through two f64 halves.
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn exp16_ps(x: __m512) -> __m512 {
        let lo = exp8_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)));
        let hi = exp8_pd(_mm512_cvtps_pd(_mm256_castpd_ps(
            _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)),
        )));
        // the two halves back into 16 lanes (no AVX-512 DQ needed)
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(_mm512_cvtpd_ps(lo))),
            _mm256_castps_pd(_mm512_cvtpd_ps(hi)),
        ))
    }

    /// `e^x` of 8 f32 lanes through two f64 halves.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn exp8_ps(x: __m256) -> __m256 {
        let lo = _mm256_cvtpd_ps(exp4_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x))));
        let hi = _mm256_cvtpd_ps(exp4_pd(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x))));
        _mm256_set_m128(hi, lo)
    }

    #[target_feature(enable = "avx512f")]
    fn exp_512(x: &mut [f32]) {
        let n16 = x.len() & !15;
        for at in (0..n16).step_by(16) {
            // SAFETY: at + 16 <= n16 <= x.len().
            unsafe {
                let p = x.as_mut_ptr().add(at);
                _mm512_storeu_ps(p, exp16_ps(_mm512_loadu_ps(p)));
            }
        }
        super::exp(&mut x[n16..]);
    }

    #[target_feature(enable = "avx2,fma")]
    fn exp_256(x: &mut [f32]) {
        let n8 = x.len() & !7;
        for at in (0..n8).step_by(8) {
            // SAFETY: at + 8 <= n8 <= x.len().
            unsafe {
                let p = x.as_mut_ptr().add(at);
                _mm256_storeu_ps(p, exp8_ps(_mm256_loadu_ps(p)));
            }
        }
        super::exp(&mut x[n8..]);
    }

    /// [`super::exp`] with AVX-512.
    pub fn exp_avx512(x: &mut [f32]) {
        // SAFETY: only reachable through the AVX512 table, handed out after
        // AVX-512 F was detected.
        unsafe { exp_512(x) }
    }

    /// [`super::exp`] with AVX2.
    pub fn exp_avx2(x: &mut [f32]) {
        // SAFETY: only reachable through the AVX2/AVX512 tables (AVX2 and
        // FMA detected).
        unsafe { exp_256(x) }
    }
}

/// Test helpers shared with [`super::swiglu`]'s tests.
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) mod check {
    /// Whether this CPU runs the x86 table `name` (`avx2` or `avx512`).
    pub fn runs(name: &str) -> bool {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && (name != "avx512" || std::arch::is_x86_feature_detected!("avx512f"))
    }

    /// How many of `got` differ from `want` (NaN equals NaN); panics where one
    /// differs by more than `max_ulps` or in sign.
    pub fn differing(what: &str, xs: &[f32], got: &[f32], want: &[f32], max_ulps: i64) -> usize {
        let mut differ = 0;
        for ((x, a), b) in xs.iter().zip(got).zip(want) {
            if a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) {
                continue;
            }
            differ += 1;
            let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
            assert!(
                a.signum() == b.signum() && ulps <= max_ulps,
                "{what}({x:e}): {a:e} vs {b:e}"
            );
        }
        eprintln!(
            "{what}: {differ} of {} differ from the scalar result",
            xs.len()
        );
        differ
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The x86 versions against `expf` over ±110 in steps of 0.0031, ±0,
    /// ±∞, NaN and far out: identical bits except on at most 1 input in
    /// 1000 (36 in 70 015 here: glibc's `expf` is not always correctly
    /// rounded), and there 1 ulp apart.
    #[test]
    fn simd_matches_expf() {
        let mut xs: Vec<f32> = (-35_000..35_000).map(|i| i as f32 * 0.0031).collect();
        xs.extend([
            0.0, -0.0, 1e-30, -1e-40, 88.72, 88.73, -103.9, -104.0, -150.0, 300.0,
        ]);
        xs.extend([
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let mut want = xs.clone();
        exp(&mut want);
        for (name, f) in [
            ("avx512", x86::exp_avx512 as fn(&mut [f32])),
            ("avx2", x86::exp_avx2),
        ] {
            if !check::runs(name) {
                continue;
            }
            let mut got = xs.clone();
            f(&mut got);
            let differ = check::differing(name, &xs, &got, &want, 1);
            assert!(
                differ * 1000 <= xs.len(),
                "{name}: {differ} of {} differ",
                xs.len()
            );
        }
    }
}
