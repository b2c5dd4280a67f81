//! Portable kernels: the scalar reference every other path is tested against.
//!
//! Each `dot_*` is one weight row against one activation row, with ggml's
//! arithmetic (`ggml_vec_dot_*_generic` in ggml-cpu/quants.c, and the scalar
//! branches of `ggml_vec_dot_f32/f16/bf16` in ggml-cpu/vec.cpp): integer sums
//! per block, then `f32` scaling and accumulation in ggml's order, no fused
//! multiply-add; the float types accumulate `f32` products in `f64`
//! (`ggml_float`). Written plainly so the compiler can vectorise the integer
//! loops; bit-for-bit agreement with ggml's scalar build is the goal.

use super::{Kernels, TileFn};
use crate::quant::{bf16, f16, q4_k, q8_k};

/// The portable table: runs everywhere.
pub static KERNELS: Kernels = Kernels {
    name: "generic",
    supported: || true,
    f32: tile_f32,
    f16: tile_f16,
    bf16: tile_bf16,
    q8_0: tile_q8_0,
    q4_0: tile_q4_0,
    q4_1: tile_q4_1,
    q5_0: tile_q5_0,
    q5_1: tile_q5_1,
    q4_k: tile_q4_k,
    q6_k: tile_q6_k,
    dot_f32,
    panel: super::no_panel,
    decode_multi: super::no_multi,
    swiglu: super::swiglu::swiglu,
    exp: super::exp::exp,
    dot_f16: super::attn_f16::dot_f16,
    mad_f16: super::attn_f16::mad_f16,
    dot_q8_0: super::attn_q8::dot_q8_0,
    mad_q8_0: super::attn_q8::mad_q8_0,
};

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

#[inline]
fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Block `b` of `N` bytes as an array (one bounds check; the loops over it
/// then have none and vectorise).
#[inline(always)]
fn block<const N: usize>(s: &[u8], b: usize) -> &[u8; N] {
    s[N * b..N * b + N].try_into().unwrap()
}

/// Applies a row-by-row dot product to a tile (see [`TileFn`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the tile signature plus the dot product
fn tile_with(
    dot: fn(usize, &[u8], &[u8]) -> f32,
    cols: usize,
    w: &[u8],
    w_stride: usize,
    x: &[u8],
    x_stride: usize,
    nx: usize,
    out: &mut [f32],
) {
    for (wr, o) in w.chunks_exact(w_stride).zip(out.chunks_exact_mut(nx)) {
        for (i, oi) in o.iter_mut().enumerate() {
            *oi = dot(cols, wr, &x[i * x_stride..]);
        }
    }
}

macro_rules! tiles {
    ($($tile:ident => $dot:ident),* $(,)?) => {$(
        #[doc = concat!("[`TileFn`] over [`", stringify!($dot), "`].")]
        pub fn $tile(
            cols: usize,
            w: &[u8],
            w_stride: usize,
            x: &[u8],
            x_stride: usize,
            nx: usize,
            out: &mut [f32],
        ) {
            tile_with($dot, cols, w, w_stride, x, x_stride, nx, out)
        }
        const _: TileFn = $tile;
    )*};
}

tiles! {
    tile_f32 => dot_f32_f32,
    tile_f16 => dot_f16,
    tile_bf16 => dot_bf16,
    tile_q8_0 => dot_q8_0,
    tile_q4_0 => dot_q4_0,
    tile_q4_1 => dot_q4_1,
    tile_q5_0 => dot_q5_0,
    tile_q5_1 => dot_q5_1,
    tile_q4_k => dot_q4_k,
    tile_q6_k => dot_q6_k,
}

/// f32 weights · f32 activations (`x` as little-endian bytes); f64 sum.
pub fn dot_f32_f32(cols: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut s = 0f64;
    for c in 0..cols {
        s += (f32_at(w, 4 * c) * f32_at(x, 4 * c)) as f64;
    }
    s as f32
}

/// f16 weights · f16 activations; f64 sum of f32 products.
pub fn dot_f16(cols: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut s = 0f64;
    for c in 0..cols {
        s += (f16_at(w, 2 * c) * f16_at(x, 2 * c)) as f64;
    }
    s as f32
}

/// bf16 weights · bf16 activations; f64 sum of f32 products.
pub fn dot_bf16(cols: usize, w: &[u8], x: &[u8]) -> f32 {
    let bf = |b: &[u8], at: usize| bf16::to_f32(u16::from_le_bytes([b[at], b[at + 1]]));
    let mut s = 0f64;
    for c in 0..cols {
        s += (bf(w, 2 * c) * bf(x, 2 * c)) as f64;
    }
    s as f32
}

/// q8_0 · q8_0: `sumf += sumi * (dw * dx)`.
pub fn dot_q8_0(cols: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for b in 0..cols / 32 {
        let (wb, xb) = (block::<34>(w, b), block::<34>(x, b));
        let mut sumi = 0i32;
        for j in 0..32 {
            sumi += (wb[2 + j] as i8 as i32) * (xb[2 + j] as i8 as i32);
        }
        sumf += sumi as f32 * (f16_at(wb, 0) * f16_at(xb, 0));
    }
    sumf
}

/// q4_0 · q8_0: `sumf += sumi * dw * dx` (left to right).
pub fn dot_q4_0(cols: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for b in 0..cols / 32 {
        let (wb, xb) = (block::<18>(w, b), block::<34>(x, b));
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let q = wb[2 + j];
            s0 += ((q & 0xF) as i32 - 8) * (xb[2 + j] as i8 as i32);
            s1 += ((q >> 4) as i32 - 8) * (xb[18 + j] as i8 as i32);
        }
        sumf += (s0 + s1) as f32 * f16_at(wb, 0) * f16_at(xb, 0);
    }
    sumf
}

/// q4_1 · q8_1: `sumf += (dw * dx) * sumi + mw * sx`.
pub fn dot_q4_1(cols: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for b in 0..cols / 32 {
        let (wb, xb) = (block::<20>(w, b), block::<36>(x, b));
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let q = wb[4 + j];
            s0 += (q & 0xF) as i32 * (xb[4 + j] as i8 as i32);
            s1 += (q >> 4) as i32 * (xb[20 + j] as i8 as i32);
        }
        sumf += (f16_at(wb, 0) * f16_at(xb, 0)) * (s0 + s1) as f32 + f16_at(wb, 2) * f16_at(xb, 2);
    }
    sumf
}

/// q5_0 · q8_0: `sumf += (dw * dx) * sumi`.
pub fn dot_q5_0(cols: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for b in 0..cols / 32 {
        let (wb, xb) = (block::<22>(w, b), block::<34>(x, b));
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let q = wb[6 + j];
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            let v0 = ((q & 0xF) as u32 | h0) as i32 - 16;
            let v1 = ((q >> 4) as u32 | h1) as i32 - 16;
            s0 += v0 * (xb[2 + j] as i8 as i32);
            s1 += v1 * (xb[18 + j] as i8 as i32);
        }
        sumf += (f16_at(wb, 0) * f16_at(xb, 0)) * (s0 + s1) as f32;
    }
    sumf
}

/// q5_1 · q8_1: `sumf += (dw * dx) * sumi + mw * sx`.
pub fn dot_q5_1(cols: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for b in 0..cols / 32 {
        let (wb, xb) = (block::<24>(w, b), block::<36>(x, b));
        let qh = u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]);
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let q = wb[8 + j];
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            s0 += ((q & 0xF) as u32 | h0) as i32 * (xb[4 + j] as i8 as i32);
            s1 += ((q >> 4) as u32 | h1) as i32 * (xb[20 + j] as i8 as i32);
        }
        sumf += (f16_at(wb, 0) * f16_at(xb, 0)) * (s0 + s1) as f32 + f16_at(wb, 2) * f16_at(xb, 2);
    }
    sumf
}

/// q4_k · q8_K. Per super-block: eight integer lane sums
/// `aux[l] = Σ_{p ≡ l mod 8} sc[p/32]·q4[p]·q8[p]`, `sums[l] += (dw·dx)·aux[l]`,
/// and `sumf -= (dminw·dx) · Σ_g bsums[g]·m[g/2]`; finally `sumf += Σ_l sums[l]`.
pub fn dot_q4_k(cols: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for b in 0..cols / 256 {
        let wb = &w[144 * b..144 * b + 144];
        let xb = &x[292 * b..292 * b + 292];
        let q8 = &xb[q8_k::QS..q8_k::QS + 256];
        let mut aux = [0i32; 8];
        let mut summ = 0i32;
        for j in 0..8 {
            let (sc, m) = q4_k::scale_min(j, &wb[4..16]);
            let bs0 = i16::from_le_bytes([xb[q8_k::BSUMS + 4 * j], xb[q8_k::BSUMS + 4 * j + 1]]);
            let bs1 =
                i16::from_le_bytes([xb[q8_k::BSUMS + 4 * j + 2], xb[q8_k::BSUMS + 4 * j + 3]]);
            summ += (bs0 as i32 + bs1 as i32) * m as i32;
            let qs = &wb[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
            let shift = 4 * (j % 2);
            for p in 0..32 {
                let a = ((qs[p] >> shift) & 0xF) as i32;
                aux[p % 8] += sc as i32 * a * (q8[32 * j + p] as i8 as i32);
            }
        }
        let dx = f32_at(xb, 0);
        let d = f16_at(wb, 0) * dx;
        for l in 0..8 {
            sums[l] += d * aux[l] as f32;
        }
        let dmin = f16_at(wb, 2) * dx;
        sumf -= dmin * summ as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// q6_k · q8_K. Per super-block: `aux[l] = Σ_{p ≡ l mod 8} sc[p/16]·(q6[p]-32)·q8[p]`,
/// `sums[l] += (dw·dx)·aux[l]`; finally `Σ_l sums[l]`.
pub fn dot_q6_k(cols: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    for b in 0..cols / 256 {
        let wb = &w[210 * b..210 * b + 210];
        let xb = &x[292 * b..292 * b + 292];
        let q8 = &xb[q8_k::QS..q8_k::QS + 256];
        let (ql, qh, sc) = (&wb[0..128], &wb[128..192], &wb[192..208]);
        let mut aux = [0i32; 8];
        for h in 0..2 {
            let (ql, qh) = (&ql[64 * h..64 * h + 64], &qh[32 * h..32 * h + 32]);
            for l in 0..32 {
                let q = [
                    (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                ];
                for (k, &qk) in q.iter().enumerate() {
                    let p = 128 * h + 32 * k + l;
                    let s = sc[p / 16] as i8 as i32;
                    aux[p % 8] += s * (qk as i32 - 32) * (q8[p] as i8 as i32);
                }
            }
        }
        let d = f16_at(wb, 208) * f32_at(xb, 0);
        for l in 0..8 {
            sums[l] += d * aux[l] as f32;
        }
    }
    let mut sumf = 0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

/// `Σ a[i]·b[i]` in eight f32 partial sums (vectorisable; less drift than one
/// chain).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
