//! x86-64 kernels: AVX2 (+FMA, F16C) and AVX-512 (F, BW, VL + VNNI).
//!
//! Both tables share one body (the `x86_kernels!` macro), compiled twice with
//! different `#[target_feature]`s; they differ in the 8-bit dot product of the
//! 32-byte blocks: AVX2 uses `vpmaddubsw` + `vpmaddwd`, AVX-512 uses VNNI's
//! `vpdpbusd` (on 256-bit vectors, which keeps the block layout simple), and
//! in `dot_f32`, which uses 512-bit vectors.
//!
//! Structure of every quantized kernel: a *micro-kernel* computes an `RW × RX`
//! tile (weight rows × activation rows) in one pass over the blocks, so a
//! weight block is unpacked once per tile and an activation block's data
//! (loaded quants, scale, offset correction) once per tile. Decode (one
//! activation row) uses 4 × 1 tiles; prefill uses 2 × 4 tiles with AVX2's 16
//! vector registers; with AVX-512, prefill of the block-32 types and the
//! k-quants runs the panel products of [`panel`] (4 × 4 tiles are left for 2–3
//! activation rows and the other types), and decode of q4_0, q5_0, q8_0, q4_k
//! and q6_k has kernels of its own (`x_0_rows`, `q8_0_rows`, `q4_k_rows`,
//! `q6_k_rows`: fewer operations per weight byte). Each tile
//! keeps 8 f32 lanes per product and sums them at the end, so the block sums
//! are added in another order than ggml's scalar code (the only difference).
//!
//! Unsigned-times-signed bytes: weights are unpacked to unsigned quants `q`
//! (`q4_0`: 0..15 with offset 8; `q5_0`: 0..31 with offset 16), and the offset
//! is taken off afterwards as `offset · Σ y` (computed once per activation
//! block and tile); `q8_0` uses the sign trick (`|w| · sign(y, w)`).

use super::{generic, Kernels};

pub mod panel;
use core::arch::x86_64::*;

fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// AVX2 + FMA + F16C.
pub static AVX2: Kernels = Kernels {
    name: "avx2",
    supported: has_avx2,
    f32: avx2::tile_f32,
    f16: avx2::tile_f16,
    bf16: avx2::tile_bf16,
    q8_0: avx2::tile_q8_0,
    q4_0: avx2::tile_q4_0,
    q4_1: avx2::tile_q4_1,
    q5_0: avx2::tile_q5_0,
    q5_1: avx2::tile_q5_1,
    q4_k: avx2::tile_q4_k,
    q6_k: avx2::tile_q6_k,
    dot_f32: avx2::dot_f32,
    panel: super::no_panel,
    decode_multi: super::no_multi,
    swiglu: super::swiglu::x86::swiglu_avx2,
    exp: super::exp::x86::exp_avx2,
    dot_f16: super::attn_f16::x86::dot_f16_avx2,
    mad_f16: super::attn_f16::x86::mad_f16_avx2,
    dot_q8_0: super::attn_q8::x86::dot_q8_0_avx2,
    mad_q8_0: super::attn_q8::x86::mad_q8_0_avx2,
};

/// AVX-512 F/BW/VL + VNNI (on top of AVX2 + FMA + F16C).
pub static AVX512: Kernels = Kernels {
    name: "avx512",
    supported: has_avx512,
    f32: avx512::tile_f32,
    f16: avx512::tile_f16,
    bf16: avx512::tile_bf16,
    q8_0: avx512::tile_q8_0,
    q4_0: avx512::tile_q4_0,
    q4_1: avx512::tile_q4_1,
    q5_0: avx512::tile_q5_0,
    q5_1: avx512::tile_q5_1,
    q4_k: avx512::tile_q4_k,
    q6_k: avx512::tile_q6_k,
    dot_f32: avx512_dot_f32,
    panel: panel::for_type,
    decode_multi: decode_multi_for,
    swiglu: super::swiglu::x86::swiglu_avx512,
    exp: super::exp::x86::exp_avx512,
    dot_f16: super::attn_f16::x86::dot_f16_avx512,
    mad_f16: super::attn_f16::x86::mad_f16_avx512,
    dot_q8_0: super::attn_q8::x86::dot_q8_0_avx512,
    mad_q8_0: super::attn_q8::x86::mad_q8_0_avx512,
};

// Keep the generic module referenced for documentation links.
#[allow(unused_imports)]
use generic as _;

// ---------------------------------------------------------------------------
// Helpers shared by both tables (need AVX2 + FMA + F16C; the AVX-512 code has
// a superset of those features, so it may call them).

/// 32 bytes at the start of `s` (panics if shorter).
#[inline]
#[target_feature(enable = "avx2")]
fn ld32(s: &[u8]) -> __m256i {
    assert!(s.len() >= 32);
    // SAFETY: 32 readable bytes (checked above); unaligned load.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

// Pointer forms of the loads, for the block-32 inner loops (their bounds are
// checked once per tile).

/// 32 bytes at `p`.
///
/// # Safety
/// `p..p + 32` readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn ld32p(p: *const u8) -> __m256i {
    // SAFETY: caller; unaligned load.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The f16 at `p` as f32.
///
/// # Safety
/// `p..p + 2` readable.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16p(p: *const u8) -> f32 {
    // SAFETY: caller.
    let h = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// 16 packed nibbles at `p` → 32 unsigned bytes: low nibbles first (values
/// 0..16), then high nibbles (values 16..32), the q4_0/q4_1/q5 block order.
///
/// # Safety
/// `p..p + 16` readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles_p(p: *const u8) -> __m256i {
    // SAFETY: caller; unaligned load (into both halves).
    let v = unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast())) };
    // the upper half shifted by 4: one variable shift instead of a shift and an insert
    let v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
}

/// The f16 at `p` as f32 in all 8 lanes.
///
/// # Safety
/// `p..p + 2` readable.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16x8p(p: *const u8) -> __m256 {
    // SAFETY: caller.
    let h = unsafe { p.cast::<i16>().read_unaligned() };
    _mm256_cvtph_ps(_mm_set1_epi16(h))
}

/// The q5 quants of a block: nibbles at `p + 4`, the fifth bits at `p`.
///
/// # Safety
/// `p..p + 20` readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q5_p(p: *const u8) -> __m256i {
    // SAFETY: caller.
    let (qh, lo) = unsafe { (p.cast::<u32>().read_unaligned(), nibbles_p(p.add(4))) };
    _mm256_or_si256(lo, fifth_bits(qh))
}

/// 16 bytes at the start of `s` (panics if shorter).
#[inline]
#[target_feature(enable = "avx2")]
fn ld16(s: &[u8]) -> __m128i {
    assert!(s.len() >= 16);
    // SAFETY: 16 readable bytes (checked above); unaligned load.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// The f16 at `s[0..2]` as f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_at(s: &[u8]) -> f32 {
    let h = u16::from_le_bytes([s[0], s[1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

#[inline]
fn f32_at(s: &[u8]) -> f32 {
    f32::from_le_bytes([s[0], s[1], s[2], s[3]])
}

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// How far ahead of the current weight block the kernels prefetch, in bytes.
/// The decode tiles walk the matrix linearly (4 rows at a time, rows packed),
/// so this is a distance in the stream, whatever the row length; measured
/// best among 4, 8 and 16 KiB.
const PREFETCH_AHEAD: usize = 8192;

/// The prefetch distance of a decode tile of `rw` rows of `ws` bytes:
/// [`PREFETCH_AHEAD`] bytes, or one whole tile if that is longer. The tile
/// reads its rows side by side, so a byte distance shorter than the tile
/// would land partly in the tile itself (too late) and leave rows of the
/// next tile unfetched; a whole tile ahead, row `jj`'s block prefetches the
/// same block of row `jj` of the next tile. (Long rows: 896 × 4864 q6_k cold
/// 10 → 21 GB/s in `matvec_bench`.)
#[inline]
fn tile_ahead(rw: usize, ws: usize) -> usize {
    PREFETCH_AHEAD.max(rw * ws)
}

/// Hints the line at `base + off` into L2. The T1 hint measured 1.3–1.9×
/// faster decode than T0 on Zen 4 (why is not known: no hardware counters
/// there). Never faults (a prefetch of an address outside the slice is only
/// a hint; `wrapping_add` keeps the pointer arithmetic defined).
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch(base: &[u8], off: usize) {
    let p = base.as_ptr().wrapping_add(off);
    _mm_prefetch::<_MM_HINT_T1>(p.cast())
}

/// The 32 bits of `qh` as bytes: 0x10 where bit j is set, else 0.
#[inline]
#[target_feature(enable = "avx2")]
fn fifth_bits(qh: u32) -> __m256i {
    let v = _mm256_set1_epi32(qh as i32);
    let shuf = _mm256_setr_epi64x(
        0x0000_0000_0000_0000,
        0x0101_0101_0101_0101,
        0x0202_0202_0202_0202,
        0x0303_0303_0303_0303,
    );
    let v = _mm256_shuffle_epi8(v, shuf);
    let bit = _mm256_set1_epi64x(0x7FBF_DFEF_F7FB_FDFEu64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_or_si256(v, bit), _mm256_set1_epi8(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

// The 8-bit dot products of a block: `acc` plus the products of 4 adjacent
// bytes, in 8 i32 lanes.

/// Signed bytes · signed bytes (sign trick: `y` must avoid -128; `w` may be -128).
#[inline]
#[target_feature(enable = "avx2")]
fn dot_i8i8_avx2(acc: __m256i, w: __m256i, y: __m256i) -> __m256i {
    dot_u8i8_avx2(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(y, w))
}

/// Unsigned bytes (pairs must not saturate i16: |w| ≤ 128 with |y| ≤ 127 is fine) · signed bytes.
#[inline]
#[target_feature(enable = "avx2")]
fn dot_u8i8_avx2(acc: __m256i, q: __m256i, y: __m256i) -> __m256i {
    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), _mm256_set1_epi16(1));
    _mm256_add_epi32(acc, p)
}

/// [`dot_i8i8_avx2`] with VNNI.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
fn dot_i8i8_vnni(acc: __m256i, w: __m256i, y: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(y, w))
}

/// Unsigned bytes · signed bytes with VNNI.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
fn dot_u8i8_vnni(acc: __m256i, q: __m256i, y: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, q, y)
}

/// The 4-bit scales and mins of a q4_k super-block (ggml's 12-byte packing).
#[inline]
fn q4k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        (sc[j], mn[j]) = crate::quant::q4_k::scale_min(j, s);
    }
    (sc, mn)
}

#[target_feature(enable = "avx2,avx512f")]
fn avx512_dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16k + 16 <= n, within both slices.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(a.as_ptr().add(i + 16 * k)),
                    _mm512_loadu_ps(b.as_ptr().add(i + 16 * k)),
                )
            };
            *acc = _mm512_fmadd_ps(x, y, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 <= n, within both slices.
        let (x, y) = unsafe {
            (
                _mm512_loadu_ps(a.as_ptr().add(i)),
                _mm512_loadu_ps(b.as_ptr().add(i)),
            )
        };
        acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
        i += 16;
    }
    let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let mut s = _mm512_reduce_add_ps(v);
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

fn avx512_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: this function is only reachable through the AVX512 table, which
    // `available()` hands out only when `has_avx512()` detected the features.
    unsafe { avx512_dot_f32_impl(a, b) }
}

// ---------------------------------------------------------------------------
// AVX-512 decode kernels (one activation row), used only by the `avx512`
// instantiation. They use the AVX-512 forms of 256-bit operations (byte masks,
// ternary logic): on Zen 4 512-bit operations are double-pumped, so what
// counts is the number of 256-bit operations per weight byte.

/// The 16 bytes at `p`.
///
/// # Safety
/// `p..p + 16` readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn ld16p(p: *const u8) -> __m128i {
    // SAFETY: caller; unaligned load.
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// The u32 at `p`.
///
/// # Safety
/// `p..p + 4` readable.
#[inline]
unsafe fn u32p(p: *const u8) -> u32 {
    // SAFETY: caller.
    unsafe { p.cast::<u32>().read_unaligned() }
}

/// Runs `rows::<4>` over 4 weight rows at a time, then `rows::<1>` over the rest,
/// writing one output per row (the decode drive).
macro_rules! decode_rows {
    ($rows:ident, $cols:expr, $w:expr, $ws:expr, $x:expr, $out:expr) => {{
        let (cols, w, ws, x, out) = ($cols, $w, $ws, $x, $out);
        let m = w.len() / ws;
        assert!(out.len() >= m);
        let mut j = 0;
        while j + 4 <= m {
            out[j..j + 4].copy_from_slice(&$rows::<4, 1>(cols, &w[j * ws..], ws, x, 0)[0]);
            j += 4;
        }
        while j < m {
            out[j] = $rows::<1, 1>(cols, &w[j * ws..], ws, x, 0)[0][0];
            j += 1;
        }
    }};
}

/// The q8_0 activation blocks `b` and `b + 1` at `xp`: their quants, and
/// their f16 scales as one u32 (block `b` in the low half).
///
/// # Safety
/// `xp + 34b .. xp + 34b + 68` readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn x_pair(xp: *const u8, b: usize) -> (__m256i, __m256i, u32) {
    // SAFETY: caller.
    unsafe {
        let xb = xp.add(b * 34);
        (
            ld32p(xb.add(2)),
            ld32p(xb.add(36)),
            u32p(xb) & 0xFFFF | u32p(xb.add(34)) << 16,
        )
    }
}

/// The f16 scales of the weight blocks `b` and `b + 1` (`wb` bytes each, the
/// f16 scale first) of `RW` rows `ws` bytes apart at `wp`, as f32: lanes 2jj,
/// 2jj + 1 for row jj. The f16 of 4 rows × 2 blocks converted at once.
///
/// # Safety
/// For jj < RW, `wp + jj·ws + b·wb .. + 2·wb` readable.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn w_scales<const RW: usize>(wp: *const u8, ws: usize, b: usize, wb: usize) -> __m256 {
    const { assert!(RW <= 4) };
    let mut hw = [0u64; 2];
    for jj in 0..RW {
        // SAFETY: caller.
        let h = unsafe {
            let p = wp.add(jj * ws + b * wb);
            u32p(p) & 0xFFFF | u32p(p.add(wb)) << 16
        };
        hw[jj / 2] |= (h as u64) << (32 * (jj % 2));
    }
    _mm256_cvtph_ps(_mm_set_epi64x(hw[1] as i64, hw[0] as i64))
}

/// The products' scales `d_w · d_x`: the weight scales from [`w_scales`]
/// times the activation scales `hx` as from [`x_pair`] (block b's in the even
/// lanes, b + 1's in the odd ones).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn wx_scales(w: __m256, hx: u32) -> __m256 {
    let dx = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(_mm_cvtph_ps(
        _mm_cvtsi32_si128(hx as i32),
    ))));
    _mm256_mul_ps(w, dx)
}

/// q4_0 (`Q5 == false`) or q5_0 decode of `RW` weight rows against `NX`
/// activation rows (`xs` bytes apart), two blocks at a time:
/// both blocks' nibbles in one vector (the low nibbles against the
/// activations 0..16 of both blocks, the high ones against 16..32), for q5_0
/// the fifth bits or-ed in under `qh` as a byte mask, the offset (8, q5_0 16)
/// taken off as `offset · Σ y`; the activations rearranged and the f16 scales
/// of both blocks of all rows converted once per pass, shared by the rows.
/// Each weight row is unpacked once for all `NX` activation rows, and every
/// (weight row, activation row) pair goes through the same operations in the
/// same order whatever `NX` is: a row's result does not depend on the others.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn x_0_rows<const RW: usize, const NX: usize, const Q5: bool>(
    cols: usize,
    w: &[u8],
    ws: usize,
    x: &[u8],
    xs: usize,
) -> [[f32; RW]; NX] {
    // block bytes, where its nibbles start, the quants' offset
    let (wb, qs, off) = if Q5 { (22, 6, 16) } else { (18, 2, 8) };
    let nb = cols / 32;
    // the bounds of every load below, checked once
    assert!(w.len() >= (RW - 1) * ws + nb * wb && x.len() >= (NX - 1) * xs + nb * 34);
    let ahead = tile_ahead(RW, ws);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    const { assert!(RW <= 4 && NX >= 1) };
    let (m4, fo, f5) = (
        _mm256_set1_epi8(0x0F),
        _mm256_set1_epi8(off),
        _mm256_set1_epi8(0x10),
    );
    // row jj's scales (lanes 2jj, 2jj + 1 of the 8 below) spread over 4 lanes each
    let spread: [__m256i; 4] = core::array::from_fn(|jj| {
        let (a, b) = (2 * jj as i32, 2 * jj as i32 + 1);
        _mm256_setr_epi32(a, a, a, a, b, b, b, b)
    });
    let mut acc = [[_mm256_setzero_ps(); RW]; NX];
    let mut b = 0;
    while b + 2 <= nb {
        // Per activation row: [b: 0..16 | b + 1: 0..16] and [b: 16..32 | b + 1:
        // 16..32], matching the low and high nibbles of both weight blocks in
        // one vector; the offset's share; the products' scales.
        // SAFETY: b + 1 < nb: both blocks of all RW rows within w (asserted above).
        let sw = unsafe { w_scales::<RW>(wp, ws, b, wb) };
        let ys: [(__m256i, __m256i, __m256i, __m256); NX] = core::array::from_fn(|i| {
            // SAFETY: i < NX, b + 1 < nb: both blocks within x (asserted above).
            let (y0, y1, hx) = unsafe { x_pair(xp.add(i * xs), b) };
            let (ylo, yhi) = (
                _mm256_permute2x128_si256::<0x20>(y0, y1),
                _mm256_permute2x128_si256::<0x31>(y0, y1),
            );
            let coff = _mm256_dpbusd_epi32(
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), fo, ylo),
                fo,
                yhi,
            );
            let init = _mm256_sub_epi32(_mm256_setzero_si256(), coff);
            (ylo, yhi, init, wx_scales(sw, hx))
        });
        for jj in 0..RW {
            // the row streams are short, so the hardware prefetcher starts too late
            prefetch(w, ahead + jj * ws + b * wb);
            // SAFETY: jj < RW, b + 1 < nb: both blocks within w (asserted above).
            let v = unsafe {
                let p = wp.add(jj * ws + b * wb);
                _mm256_inserti128_si256::<1>(
                    _mm256_castsi128_si256(ld16p(p.add(qs))),
                    ld16p(p.add(wb + qs)),
                )
            };
            let (qlo, qhi) = if Q5 {
                // SAFETY: jj < RW, b + 1 < nb: both blocks within w (asserted above).
                let (h0, h1) = unsafe {
                    let p = wp.add(jj * ws + b * wb);
                    (u32p(p.add(2)), u32p(p.add(wb + 2)))
                };
                // the fifth bits of the low and of the high nibbles
                let (klo, khi) = (h0 & 0xFFFF | h1 << 16, h0 >> 16 | h1 & 0xFFFF_0000);
                // (nibble & 0x0F) | fifth bit, in one ternary-logic op
                (
                    _mm256_ternarylogic_epi32::<0xEA>(v, m4, _mm256_maskz_mov_epi8(klo, f5)),
                    _mm256_ternarylogic_epi32::<0xEA>(
                        _mm256_srli_epi16::<4>(v),
                        m4,
                        _mm256_maskz_mov_epi8(khi, f5),
                    ),
                )
            } else {
                (
                    _mm256_and_si256(v, m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4),
                )
            };
            for (acc, &(ylo, yhi, init, s)) in acc.iter_mut().zip(&ys) {
                let p = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(init, qlo, ylo), qhi, yhi);
                acc[jj] = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(p),
                    _mm256_permutevar8x32_ps(s, spread[jj]),
                    acc[jj],
                );
            }
        }
        b += 2;
    }
    let mut out = [[0f32; RW]; NX];
    for (o, acc) in out.iter_mut().zip(&acc) {
        for (o, &a) in o.iter_mut().zip(acc) {
            *o = hsum(a);
        }
    }
    if b < nb {
        // the last block of an odd count, 256 bits wide
        for (i, out) in out.iter_mut().enumerate() {
            // SAFETY: i < NX, b < nb: the block within x (asserted above).
            let (y, dx) = unsafe {
                let xb = xp.add(i * xs + b * 34);
                (ld32p(xb.add(2)), f16p(xb))
            };
            let init = _mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), fo, y),
            );
            for (jj, o) in out.iter_mut().enumerate() {
                // SAFETY: jj < RW, b < nb: the block within w (asserted above).
                let (lo, qh, dw) = unsafe {
                    let p = wp.add(jj * ws + b * wb);
                    (nibbles_p(p.add(qs)), u32p(p.add(2)), f16p(p))
                };
                let q = if Q5 {
                    _mm256_mask_add_epi8(lo, qh, lo, f5)
                } else {
                    lo
                };
                let p = _mm256_dpbusd_epi32(init, q, y);
                *o += (dw * dx) * hsum(_mm256_cvtepi32_ps(p));
            }
        }
    }
    out
}

/// q8_0 decode of `RW` weight rows against `NX` activation rows (`xs` bytes
/// apart), two blocks per pass: the weights made unsigned
/// by flipping their sign bits (`w + 128`, one xor instead of `vpabsb` and
/// `vpsignb`), the 128 taken off as `128 · Σ y` (the dot's starting value,
/// once per pass for all rows), the f16 scales of both blocks of all rows
/// converted at once and broadcast from memory. As in [`x_0_rows`], a
/// row's result does not depend on `NX` or on the other rows.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_rows<const RW: usize, const NX: usize>(
    cols: usize,
    w: &[u8],
    ws: usize,
    x: &[u8],
    xs: usize,
) -> [[f32; RW]; NX] {
    let nb = cols / 32;
    // the bounds of every load below, checked once
    assert!(w.len() >= (RW - 1) * ws + nb * 34 && x.len() >= (NX - 1) * xs + nb * 34);
    let ahead = tile_ahead(RW, ws);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    const { assert!(RW <= 4 && NX >= 1) };
    let sign = _mm256_set1_epi8(-128);
    // -128 · Σ y of the activation block at `xb`
    let init = |y: __m256i| {
        _mm256_sub_epi32(
            _mm256_setzero_si256(),
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), sign, y),
        )
    };
    let mut acc = [[_mm256_setzero_ps(); RW]; NX];
    let mut b = 0;
    while b + 2 <= nb {
        // SAFETY: b + 1 < nb: both blocks of all RW rows within w (asserted above).
        let sw = unsafe { w_scales::<RW>(wp, ws, b, 34) };
        let ys: [(__m256i, __m256i, __m256i, __m256i, [f32; 8]); NX] = core::array::from_fn(|i| {
            // SAFETY: i < NX, b + 1 < nb: both blocks within x (asserted above).
            let (y0, y1, hx) = unsafe { x_pair(xp.add(i * xs), b) };
            // the scales of both blocks of all rows (lanes 2jj, 2jj + 1), to
            // broadcast from memory
            let mut s = [0f32; 8];
            // SAFETY: 8 f32 in `s`, unaligned store.
            unsafe { _mm256_storeu_ps(s.as_mut_ptr(), wx_scales(sw, hx)) };
            (y0, y1, init(y0), init(y1), s)
        });
        for jj in 0..RW {
            // the row streams are short, so the hardware prefetcher starts too late
            prefetch(w, ahead + jj * ws + b * 34);
            prefetch(w, ahead + jj * ws + b * 34 + 64);
            // SAFETY: jj < RW, b + 1 < nb: both blocks within w (asserted above).
            let (w0, w1) = unsafe {
                let p = wp.add(jj * ws + b * 34);
                (ld32p(p.add(2)), ld32p(p.add(36)))
            };
            let (w0, w1) = (_mm256_xor_si256(w0, sign), _mm256_xor_si256(w1, sign));
            for (acc, (y0, y1, i0, i1, s)) in acc.iter_mut().zip(&ys) {
                let p0 = _mm256_dpbusd_epi32(*i0, w0, *y0);
                let p1 = _mm256_dpbusd_epi32(*i1, w1, *y1);
                let a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(s[2 * jj]), acc[jj]);
                acc[jj] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(s[2 * jj + 1]), a);
            }
        }
        b += 2;
    }
    let mut out = [[0f32; RW]; NX];
    for (o, acc) in out.iter_mut().zip(&acc) {
        for (o, &a) in o.iter_mut().zip(acc) {
            *o = hsum(a);
        }
    }
    if b < nb {
        // the last block of an odd count
        for (i, out) in out.iter_mut().enumerate() {
            // SAFETY: i < NX, b < nb: the block within x (asserted above).
            let (y, dx) = unsafe {
                let xb = xp.add(i * xs + b * 34);
                (ld32p(xb.add(2)), f16p(xb))
            };
            let i0 = init(y);
            for (jj, o) in out.iter_mut().enumerate() {
                // SAFETY: jj < RW, b < nb: the block within w (asserted above).
                let (q, dw) = unsafe {
                    let p = wp.add(jj * ws + b * 34);
                    (ld32p(p.add(2)), f16p(p))
                };
                let p = _mm256_dpbusd_epi32(i0, _mm256_xor_si256(q, sign), y);
                *o += (dw * dx) * hsum(_mm256_cvtepi32_ps(p));
            }
        }
    }
    out
}

/// q8_0 decode (see [`q8_0_rows`]): the `TileFn` shape without `xs`/`nx`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_decode(cols: usize, w: &[u8], ws: usize, x: &[u8], out: &mut [f32]) {
    decode_rows!(q8_0_rows, cols, w, ws, x, out)
}

/// q4_0 decode of `RW` rows (see [`x_0_rows`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_rows<const RW: usize, const NX: usize>(
    cols: usize,
    w: &[u8],
    ws: usize,
    x: &[u8],
    xs: usize,
) -> [[f32; RW]; NX] {
    x_0_rows::<RW, NX, false>(cols, w, ws, x, xs)
}

/// q5_0 decode of `RW` rows (see [`x_0_rows`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0_rows<const RW: usize, const NX: usize>(
    cols: usize,
    w: &[u8],
    ws: usize,
    x: &[u8],
    xs: usize,
) -> [[f32; RW]; NX] {
    x_0_rows::<RW, NX, true>(cols, w, ws, x, xs)
}

/// q4_0 decode (see [`x_0_rows`]): the `TileFn` shape without `xs`/`nx`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_decode(cols: usize, w: &[u8], ws: usize, x: &[u8], out: &mut [f32]) {
    decode_rows!(q4_0_rows, cols, w, ws, x, out)
}

/// q5_0 decode (see [`x_0_rows`]): the `TileFn` shape without `xs`/`nx`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0_decode(cols: usize, w: &[u8], ws: usize, x: &[u8], out: &mut [f32]) {
    decode_rows!(q5_0_rows, cols, w, ws, x, out)
}

/// Several activation rows through a decode kernel `rows::<RW, NX>`, up to 4
/// at a time, with the output transposed (`out[j·nx + i]`, the tiles'
/// layout): each output bit-for-bit what the one-row decode gives. The weight
/// rows go in slices of [`MULTI_SLICE`] that stay in cache while every group
/// of activation rows uses them: a prompt chunk reads its weights once.
macro_rules! decode_multi {
    ($rows:ident, $cols:expr, $w:expr, $ws:expr, $x:expr, $xs:expr, $nx:expr, $out:expr) => {{
        let (cols, w, ws, x, xs, nx, out) = ($cols, $w, $ws, $x, $xs, $nx, $out);
        let m = w.len() / ws;
        assert!(out.len() >= m * nx && x.len() >= nx * xs);
        // one group of activation rows against weight rows j0..j1
        macro_rules! group {
            ($nxg:literal, $i0:expr, $j0:expr, $j1:expr) => {{
                let xg = &x[$i0 * xs..];
                let mut j = $j0;
                while j + 4 <= $j1 {
                    let r = $rows::<4, $nxg>(cols, &w[j * ws..], ws, xg, xs);
                    for (i, r) in r.iter().enumerate() {
                        for (jj, &v) in r.iter().enumerate() {
                            out[(j + jj) * nx + $i0 + i] = v;
                        }
                    }
                    j += 4;
                }
                while j < $j1 {
                    let r = $rows::<1, $nxg>(cols, &w[j * ws..], ws, xg, xs);
                    for (i, r) in r.iter().enumerate() {
                        out[j * nx + $i0 + i] = r[0];
                    }
                    j += 1;
                }
            }};
        }
        let slice = (MULTI_SLICE / ws).max(4) & !3;
        let mut j0 = 0;
        while j0 < m {
            let j1 = (j0 + slice).min(m);
            let mut i0 = 0;
            while i0 < nx {
                match nx - i0 {
                    1 => group!(1, i0, j0, j1),
                    2 => group!(2, i0, j0, j1),
                    3 => group!(3, i0, j0, j1),
                    _ => group!(4, i0, j0, j1),
                }
                i0 += 4;
            }
            j0 = j1;
        }
    }};
}

/// Weight bytes [`decode_multi!`] runs all activation rows over before moving
/// on: well inside L2 (and the prefetches of the next slice).
const MULTI_SLICE: usize = 64 * 1024;

/// [`super::MultiFn`] of the AVX-512 decode kernels, for the types that have one.
pub fn decode_multi_for(ty: crate::quant::GgmlType) -> Option<super::MultiFn> {
    use crate::quant::GgmlType;
    match ty {
        GgmlType::Q8_0 => Some(q8_0_multi),
        GgmlType::Q4_0 => Some(q4_0_multi),
        GgmlType::Q5_0 => Some(q5_0_multi),
        GgmlType::Q4K => Some(q4_k_multi),
        GgmlType::Q6K => Some(q6_k_multi),
        _ => None,
    }
}

macro_rules! multi_fn {
    ($name:ident, $rows:ident) => {
        /// [`super::MultiFn`]: see [`decode_multi_for`].
        fn $name(
            cols: usize,
            w: &[u8],
            ws: usize,
            x: &[u8],
            xs: usize,
            nx: usize,
            out: &mut [f32],
        ) {
            // SAFETY: reachable only through the AVX-512 table, which
            // `available()` hands out only after detecting its features.
            unsafe {
                #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
                fn inner(
                    cols: usize,
                    w: &[u8],
                    ws: usize,
                    x: &[u8],
                    xs: usize,
                    nx: usize,
                    out: &mut [f32],
                ) {
                    decode_multi!($rows, cols, w, ws, x, xs, nx, out)
                }
                inner(cols, w, ws, x, xs, nx, out)
            }
        }
    };
}
multi_fn!(q8_0_multi, q8_0_rows);
multi_fn!(q4_0_multi, q4_0_rows);
multi_fn!(q5_0_multi, q5_0_rows);
multi_fn!(q4_k_multi, q4_k_rows);
multi_fn!(q6_k_multi, q6_k_rows);

/// The 6-bit scales and mins of a q4_k super-block from its 12 bytes at `p`
/// (ggml's packing), as bytes: scales 0..8, then mins 0..8.
///
/// # Safety
/// `p..p + 16` readable (the last 4 bytes are loaded but unused).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl")]
unsafe fn q4k_scales_simd(p: *const u8) -> __m128i {
    // u32 lanes u0 u1 u2: scales 0..4 = u0 & 63, mins 0..4 = u1 & 63; scales
    // 4..8 = (u2 & 15) | (u0 >> 6) << 4, mins 4..8 = (u2 >> 4) | (u1 >> 6) << 4
    // SAFETY: caller.
    let v = unsafe { ld16p(p) };
    let a = _mm_shuffle_epi32::<0x98>(v); // u0 u2 u1 u2
    let b = _mm_shuffle_epi32::<0x50>(v); // u0 u0 u1 u1
    let lo = _mm_and_si128(
        _mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
        _mm_setr_epi32(0x3F3F_3F3F, 0x0F0F_0F0F, 0x3F3F_3F3F, 0x0F0F_0F0F),
    );
    let m = _mm_setr_epi32(0, 0x3030_3030, 0, 0x3030_3030);
    // lo | ((b >> 2) & m): bits 6..8 of u0/u1 to bits 4..6
    _mm_ternarylogic_epi32::<0xEA>(_mm_srli_epi32::<2>(b), m, lo)
}

/// q4_k × q8_K decode of `RW` weight rows against `NX` activation rows (`xs`
/// bytes apart): the scales and mins unpacked with SIMD,
/// each spread to 16 i16 lanes by one byte shuffle, the sub-block products
/// (`vpmaddubsw`) weighted by them with VNNI's `vpdpwssd`. Each weight block
/// is unpacked once for all activation rows; as in [`x_0_rows`], a row's
/// result does not depend on `NX` or on the other rows.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_k_rows<const RW: usize, const NX: usize>(
    cols: usize,
    w: &[u8],
    ws: usize,
    x: &[u8],
    xs: usize,
) -> [[f32; RW]; NX] {
    let nb = cols / 256;
    // the bounds of every load below, checked once
    assert!(w.len() >= (RW - 1) * ws + nb * 144 && x.len() >= (NX - 1) * xs + nb * 292);
    let ahead = tile_ahead(RW, ws);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let m4 = _mm256_set1_epi8(0x0F);
    // byte j of the scales (j < 8) or mins (8 + j) zero-extended into 16 i16 lanes;
    // for the mins each one twice (it weighs two 16-value bsums)
    let spread: [__m256i; 8] =
        core::array::from_fn(|j| _mm256_set1_epi16(j as i16 | 0x8000u16 as i16));
    let mins = _mm256_setr_epi16(
        0x8008u16 as i16,
        0x8008u16 as i16,
        0x8009u16 as i16,
        0x8009u16 as i16,
        0x800Au16 as i16,
        0x800Au16 as i16,
        0x800Bu16 as i16,
        0x800Bu16 as i16,
        0x800Cu16 as i16,
        0x800Cu16 as i16,
        0x800Du16 as i16,
        0x800Du16 as i16,
        0x800Eu16 as i16,
        0x800Eu16 as i16,
        0x800Fu16 as i16,
        0x800Fu16 as i16,
    );
    let mut acc = [[_mm256_setzero_ps(); RW]; NX];
    for b in 0..nb {
        // SAFETY: i < NX, b < nb: the super-block within x (asserted above).
        let xbs: [*const u8; NX] = core::array::from_fn(|i| unsafe { xp.add(i * xs + b * 292) });
        for jj in 0..RW {
            for l in 0..3 {
                // the row streams are short, so the hardware prefetcher starts too late
                prefetch(w, ahead + jj * ws + b * 144 + 64 * l);
            }
            // SAFETY: jj < RW, b < nb: the super-block within w (asserted above).
            let wb = unsafe { wp.add(jj * ws + b * 144) };
            // SAFETY: the 12 scale bytes at 4 and 4 more (the quants) within the block.
            let s = _mm256_broadcastsi128_si256(unsafe { q4k_scales_simd(wb.add(4)) });
            // the weights unpacked once for all activation rows: per group of
            // 64, the low and high nibbles and their scales spread
            let q: [(__m256i, __m256i); 4] = core::array::from_fn(|g| {
                // SAFETY: the quants within the block.
                let v = unsafe { ld32p(wb.add(16 + 32 * g)) };
                (
                    _mm256_and_si256(v, m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4),
                )
            });
            let sg: [__m256i; 8] = core::array::from_fn(|k| _mm256_shuffle_epi8(s, spread[k]));
            let smin = _mm256_shuffle_epi8(s, mins);
            // SAFETY: within the block.
            let dw = _mm_cvtph_ps(_mm_cvtsi32_si128(unsafe { u32p(wb) } as i32));
            for (acc, &xb) in acc.iter_mut().zip(&xbs) {
                // SAFETY: the activation super-block within x (asserted above).
                let (dx, bs) = unsafe { (f32::from_bits(u32p(xb)), ld32p(xb.add(260))) };
                let mut isum = _mm256_setzero_si256();
                for (g, &(lo, hi)) in q.iter().enumerate() {
                    // SAFETY: the activations within x.
                    let (y0, y1) =
                        unsafe { (ld32p(xb.add(4 + 64 * g)), ld32p(xb.add(36 + 64 * g))) };
                    isum = _mm256_dpwssd_epi32(isum, _mm256_maddubs_epi16(lo, y0), sg[2 * g]);
                    isum = _mm256_dpwssd_epi32(isum, _mm256_maddubs_epi16(hi, y1), sg[2 * g + 1]);
                }
                let msum = _mm256_madd_epi16(bs, smin);
                // d and dmin (f16 at 0 and 2) times the activation scale
                let dd = _mm_mul_ps(dw, _mm_set1_ps(dx));
                let a =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_broadcastss_ps(dd), acc[jj]);
                acc[jj] = _mm256_fnmadd_ps(
                    _mm256_cvtepi32_ps(msum),
                    _mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
                    a,
                );
            }
        }
    }
    let mut out = [[0f32; RW]; NX];
    for (o, acc) in out.iter_mut().zip(&acc) {
        for (o, &a) in o.iter_mut().zip(acc) {
            *o = hsum(a);
        }
    }
    out
}

/// q6_k × q8_K decode of `RW` weight rows against `NX` activation rows: the
/// i8 scales sign-extended once per
/// super-block and spread per 16 values by one byte shuffle, the products
/// (`vpmaddubsw`) weighted by them with VNNI's `vpdpwssd`; the offset 32
/// comes off as `32 · Σ scale · bsum`. Unpacked once for all activation
/// rows, each row's result independent of the others (as [`q4_k_rows`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q6_k_rows<const RW: usize, const NX: usize>(
    cols: usize,
    w: &[u8],
    ws: usize,
    x: &[u8],
    xs: usize,
) -> [[f32; RW]; NX] {
    let nb = cols / 256;
    // the bounds of every load below, checked once
    assert!(w.len() >= (RW - 1) * ws + nb * 210 && x.len() >= (NX - 1) * xs + nb * 292);
    let ahead = tile_ahead(RW, ws);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let (m4, m30) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    // the i16 scales 2k (low 128 bits) and 2k + 1 (high) of a half's 8 in both lanes
    let spread: [__m256i; 4] = core::array::from_fn(|k| {
        let (a, b) = (4 * k as i16, 4 * k as i16 + 2);
        _mm256_set_m128i(
            _mm_set1_epi16(b | (b + 1) << 8),
            _mm_set1_epi16(a | (a + 1) << 8),
        )
    });
    let mut acc = [[_mm256_setzero_ps(); RW]; NX];
    for b in 0..nb {
        // Per activation row: its super-block, scale and -Σ y per 16 values
        // (|bsum| ≤ 16 · 127: the negation fits).
        let xbs: [(*const u8, f32, __m256i); NX] = core::array::from_fn(|i| {
            // SAFETY: i < NX, b < nb: the super-block within x (asserted above).
            unsafe {
                let xb = xp.add(i * xs + b * 292);
                let nbs = _mm256_sub_epi16(_mm256_setzero_si256(), ld32p(xb.add(260)));
                (xb, f32::from_bits(u32p(xb)), nbs)
            }
        });
        for jj in 0..RW {
            for l in 0..4 {
                // the row streams are short, so the hardware prefetcher starts too late
                prefetch(w, ahead + jj * ws + b * 210 + 64 * l);
            }
            // SAFETY: jj < RW, b < nb: the super-block within w (asserted above).
            let wb = unsafe { wp.add(jj * ws + b * 210) };
            // SAFETY: the 16 scales at 192 within the block.
            let sc = _mm256_cvtepi8_epi16(unsafe { ld16p(wb.add(192)) });
            let sc32 = _mm256_slli_epi16::<5>(sc);
            // The weights unpacked once for all activation rows: per half, the
            // 4 groups of 32 (low nibbles of ql0, ql1, then their high nibbles,
            // each with 2 more bits of qh as bits 4..6) and their scales.
            let q: [([__m256i; 4], [__m256i; 4]); 2] = core::array::from_fn(|h| {
                // SAFETY: the quants of this half within the block.
                let (ql0, ql1, qh) = unsafe {
                    (
                        ld32p(wb.add(64 * h)),
                        ld32p(wb.add(64 * h + 32)),
                        ld32p(wb.add(128 + 32 * h)),
                    )
                };
                let q = [
                    _mm256_ternarylogic_epi32::<0xEA>(
                        ql0,
                        m4,
                        _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
                    ),
                    _mm256_ternarylogic_epi32::<0xEA>(
                        ql1,
                        m4,
                        _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                    ),
                    _mm256_ternarylogic_epi32::<0xEA>(
                        _mm256_srli_epi16::<4>(ql0),
                        m4,
                        _mm256_and_si256(qh, m30),
                    ),
                    _mm256_ternarylogic_epi32::<0xEA>(
                        _mm256_srli_epi16::<4>(ql1),
                        m4,
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                    ),
                ];
                // this half's 8 scales in both 128-bit lanes
                let s = if h == 0 {
                    _mm256_permute2x128_si256::<0x00>(sc, sc)
                } else {
                    _mm256_permute2x128_si256::<0x11>(sc, sc)
                };
                (
                    q,
                    core::array::from_fn(|k| _mm256_shuffle_epi8(s, spread[k])),
                )
            });
            // SAFETY: the f16 scale at 208 within the block.
            let d = unsafe { f16p(wb.add(208)) };
            for (acc, &(xb, dx, nbs)) in acc.iter_mut().zip(&xbs) {
                // the offset: -32 · Σ scale · bsum
                let mut isum = _mm256_madd_epi16(nbs, sc32);
                for (h, (qs, ss)) in q.iter().enumerate() {
                    for (k, (&qk, &sk)) in qs.iter().zip(ss).enumerate() {
                        // SAFETY: the activations of this group within x.
                        let y = unsafe { ld32p(xb.add(4 + 128 * h + 32 * k)) };
                        isum = _mm256_dpwssd_epi32(isum, _mm256_maddubs_epi16(qk, y), sk);
                    }
                }
                acc[jj] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d * dx), acc[jj]);
            }
        }
    }
    let mut out = [[0f32; RW]; NX];
    for (o, acc) in out.iter_mut().zip(&acc) {
        for (o, &a) in o.iter_mut().zip(acc) {
            *o = hsum(a);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The kernels, instantiated once per feature set.

macro_rules! x86_kernels {
    ($module:ident, $features:literal, $dot_u8i8:ident, $dot_i8i8:ident, $rwp:literal, $wide:literal) => {
        /// The kernels compiled for one feature set (see the file header).
        pub mod $module {
            use super::*;

            /// Runs a micro-kernel over a whole tile: 4 weight rows at a time
            /// for decode, `$rwp × 4` tiles for several activation rows.
            macro_rules! drive {
                ($micro:ident, $cols:expr, $w:expr, $ws:expr, $x:expr, $xs:expr, $nx:expr, $out:expr) => {{
                    let (cols, w, ws, x, xs, nx, out) = ($cols, $w, $ws, $x, $xs, $nx, $out);
                    let m = w.len() / ws;
                    let mut j = 0;
                    if nx == 1 {
                        while j + 4 <= m {
                            $micro::<4, 1>(cols, &w[j * ws..], ws, x, xs, &mut out[j..], 1);
                            j += 4;
                        }
                        while j < m {
                            $micro::<1, 1>(cols, &w[j * ws..], ws, x, xs, &mut out[j..], 1);
                            j += 1;
                        }
                    } else {
                        while j < m {
                            let full = j + $rwp <= m;
                            let mut i = 0;
                            while i < nx {
                                let rx = if i + 4 <= nx { 4 } else { 1 };
                                let o = &mut out[j * nx + i..];
                                let xi = &x[i * xs..];
                                let wj = &w[j * ws..];
                                match (full, rx) {
                                    (true, 4) => $micro::<$rwp, 4>(cols, wj, ws, xi, xs, o, nx),
                                    (true, _) => $micro::<$rwp, 1>(cols, wj, ws, xi, xs, o, nx),
                                    (false, 4) => $micro::<1, 4>(cols, wj, ws, xi, xs, o, nx),
                                    _ => $micro::<1, 1>(cols, wj, ws, xi, xs, o, nx),
                                }
                                i += rx;
                            }
                            j += if full { $rwp } else { 1 };
                        }
                    }
                }};
            }

            /// Defines the table's `TileFn` `$tile` (bounds check, then the
            /// feature-enabled `$imp` running `drive!` with micro-kernel `$micro`)
            /// for activations of `$xbytes` bytes per `$xblk` values.
            macro_rules! tile_fn {
                ($tile:ident, $imp:ident, $micro:ident, $xblk:expr, $xbytes:expr) => {
                    #[target_feature(enable = $features)]
                    fn $imp(
                        cols: usize,
                        w: &[u8],
                        ws: usize,
                        x: &[u8],
                        xs: usize,
                        nx: usize,
                        out: &mut [f32],
                    ) {
                        drive!($micro, cols, w, ws, x, xs, nx, out)
                    }

                    /// [`crate::kernels::TileFn`] for this format.
                    pub fn $tile(
                        cols: usize,
                        w: &[u8],
                        ws: usize,
                        x: &[u8],
                        xs: usize,
                        nx: usize,
                        out: &mut [f32],
                    ) {
                        assert!(out.len() >= (w.len() / ws) * nx && x.len() >= (nx - 1) * xs + $xbytes * (cols / $xblk));
                        // SAFETY: reachable only through this module's table, which
                        // `available()` hands out only after detecting its features.
                        unsafe { $imp(cols, w, ws, x, xs, nx, out) }
                    }
                };
            }

            /// Defines a tile function and its micro-kernel for a format with
            /// blocks of 32 (`$wb` weight bytes, `$xb` activation bytes, the
            /// activation quants at `$xq`). `$unpack(p)` gives the quants of the
            /// weight block at `p`, `$dot(acc, q, y)` the 8-lane product; `$offset`
            /// (if nonzero) is subtracted from every quant via `offset · Σy`
            /// (the dot's starting value); `$min` adds `m_w · s_x` per block.
            macro_rules! block32 {
                ($tile:ident, $micro:ident, $wb:expr, $xb:expr, $xq:expr,
                 |$blk:ident| $unpack:expr, $dot:ident, $offset:expr, $min:expr) => {
                    #[target_feature(enable = $features)]
                    fn $micro<const RW: usize, const RX: usize>(
                        cols: usize,
                        w: &[u8],
                        ws: usize,
                        x: &[u8],
                        xs: usize,
                        out: &mut [f32],
                        nx: usize,
                    ) {
                        let nb = cols / 32;
                        // the bounds of every load below, checked once
                        assert!(w.len() >= (RW - 1) * ws + nb * $wb && x.len() >= (RX - 1) * xs + nb * $xb);
                        let (wp, xp) = (w.as_ptr(), x.as_ptr());
                        let mut acc = [[_mm256_setzero_ps(); RX]; RW];
                        let mut macc = [[0f32; RX]; RW];
                        for b in 0..nb {
                            let mut y = [_mm256_setzero_si256(); RX];
                            let mut dx = [_mm256_setzero_ps(); RX];
                            let mut sx = [0f32; RX];
                            let mut init = [_mm256_setzero_si256(); RX];
                            for i in 0..RX {
                                // SAFETY: i < RX, b < nb: within x (asserted above).
                                let xb = unsafe { xp.add(i * xs + b * $xb) };
                                // SAFETY: the block's bytes, within x.
                                unsafe {
                                    y[i] = ld32p(xb.add($xq));
                                    dx[i] = f16x8p(xb);
                                    if $min {
                                        sx[i] = f16p(xb.add(2));
                                    }
                                }
                                if $offset != 0 {
                                    let corr = $dot(_mm256_setzero_si256(), _mm256_set1_epi8($offset), y[i]);
                                    init[i] = _mm256_sub_epi32(_mm256_setzero_si256(), corr);
                                }
                            }
                            for jj in 0..RW {
                                // the row streams are short, so the hardware prefetcher
                                // starts too late
                                prefetch(w, tile_ahead(RW, ws) + jj * ws + b * $wb);
                                // SAFETY: jj < RW, b < nb: the block is within w (asserted above).
                                let $blk = unsafe { wp.add(jj * ws + b * $wb) };
                                // SAFETY: `$unpack` and the scales read within the block.
                                let (q, dw, mw) = unsafe {
                                    ($unpack, f16x8p($blk), if $min { f16p($blk.add(2)) } else { 0.0 })
                                };
                                for i in 0..RX {
                                    let p = $dot(init[i], q, y[i]);
                                    let s = _mm256_mul_ps(dw, dx[i]);
                                    acc[jj][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[jj][i]);
                                    if $min {
                                        macc[jj][i] += mw * sx[i];
                                    }
                                }
                            }
                        }
                        for jj in 0..RW {
                            for i in 0..RX {
                                out[jj * nx + i] = hsum(acc[jj][i]) + macc[jj][i];
                            }
                        }
                    }

                    tile_fn!($tile, tile_impl, $micro, 32, $xb);
                };
            }

            /// Defines the table's `TileFn` `tile`: with AVX-512 and one
            /// activation row, the decode kernel `$decode`, else `tile32`.
            macro_rules! wide_tile {
                ($decode:ident) => {
                    /// [`crate::kernels::TileFn`]: AVX-512 decode has its own kernel.
                    pub fn tile(cols: usize, w: &[u8], ws: usize, x: &[u8], xs: usize, nx: usize, out: &mut [f32]) {
                        if $wide && nx == 1 {
                            // SAFETY: `$wide` only in the AVX-512 instantiation, whose table
                            // `available()` hands out only after detecting its features.
                            unsafe { $decode(cols, w, ws, x, out) }
                        } else {
                            tile32(cols, w, ws, x, xs, nx, out)
                        }
                    }
                };
            }

            mod q4_0 {
                use super::*;
                block32!(tile32, micro, 18, 34, 2, |blk| nibbles_p(blk.add(2)), $dot_u8i8, 8, false);
                wide_tile!(q4_0_decode);
            }
            pub use q4_0::tile as tile_q4_0;

            mod q4_1 {
                use super::*;
                block32!(tile, micro, 20, 36, 4, |blk| nibbles_p(blk.add(4)), $dot_u8i8, 0, true);
            }
            pub use q4_1::tile as tile_q4_1;

            mod q5_0 {
                use super::*;
                block32!(tile32, micro, 22, 34, 2, |blk| q5_p(blk.add(2)), $dot_u8i8, 16, false);
                wide_tile!(q5_0_decode);
            }
            pub use q5_0::tile as tile_q5_0;

            mod q5_1 {
                use super::*;
                block32!(tile, micro, 24, 36, 4, |blk| q5_p(blk.add(4)), $dot_u8i8, 0, true);
            }
            pub use q5_1::tile as tile_q5_1;

            mod q8_0 {
                use super::*;
                block32!(tile32, micro, 34, 34, 2, |blk| ld32p(blk.add(2)), $dot_i8i8, 0, false);
                wide_tile!(q8_0_decode);
            }
            pub use q8_0::tile as tile_q8_0;

            // ---- k-quants ------------------------------------------------

            /// In a k-quant micro-kernel with one activation row: with AVX-512,
            /// runs the decode kernel `$rows` instead and returns.
            macro_rules! wide_decode {
                ($rows:ident, $cols:expr, $w:expr, $ws:expr, $x:expr, $out:expr, $nx:expr) => {
                    if $wide && RX == 1 {
                        // SAFETY: `$wide` only in the AVX-512 instantiation (see `wide_tile!`).
                        #[allow(unused_unsafe)] // needed in the AVX2 instantiation only
                        let r = unsafe { $rows::<RW, 1>($cols, $w, $ws, $x, 0) };
                        for (jj, r) in r[0].into_iter().enumerate() {
                            $out[jj * $nx] = r;
                        }
                        return;
                    }
                };
            }

            /// q4_k × q8_K micro-kernel: per super-block, the 8 sub-block
            /// products weighted by their 6-bit scales in i32 lanes
            /// (`vpmaddubsw` then `vpmaddwd` by the scale), and the mins
            /// against the activation's 16-value sums (`bsums`).
            #[target_feature(enable = $features)]
            fn micro_q4_k<const RW: usize, const RX: usize>(
                cols: usize,
                w: &[u8],
                ws: usize,
                x: &[u8],
                xs: usize,
                out: &mut [f32],
                nx: usize,
            ) {
                wide_decode!(q4_k_rows, cols, w, ws, x, out, nx);
                let mut acc = [[_mm256_setzero_ps(); RX]; RW];
                let m4 = _mm256_set1_epi8(0x0F);
                for b in 0..cols / 256 {
                    let mut dx = [0f32; RX];
                    let mut bs = [_mm256_setzero_si256(); RX];
                    for i in 0..RX {
                        let xb = &x[i * xs + b * 292..];
                        dx[i] = f32_at(xb);
                        bs[i] = ld32(&xb[260..]);
                    }
                    for jj in 0..RW {
                        for l in 0..3 {
                            prefetch(w, PREFETCH_AHEAD + jj * ws + b * 144 + 64 * l);
                        }
                        let wb = &w[jj * ws + b * 144..jj * ws + b * 144 + 144];
                        let d = f16_at(wb);
                        let dmin = f16_at(&wb[2..]);
                        let (sc, mn) = q4k_scales(&wb[4..16]);
                        // mins as 16 i16 lanes, each min twice (one per 16-value bsum)
                        let m8 = _mm_set_epi16(
                            mn[7] as i16, mn[6] as i16, mn[5] as i16, mn[4] as i16,
                            mn[3] as i16, mn[2] as i16, mn[1] as i16, mn[0] as i16,
                        );
                        let mins16 = _mm256_set_m128i(
                            _mm_unpackhi_epi16(m8, m8),
                            _mm_unpacklo_epi16(m8, m8),
                        );
                        let mut isum = [_mm256_setzero_si256(); RX];
                        for g in 0..4 {
                            let v = ld32(&wb[16 + 32 * g..]);
                            let lo = _mm256_and_si256(v, m4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                            let s_lo = _mm256_set1_epi16(sc[2 * g] as i16);
                            let s_hi = _mm256_set1_epi16(sc[2 * g + 1] as i16);
                            for i in 0..RX {
                                let q8 = &x[i * xs + b * 292 + 4 + 64 * g..];
                                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ld32(q8)), s_lo);
                                let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, ld32(&q8[32..])), s_hi);
                                isum[i] = _mm256_add_epi32(isum[i], _mm256_add_epi32(p_lo, p_hi));
                            }
                        }
                        for i in 0..RX {
                            let msum = _mm256_madd_epi16(bs[i], mins16);
                            let a = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(isum[i]),
                                _mm256_set1_ps(d * dx[i]),
                                acc[jj][i],
                            );
                            acc[jj][i] = _mm256_fnmadd_ps(
                                _mm256_cvtepi32_ps(msum),
                                _mm256_set1_ps(dmin * dx[i]),
                                a,
                            );
                        }
                    }
                }
                for jj in 0..RW {
                    for i in 0..RX {
                        out[jj * nx + i] = hsum(acc[jj][i]);
                    }
                }
            }

            /// q6_k × q8_K micro-kernel: 6-bit quants (0..63) against the
            /// activations, weighted per 16 values by the i8 scales; the
            /// offset 32 comes off as `32 · Σ scale · bsum`.
            #[target_feature(enable = $features)]
            fn micro_q6_k<const RW: usize, const RX: usize>(
                cols: usize,
                w: &[u8],
                ws: usize,
                x: &[u8],
                xs: usize,
                out: &mut [f32],
                nx: usize,
            ) {
                wide_decode!(q6_k_rows, cols, w, ws, x, out, nx);
                let mut acc = [[_mm256_setzero_ps(); RX]; RW];
                let m4 = _mm256_set1_epi8(0x0F);
                let m2 = _mm256_set1_epi8(0x03);
                let m2b = _mm256_set1_epi8(0x0C);
                let m2c = _mm256_set1_epi8(0x30);
                let m2d = _mm256_set1_epi8(0xC0u8 as i8);
                for b in 0..cols / 256 {
                    let mut dx = [0f32; RX];
                    let mut bs = [_mm256_setzero_si256(); RX];
                    for i in 0..RX {
                        let xb = &x[i * xs + b * 292..];
                        dx[i] = f32_at(xb);
                        bs[i] = ld32(&xb[260..]);
                    }
                    for jj in 0..RW {
                        for l in 0..4 {
                            prefetch(w, PREFETCH_AHEAD + jj * ws + b * 210 + 64 * l);
                        }
                        let wb = &w[jj * ws + b * 210..jj * ws + b * 210 + 210];
                        let d = f16_at(&wb[208..]);
                        let scb = &wb[192..208];
                        let sc16 = _mm256_cvtepi8_epi16(ld16(scb));
                        let mut isum = [_mm256_setzero_si256(); RX];
                        for i in 0..RX {
                            let off = _mm256_madd_epi16(bs[i], sc16);
                            isum[i] = _mm256_sub_epi32(isum[i], _mm256_slli_epi32(off, 5));
                        }
                        for h in 0..2 {
                            let ql0 = ld32(&wb[64 * h..]);
                            let ql1 = ld32(&wb[64 * h + 32..]);
                            let qh = ld32(&wb[128 + 32 * h..]);
                            let q = [
                                _mm256_or_si256(
                                    _mm256_and_si256(ql0, m4),
                                    _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                                ),
                                _mm256_or_si256(
                                    _mm256_and_si256(ql1, m4),
                                    _mm256_slli_epi16(_mm256_and_si256(qh, m2b), 2),
                                ),
                                _mm256_or_si256(
                                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                    _mm256_and_si256(qh, m2c),
                                ),
                                _mm256_or_si256(
                                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                    _mm256_srli_epi16(_mm256_and_si256(qh, m2d), 2),
                                ),
                            ];
                            for (k, &qk) in q.iter().enumerate() {
                                let s = 8 * h + 2 * k;
                                let scl = _mm256_set_m128i(
                                    _mm_set1_epi16(scb[s + 1] as i8 as i16),
                                    _mm_set1_epi16(scb[s] as i8 as i16),
                                );
                                for i in 0..RX {
                                    let q8 = ld32(&x[i * xs + b * 292 + 4 + 128 * h + 32 * k..]);
                                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qk, q8), scl);
                                    isum[i] = _mm256_add_epi32(isum[i], p);
                                }
                            }
                        }
                        for i in 0..RX {
                            acc[jj][i] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(isum[i]),
                                _mm256_set1_ps(d * dx[i]),
                                acc[jj][i],
                            );
                        }
                    }
                }
                for jj in 0..RW {
                    for i in 0..RX {
                        out[jj * nx + i] = hsum(acc[jj][i]);
                    }
                }
            }

            tile_fn!(tile_q4_k, tile_q4_k_impl, micro_q4_k, 256, 292);
            tile_fn!(tile_q6_k, tile_q6_k_impl, micro_q6_k, 256, 292);

            // ---- float weights ------------------------------------------

            /// Float micro-kernel: `$load(bytes, c)` gives 8 f32 values at column c.
            macro_rules! float_micro {
                ($micro:ident, $esz:expr, $one:expr, |$s:ident| $load:expr) => {
                    #[target_feature(enable = $features)]
                    fn $micro<const RW: usize, const RX: usize>(
                        cols: usize,
                        w: &[u8],
                        ws: usize,
                        x: &[u8],
                        xs: usize,
                        out: &mut [f32],
                        nx: usize,
                    ) {
                        let mut acc = [[_mm256_setzero_ps(); RX]; RW];
                        let mut c = 0;
                        while c + 8 <= cols {
                            let mut xv = [_mm256_setzero_ps(); RX];
                            for i in 0..RX {
                                let $s = &x[i * xs + c * $esz..];
                                xv[i] = $load;
                            }
                            for jj in 0..RW {
                                let $s = &w[jj * ws + c * $esz..];
                                let wv = $load;
                                for i in 0..RX {
                                    acc[jj][i] = _mm256_fmadd_ps(wv, xv[i], acc[jj][i]);
                                }
                            }
                            c += 8;
                        }
                        for jj in 0..RW {
                            for i in 0..RX {
                                let mut s = hsum(acc[jj][i]);
                                for cc in c..cols {
                                    s += $one(&w[jj * ws + cc * $esz..]) * $one(&x[i * xs + cc * $esz..]);
                                }
                                out[jj * nx + i] = s;
                            }
                        }
                    }
                };
            }

            float_micro!(micro_f32, 4, f32_at, |s| {
                assert!(s.len() >= 32);
                // SAFETY: 32 readable bytes (checked above); unaligned load.
                unsafe { _mm256_loadu_ps(s.as_ptr().cast()) }
            });
            float_micro!(micro_f16, 2, |b: &[u8]| crate::quant::f16::to_f32(u16::from_le_bytes([b[0], b[1]])), |s| _mm256_cvtph_ps(ld16(s)));
            float_micro!(micro_bf16, 2, |b: &[u8]| crate::quant::bf16::to_f32(u16::from_le_bytes([b[0], b[1]])), |s| _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(ld16(s)),
                16
            )));

            tile_fn!(tile_f32, tile_f32_impl, micro_f32, 1, 4);
            tile_fn!(tile_f16, tile_f16_impl, micro_f16, 1, 2);
            tile_fn!(tile_bf16, tile_bf16_impl, micro_bf16, 1, 2);

            #[target_feature(enable = $features)]
            fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len().min(b.len());
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                while i + 32 <= n {
                    for (k, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: i + 8k + 8 <= n, within both slices.
                        let (x, y) = unsafe {
                            (
                                _mm256_loadu_ps(a.as_ptr().add(i + 8 * k)),
                                _mm256_loadu_ps(b.as_ptr().add(i + 8 * k)),
                            )
                        };
                        *acc = _mm256_fmadd_ps(x, y, *acc);
                    }
                    i += 32;
                }
                let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                let mut s = hsum(v);
                while i < n {
                    s += a[i] * b[i];
                    i += 1;
                }
                s
            }

            /// `Σ a[i]·b[i]`.
            pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
                // SAFETY: reachable only through this module's table, which
                // `available()` hands out only after detecting its features.
                unsafe { dot_f32_impl(a, b) }
            }
        }
    };
}

x86_kernels!(
    avx2,
    "avx2,fma,f16c",
    dot_u8i8_avx2,
    dot_i8i8_avx2,
    2,
    false
);
x86_kernels!(
    avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot_u8i8_vnni,
    dot_i8i8_vnni,
    4,
    true
);
