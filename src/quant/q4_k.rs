//! `q4_k`: super-blocks of 256 values = 8 sub-blocks of 32, each with its own
//! 6-bit scale and 6-bit minimum, and 4-bit quants.
//!
//! ```text
//! field   bytes  meaning
//! ------  -----  -----------------------------------------------------------
//! d       2      f16 super-scale for the sub-block scales
//! dmin    2      f16 super-scale for the sub-block minimums
//! scales  12     8 scales sc[j] and 8 mins m[j], 6 bits each, packed:
//!                  j < 4:  sc[j] = scales[j] & 63,  m[j] = scales[j+4] & 63
//!                  j >= 4: sc[j] = (scales[j+4] & 15) | (scales[j-4] >> 6) << 4
//!                          m[j]  = (scales[j+4] >> 4) | (scales[j]   >> 6) << 4
//! qs      128    nibbles, in 4 groups of 32 bytes; group g covers values
//!                64g..64g+64: byte l holds value 64g+l (low nibble, sub-block
//!                2g) and value 64g+32+l (high nibble, sub-block 2g+1)
//! total   144
//! ```
//!
//! `value = d * sc[j] * q - dmin * m[j]`   (for value in sub-block j)
//!
//! Quantizer: ggml `quantize_row_q4_K_ref` (what `ggml_quantize_chunk` runs
//! when there is no importance matrix). Each sub-block gets a scale and a min
//! from `make_qkx2_quants` (a small search over 21 candidate scales, weighted
//! by `sqrt(mean x²) + |x|`), then the 8 scales and 8 mins are quantized to 6
//! bits against their maxima, and the quants recomputed from the stored
//! (f16 × 6-bit) scales. Every float operation below is in ggml's order, in
//! f32, without fused multiply-add, which is what makes the bytes identical.

use super::{assert_blocks, f16, nearest_int, read_f16, write_f16};

/// Values per super-block.
pub const QK_K: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 144;

/// Sub-block `j`'s 6-bit scale and min from the 12 packed bytes
/// (ggml `get_scale_min_k4`).
#[inline]
pub fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Decodes whole super-blocks from `src` into `out`.
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_blocks("q4_k", out.len(), src.len(), QK_K, BLOCK_BYTES);
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = read_f16(&b[0..2]);
        let min = read_f16(&b[2..4]);
        let scales = &b[4..16];
        for g in 0..4 {
            let q = &b[16 + 32 * g..16 + 32 * g + 32];
            let (sc, m) = scale_min(2 * g, scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = scale_min(2 * g + 1, scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            let y = &mut y[64 * g..64 * g + 64];
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                y[32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// Encodes whole super-blocks of `src` into `out`, byte-identical to ggml.
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    assert_blocks("q4_k", src.len(), out.len(), QK_K, BLOCK_BYTES);
    let mut l_all = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    for (x, b) in src
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for j in 0..8 {
            let xs = &x[32 * j..32 * j + 32];
            let mut sum_x2 = 0f32;
            for &v in xs {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = av_x + v.abs();
            }
            let (scale, the_min) = make_qkx2_quants(
                15,
                xs,
                &weights,
                &mut l_all[32 * j..32 * j + 32],
                &mut laux,
                -1.0,
                0.1,
                20,
                false,
            );
            scales[j] = scale;
            mins[j] = the_min;
            if scale > max_scale {
                max_scale = scale;
            }
            if the_min > max_min {
                max_min = the_min;
            }
        }

        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let mut packed = [0u8; 12];
        for j in 0..8 {
            // uint8_t ls = nearest_int(...); ls = MIN(63, ls);
            let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
            if j < 4 {
                packed[j] = ls;
                packed[j + 4] = lm;
            } else {
                packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                packed[j - 4] |= (ls >> 4) << 6;
                packed[j] |= (lm >> 4) << 6;
            }
        }
        write_f16(&mut b[0..2], max_scale / 63.0);
        write_f16(&mut b[2..4], max_min / 63.0);
        b[4..16].copy_from_slice(&packed);

        // Recompute the quants against the scales as stored.
        let d_all = f16::to_f32(f16::from_f32(max_scale / 63.0));
        let dmin_all = f16::to_f32(f16::from_f32(max_min / 63.0));
        for j in 0..8 {
            let (sc, m) = scale_min(j, &packed);
            let d = d_all * sc as f32;
            if d == 0.0 {
                // keep make_qkx2_quants' quants for this sub-block, as ggml does
                continue;
            }
            let dm = dmin_all * m as f32;
            for ii in 0..32 {
                let l = nearest_int((x[32 * j + ii] + dm) / d);
                l_all[32 * j + ii] = l.clamp(0, 15) as u8;
            }
        }

        let qs = &mut b[16..144];
        for g in 0..4 {
            for l in 0..32 {
                qs[32 * g + l] = l_all[64 * g + l] | (l_all[64 * g + l + 32] << 4);
            }
        }
    }
}

/// ggml's `make_qkx2_quants`: finds a scale and a (non-positive) offset for
/// `x` with quants in `0..=nmax`, minimising the weighted squared (or absolute,
/// `use_mad`) error over `nstep + 1` candidate inverse scales
/// `(rmin + rdelta * is + nmax) / (max - min)`. Writes the quants to `l`
/// (using `laux` as scratch) and returns `(scale, -min)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        let diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0f32;
        let mut sum_l2 = 0f32;
        let mut sum_xl = 0f32;
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                let diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}
