//! The iteration decider (MLPIterDecider): from a token's hidden states at the
//! file's layer indices and its sorted top-k logits, the probability that the
//! prediction needs another pass. Vector work is f32; the matrices are multiplied
//! in their file type by the matmul kernels (f32 weights: f32 throughout; f16 /
//! bf16 weights: activations rounded to that type, as ggml does and as the
//! reference computes a bf16 checkpoint).
//!
//! ```text
//! u = logits_projection(v)                 v = top-k logit values, descending
//! z = input_projection(combined_projection(concat(H, u)))
//! each block: z = dim_change(z) + W2·GELU(W1·LayerNorm(z))
//! prob = sigmoid(output(LayerNorm(z)))
//! ```

use crate::kernels::{self, MatmulScratch};
use crate::model::weights::{Decider, DeciderMat, DeciderWeights};
use crate::quant::GgmlType;
use half::f16;

/// LayerNorm epsilon (PyTorch's default; the base model's RMSNorm eps differs).
const LN_EPS: f32 = 1e-5;

/// Buffers for one evaluation, sized once.
pub struct DeciderScratch {
    input: Vec<f32>, // (n·H + H) concat(H, u)
    a: Vec<f32>,     // (max width)
    b: Vec<f32>,     // (max width)
    normed: Vec<f32>,
    hidden: Vec<f32>, // (max width · expansion)
    topv: Vec<f32>,   // (topk) softmax when normalize_input
    aff: AffineScratch,
}

impl DeciderScratch {
    pub fn new(w: &DeciderWeights, n_in: usize) -> DeciderScratch {
        let widest = w
            .blocks
            .iter()
            .map(|b| b.d_in.max(b.d_out))
            .max()
            .unwrap_or(0)
            .max(w.combined_b.len());
        let expanded = w.blocks.iter().map(|b| b.up_b.len()).max().unwrap_or(0);
        DeciderScratch {
            input: vec![0.0; n_in],
            a: vec![0.0; widest],
            b: vec![0.0; widest],
            normed: vec![0.0; widest.max(n_in)],
            hidden: vec![0.0; expanded],
            topv: vec![0.0; w.logits_proj_w.cols()],
            aff: AffineScratch {
                x16: vec![f16::ZERO; n_in.max(widest).max(expanded)],
                mm: MatmulScratch::default(),
            },
        }
    }
}

/// `y = W·x + b`, W (out, in). One activation row makes the matmul tiles
/// latency-bound (one accumulator chain per weight row), so f32 and f16
/// weights go row by row through the multi-accumulator dot kernels (f16: the
/// activation rounded to f16 once, as the matmul would); other types take the
/// matmul. Rows are split over the thread pool.
fn affine(
    d: &Decider<'_>,
    w: &DeciderMat,
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    s: &mut AffineScratch,
) {
    let m = d.mat(w);
    let k = kernels::kernels();
    let row_bytes = m.row_bytes();
    // Rows per task: at least 16 KiB of weights each.
    let per = (16384 / row_bytes.max(1)).max(1);
    let rows = |f: &(dyn Fn(usize) -> f32 + Sync), y: &mut [f32]| {
        crate::threads::for_each_chunk_mut(y, per, |t, ys| {
            for (i, o) in ys.iter_mut().enumerate() {
                *o = f(t * per + i);
            }
        });
    };
    match m.ty {
        GgmlType::F32 => {
            // The file aligns tensors to 32 bytes; an unaligned one takes the matmul.
            match f32_rows(m.data) {
                Some(wf) => rows(&|r| (k.dot_f32)(&wf[r * m.cols..][..m.cols], x), y),
                None => kernels::matmul(&m, x, 1, y, &mut s.mm),
            }
        }
        GgmlType::F16 => match f16_rows(m.data) {
            Some(wh) => {
                let xh = &mut s.x16[..x.len()];
                for (d, v) in xh.iter_mut().zip(x) {
                    *d = f16::from_f32(*v);
                }
                let xh = &*xh;
                rows(&|r| (k.dot_f16)(&wh[r * m.cols..][..m.cols], xh), y)
            }
            None => kernels::matmul(&m, x, 1, y, &mut s.mm),
        },
        _ => kernels::matmul(&m, x, 1, y, &mut s.mm),
    }
    for (o, bias) in y.iter_mut().zip(b) {
        *o += bias;
    }
}

/// The bytes as f32 values, if they are 4-byte aligned (the file aligns its
/// tensors to 32 bytes).
fn f32_rows(b: &[u8]) -> Option<&[f32]> {
    // SAFETY: every bit pattern is a valid f32; align_to keeps the lifetime.
    let (pre, v, post) = unsafe { b.align_to::<f32>() };
    (pre.is_empty() && post.is_empty()).then_some(v)
}

/// The bytes as f16 values, if they are 2-byte aligned.
fn f16_rows(b: &[u8]) -> Option<&[f16]> {
    // SAFETY: every bit pattern is a valid f16 (a u16 newtype).
    let (pre, v, post) = unsafe { b.align_to::<f16>() };
    (pre.is_empty() && post.is_empty()).then_some(v)
}

/// What [`affine`] converts activations into.
struct AffineScratch {
    x16: Vec<f16>,
    mm: MatmulScratch,
}

/// LayerNorm with affine weight and bias, biased variance.
fn layer_norm(x: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + LN_EPS).sqrt();
    for (((o, v), g), bb) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (v - mean) * inv * g + bb;
    }
}

/// Exact GELU, x·Φ(x) = x/2 · (1 + erf(x/√2)), in place. Eight values at a
/// time run the erf series in lockstep (it vectorizes); values past its range
/// take the scalar [`erf`].
fn gelu_in_place(xs: &mut [f32]) {
    const LANES: usize = 8;
    for chunk in xs.chunks_mut(LANES) {
        let mut z = [0f64; LANES];
        for (zi, &v) in z.iter_mut().zip(chunk.iter()) {
            *zi = v as f64 / std::f64::consts::SQRT_2;
        }
        let series = erf_series(z);
        for ((v, &zi), e) in chunk.iter_mut().zip(&z).zip(series) {
            let e = if zi.abs() < ERF_SERIES_MAX {
                e
            } else {
                erf(zi)
            };
            *v = 0.5 * *v * (1.0 + e as f32);
        }
    }
}

/// Below this |x| erf is its Maclaurin series; above, 1 − erfc by continued
/// fraction.
const ERF_SERIES_MAX: f64 = 2.0;
/// Terms of the series: the last, 4^35 / (35!·71) ≈ 2e-21 at |x| = 2, is far
/// below f64 precision.
const ERF_TERMS: usize = 36;
/// erf(x) = 2/√π · x · Σ_n c_n·(x²)^n with c_n = (−1)^n / (n!·(2n+1)).
const ERF_COEF: [f64; ERF_TERMS] = {
    let mut c = [0.0; ERF_TERMS];
    let mut factorial = 1.0f64;
    let mut n = 0;
    while n < ERF_TERMS {
        if n > 0 {
            factorial *= n as f64;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        c[n] = sign / (factorial * (2 * n + 1) as f64);
        n += 1;
    }
    c
};

/// The Maclaurin series of erf for each lane (meaningful where |x| < 2), by
/// Horner's rule in x².
fn erf_series<const N: usize>(x: [f64; N]) -> [f64; N] {
    let mut y = [0f64; N];
    for (y, x) in y.iter_mut().zip(&x) {
        *y = x * x;
    }
    let mut acc = [ERF_COEF[ERF_TERMS - 1]; N];
    for &c in ERF_COEF[..ERF_TERMS - 1].iter().rev() {
        for (a, y) in acc.iter_mut().zip(&y) {
            *a = *a * y + c;
        }
    }
    for (a, x) in acc.iter_mut().zip(&x) {
        *a *= std::f64::consts::FRAC_2_SQRT_PI * x;
    }
    acc
}

/// erf in f64 (std has none): the Maclaurin series below 2, the continued
/// fraction of erfc above; both converge to f64 precision, far beyond what f32
/// GELU needs (short approximations like A&S 7.1.26 err by 1.5e-7).
fn erf(x: f64) -> f64 {
    if x.abs() < ERF_SERIES_MAX {
        return erf_series([x])[0];
    }
    let r = 1.0 - erfc_cf(x.abs());
    if x < 0.0 {
        -r
    } else {
        r
    }
}

fn erfc_cf(x: f64) -> f64 {
    // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + 2/(x + ...)))))
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..200 {
        let a = n as f64 / 2.0;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / f
}

/// The continue-probability of one token. `hidden` is concat of the selected
/// hidden states (n·H), `topk` the sorted top-k logit values.
pub fn probability(
    d: &Decider<'_>,
    normalize_input: bool,
    hidden: &[f32],
    topk: &[f32],
    s: &mut DeciderScratch,
) -> f32 {
    let w = d.w;
    let h = w.logits_proj_b.len();
    let n_hidden = hidden.len();
    let (hc, u) = s.input.split_at_mut(n_hidden);
    match (&w.hidden_norm, normalize_input) {
        (Some((g, b)), true) => layer_norm(hidden, g, b, hc),
        _ => hc.copy_from_slice(hidden),
    }
    let v: &[f32] = if normalize_input {
        let max = topk.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let sum: f32 = topk.iter().map(|x| (x - max).exp()).sum();
        for (o, x) in s.topv.iter_mut().zip(topk) {
            *o = (x - max).exp() / sum;
        }
        &s.topv[..topk.len()]
    } else {
        topk
    };
    affine(
        d,
        &w.logits_proj_w,
        &w.logits_proj_b,
        v,
        &mut u[..h],
        &mut s.aff,
    );

    let d0 = w.combined_b.len();
    let mm = &mut s.aff;
    affine(
        d,
        &w.combined_w,
        &w.combined_b,
        &s.input,
        &mut s.a[..d0],
        mm,
    );
    affine(
        d,
        &w.input_proj_w,
        &w.input_proj_b,
        &s.a[..d0],
        &mut s.b[..d0],
        mm,
    );
    // z lives in s.b.
    for blk in &w.blocks {
        let (din, dout) = (blk.d_in, blk.d_out);
        layer_norm(&s.b[..din], &blk.norm_w, &blk.norm_b, &mut s.normed[..din]);
        let e = blk.up_b.len();
        affine(
            d,
            &blk.up_w,
            &blk.up_b,
            &s.normed[..din],
            &mut s.hidden[..e],
            mm,
        );
        gelu_in_place(&mut s.hidden[..e]);
        affine(
            d,
            &blk.down_w,
            &blk.down_b,
            &s.hidden[..e],
            &mut s.a[..dout],
            mm,
        );
        match &blk.dim_change {
            Some((cw, cb)) => {
                affine(d, cw, cb, &s.b[..din], &mut s.normed[..dout], mm);
                for (z, r) in s.a[..dout].iter_mut().zip(&s.normed[..dout]) {
                    *z += r;
                }
            }
            None => {
                for (z, r) in s.a[..dout].iter_mut().zip(&s.b[..dout]) {
                    *z += r;
                }
            }
        }
        s.b[..dout].copy_from_slice(&s.a[..dout]);
    }
    let last = w.out_norm_w.len();
    layer_norm(
        &s.b[..last],
        &w.out_norm_w,
        &w.out_norm_b,
        &mut s.normed[..last],
    );
    let z = kernels::dot_f32(&w.out_w, &s.normed[..last]) + w.out_b;
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Values from Abramowitz & Stegun table 7.1.
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (-1.0, -0.8427007929497149),
            (1.9, 0.9927904292352575),
            (-1.99, -0.995111413199617),
            (2.5, 0.999593047982555),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-14,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn gelu_in_place_matches_the_scalar_formula() {
        // Both sides of the series' range, an odd tail, and a NaN.
        let mut xs: Vec<f32> = (-60..=60).map(|i| i as f32 * 0.125).collect();
        xs.push(f32::NAN);
        let want: Vec<f32> = xs
            .iter()
            .map(|&x| 0.5 * x * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2) as f32))
            .collect();
        gelu_in_place(&mut xs);
        for (g, w) in xs.iter().zip(&want) {
            assert!(g == w || (g.is_nan() && w.is_nan()), "{g} vs {w}");
        }
        // GELU(1) = Φ(1) = 0.8413447460685429.
        let mut one = [1.0f32];
        gelu_in_place(&mut one);
        assert!((one[0] - 0.841_344_7).abs() < 1e-7, "{}", one[0]);
    }
}
