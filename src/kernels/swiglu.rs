//! The feed-forward gate: `g[i] = silu(g[i]) · u[i]`, `silu(x) = x / (1 + e^-x)`.
//!
//! The scalar version calls the C library's `expf` (glibc's is within 0.502
//! ulp, nearly always the correctly rounded value). The x86 versions compute
//! `e^x` in f64 vectors and round once to f32, which gives the correctly
//! rounded value unless the true one lies within ~1e-13 of a rounding
//! boundary, so their results are the scalar ones almost bit for bit (the
//! test counts). A cheaper f32 polynomial (llama.cpp's `ggml_v_expf`, ≤ 2 ulp)
//! moved perplexity by 0.2 % and flipped a near-tie in a greedy run; an
//! `expf` call per element was 12 % of a prefill.
//!
//! The f64 method: `k = round(x·log2 e)`, `r = x − k·ln 2` (two-part ln 2, so
//! `r` is exact to ~1e-19), `e^r` by its Taylor series to r¹¹ (|r| ≤ 0.35:
//! truncation < 3e-15 relative), `· 2^k`. Inputs are clamped to ±200 first,
//! where every f32 result is already 0 or ∞ (NaN passes through).

/// Portable: `g[i] = g[i] / (1 + exp(-g[i])) · u[i]`.
pub fn swiglu(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    for (g, u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + (-*g).exp()) * u;
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
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp8_pd(x: __m512d) -> __m512d {
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
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp4_pd(x: __m256d) -> __m256d {
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

    #[target_feature(enable = "avx512f")]
    fn swiglu_512(g: &mut [f32], u: &[f32]) {
        let n16 = g.len() & !15;
        for at in (0..n16).step_by(16) {
            // SAFETY: at + 16 <= n16 <= the length of both slices.
            unsafe {
                let x = _mm512_loadu_ps(g.as_ptr().add(at));
                let nx = _mm512_sub_ps(_mm512_setzero_ps(), x);
                let lo = exp8_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(nx)));
                let hi = exp8_pd(_mm512_cvtps_pd(_mm256_castpd_ps(
                    _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(nx)),
                )));
                // the two halves back into 16 lanes (no AVX-512 DQ needed)
                let e = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                    _mm512_castpd256_pd512(_mm256_castps_pd(_mm512_cvtpd_ps(lo))),
                    _mm256_castps_pd(_mm512_cvtpd_ps(hi)),
                ));
                let s = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e));
                let y = _mm512_mul_ps(s, _mm512_loadu_ps(u.as_ptr().add(at)));
                _mm512_storeu_ps(g.as_mut_ptr().add(at), y);
            }
        }
        super::swiglu(&mut g[n16..], &u[n16..]);
    }

    #[target_feature(enable = "avx2,fma")]
    fn swiglu_256(g: &mut [f32], u: &[f32]) {
        let n8 = g.len() & !7;
        for at in (0..n8).step_by(8) {
            // SAFETY: at + 8 <= n8 <= the length of both slices.
            unsafe {
                let x = _mm256_loadu_ps(g.as_ptr().add(at));
                let nx = _mm256_sub_ps(_mm256_setzero_ps(), x);
                let lo = _mm256_cvtpd_ps(exp4_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(nx))));
                let hi = _mm256_cvtpd_ps(exp4_pd(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(nx))));
                let e = _mm256_set_m128(hi, lo);
                let s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
                let y = _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr().add(at)));
                _mm256_storeu_ps(g.as_mut_ptr().add(at), y);
            }
        }
        super::swiglu(&mut g[n8..], &u[n8..]);
    }

    /// [`super::swiglu`] with AVX-512.
    pub fn swiglu_avx512(g: &mut [f32], u: &[f32]) {
        assert_eq!(g.len(), u.len());
        // SAFETY: only reachable through the AVX512 table, handed out after
        // AVX-512 F was detected.
        unsafe { swiglu_512(g, u) }
    }

    /// [`super::swiglu`] with AVX2.
    pub fn swiglu_avx2(g: &mut [f32], u: &[f32]) {
        assert_eq!(g.len(), u.len());
        // SAFETY: only reachable through the AVX2/AVX512 tables (AVX2 and
        // FMA detected).
        unsafe { swiglu_256(g, u) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The x86 versions against the scalar one over ±55 in steps of 0.0137,
    /// tiny and huge values, ±0, ±∞ and NaN: identical bits except on at
    /// most 1 input in 1000, and there within 2 ulp (where `expf` and the f64
    /// exp round e differently).
    #[test]
    fn simd_matches_scalar() {
        let mut xs: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.0137).collect();
        xs.extend([
            0.0, -0.0, 1e-30, -1e-30, 1e-40, 87.0, 88.7, 89.0, 100.0, -87.0, -88.7, -103.0,
        ]);
        xs.extend([
            -104.0,
            -200.0,
            3e7,
            -3e7,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        xs.push(f32::NAN);
        let u: Vec<f32> = (0..xs.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut want = xs.clone();
        swiglu(&mut want, &u);
        #[cfg(target_arch = "x86_64")]
        for (name, f) in [
            ("avx512", x86::swiglu_avx512 as fn(&mut [f32], &[f32])),
            ("avx2", x86::swiglu_avx2),
        ] {
            let cpu_has = |f: &str| {
                std::arch::is_x86_feature_detected!("avx2")
                    && (f != "avx512" || std::arch::is_x86_feature_detected!("avx512f"))
            };
            if !(cpu_has(name) && std::arch::is_x86_feature_detected!("fma")) {
                continue;
            }
            let mut got = xs.clone();
            f(&mut got, &u);
            let mut differ = 0;
            for ((x, a), b) in xs.iter().zip(&got).zip(&want) {
                if a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) {
                    continue;
                }
                differ += 1;
                let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
                assert!(
                    a.signum() == b.signum() && ulps <= 2,
                    "{name} x={x:e}: {a:e} vs {b:e}"
                );
            }
            eprintln!(
                "{name}: {differ} of {} differ from the scalar result",
                xs.len()
            );
            assert!(
                differ * 1000 <= xs.len(),
                "{name}: {differ} of {} differ",
                xs.len()
            );
        }
    }
}
