//! `q6_k`: super-blocks of 256 values = 16 sub-blocks of 16, each with a
//! signed 8-bit scale, and 6-bit quants split into low 4 and high 2 bits.
//!
//! ```text
//! field   bytes  meaning
//! ------  -----  -----------------------------------------------------------
//! ql      128    low 4 bits, in 2 halves of 64 bytes; half h covers values
//!                128h..128h+128: byte l (l < 32) holds value 128h+l (low
//!                nibble) and 128h+64+l (high nibble); byte 32+l holds
//!                128h+32+l (low) and 128h+96+l (high)
//! qh      64     high 2 bits, in 2 halves of 32 bytes; byte l of half h holds
//!                values 128h+l, +32, +64, +96 at bits 0-1, 2-3, 4-5, 6-7
//! scales  16     i8 scale per sub-block of 16 values
//! d       2      f16 super-scale
//! total   210
//! ```
//!
//! `value = d * scales[j] * (q - 32)`   (for value in sub-block j, q in 0..64)
//!
//! Quantizer: ggml `quantize_row_q6_K_ref` (what `ggml_quantize_chunk` runs
//! without an importance matrix): each sub-block gets a scale from
//! `make_qx_quants` (weights x², 19 candidate scales), the 16 scales are
//! quantized to i8 against the one of largest magnitude (which maps to -128,
//! clamped to 127 where the sign flips), and the quants are recomputed against
//! the stored scales. Float operations are in ggml's order, in f32, no FMA.

use super::{assert_blocks, f16, nearest_int, read_f16, write_f16};

/// Values per super-block.
pub const QK_K: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 210;

/// ggml's `GROUP_MAX_EPS`: below this a group counts as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Decodes whole super-blocks from `src` into `out`.
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_blocks("q6_k", out.len(), src.len(), QK_K, BLOCK_BYTES);
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = read_f16(&b[208..210]);
        for h in 0..2 {
            let ql = &b[64 * h..64 * h + 64];
            let qh = &b[128 + 32 * h..128 + 32 * h + 32];
            let sc = &b[192 + 8 * h..192 + 8 * h + 8];
            let y = &mut y[128 * h..128 * h + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

/// Encodes whole super-blocks of `src` into `out`, byte-identical to ggml.
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    assert_blocks("q6_k", src.len(), out.len(), QK_K, BLOCK_BYTES);
    let mut l_all = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    for (x, b) in src
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for ib in 0..QK_K / 16 {
            let scale = make_qx_quants(
                32,
                &x[16 * ib..16 * ib + 16],
                &mut l_all[16 * ib..16 * ib + 16],
            );
            scales[ib] = scale;
            let abs_scale = scale.abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }

        if max_abs_scale < GROUP_MAX_EPS {
            b.fill(0);
            continue;
        }

        let iscale = -128.0 / max_scale;
        write_f16(&mut b[208..210], 1.0 / iscale);
        let mut sc = [0i8; QK_K / 16];
        for (s, &scale) in sc.iter_mut().zip(&scales) {
            // MIN(127, nearest_int(...)) stored in an int8_t
            *s = nearest_int(iscale * scale).min(127) as i8;
        }

        let d_all = f16::to_f32(f16::from_f32(1.0 / iscale));
        for j in 0..QK_K / 16 {
            let d = d_all * sc[j] as f32;
            if d == 0.0 {
                // keep make_qx_quants' quants for this sub-block, as ggml does
                continue;
            }
            for ii in 0..16 {
                let l = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                l_all[16 * j + ii] = (l + 32) as u8;
            }
        }

        for h in 0..2 {
            let ll = &l_all[128 * h..128 * h + 128];
            for l in 0..32 {
                let q1 = ll[l] & 0xF;
                let q2 = ll[l + 32] & 0xF;
                let q3 = ll[l + 64] & 0xF;
                let q4 = ll[l + 96] & 0xF;
                b[64 * h + l] = q1 | (q3 << 4);
                b[64 * h + l + 32] = q2 | (q4 << 4);
                b[128 + 32 * h + l] = (ll[l] >> 4)
                    | ((ll[l + 32] >> 4) << 2)
                    | ((ll[l + 64] >> 4) << 4)
                    | ((ll[l + 96] >> 4) << 6);
            }
        }
        for (o, &s) in b[192..208].iter_mut().zip(&sc) {
            *o = s as u8;
        }
    }
}

/// ggml's `make_qx_quants` for `rmse_type = 1` and no importance weights (the
/// only way q6_k's reference quantizer calls it): quants in `0..2*nmax` are
/// written to `l` (offset by `nmax`), weights are `x²`, and the returned scale
/// is the least-squares one for the best of 19 candidate inverse scales
/// `-(nmax + 0.1 * is) / max`, `is = -9..=9`.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [u8]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = (q + nmax) as u8;
        let w = x[i] * x[i];
        let qf = q as f32;
        sumlx += w * x[i] * qf;
        suml2 += w * qf * qf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let qf = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * qf;
            suml2 += w * qf * qf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                l[i] = (q + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}
