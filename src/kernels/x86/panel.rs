//! AVX-512 VNNI panel products (see [`crate::kernels::panel`]) for q4_0,
//! q4_1, q5_0, q5_1, q8_0, q4_k and q6_k weights: the weights are interleaved
//! 8 rows at a time into a small per-thread buffer (a *panel*) and the output
//! is written row-major (no transpose afterwards).
//!
//! Why: the tiles of `x86.rs` reduce each (weight row, activation row, block)
//! product in a vector of its own, so every such triple pays a dot, a convert,
//! a scale multiply and an FMA, and the multiply-add units are the bottleneck.
//! Interleaved, lane r of group vector g holds weight row r's quants
//! 4g..4g+4 of a unit, so `vpdpbusd` against the activation's 4 bytes
//! broadcast accumulates 8 rows' products at once, and the convert, scale and
//! FMA are shared by the 8 rows. A panel is repacked once per call and reused
//! by every activation row (llama.cpp gets the same effect by repacking Q4_0
//! at load, which keeps a second copy of the weights; this costs ≤ 64 KiB per
//! thread for the models here).
//!
//! Arithmetic per unit (32 values; q6_k: 16, one scale each): unsigned quants
//! `u = q + offset`, `Σ u·y − offset·Σy` in i32 (exact), times `scale_w · d_x`
//! in f32 (`scale_w` = d, or d·sc for the k-quants: exact in f32), plus
//! `min_w · xm` (q4_1/q5_1: `m·s`; q4_k: `−dmin·mn · d_x·Σy`). ggml scales
//! a k-quant super-block's integer sum once; here each unit is scaled in f32,
//! so besides the summation order there is one rounding per unit more.

use super::{ld32p, nibbles_p, q5_p};
use crate::kernels::{PanelFn, PanelJob};
use crate::quant::{q4_k, GgmlType};
use core::arch::x86_64::*;
use std::cell::RefCell;

// The weight formats, as the kernels' const parameter.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;
const Q4K: u8 = 5;
const Q6K: u8 = 6;

/// Bytes of one weight block (a super-block for the k-quants).
const fn wb(k: u8) -> usize {
    match k {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        Q8_0 => 34,
        Q4K => 144,
        _ => 210,
    }
}

/// Units per weight block.
const fn units_per_block(k: u8) -> usize {
    match k {
        Q4K => 8,
        Q6K => 16,
        _ => 1,
    }
}

/// Groups of 4 values per unit.
const fn groups(k: u8) -> usize {
    if k == Q6K {
        4
    } else {
        8
    }
}

/// Formats with a per-unit minimum.
const fn has_min(k: u8) -> bool {
    matches!(k, Q4_1 | Q5_1 | Q4K)
}

/// Bytes of one interleaved unit in the panel: the groups (8 rows × 4
/// quants each), the 8 rows' scales (f32), the 8 rows' minimums (f32).
const fn ub(k: u8) -> usize {
    groups(k) * 32 + 32 + if has_min(k) { 32 } else { 0 }
}

/// Whether the format is a k-quant: per-unit integer scales (stored as i32
/// in the unit's scale slot; q4_k's minimums as f32 in its minimum slot)
/// and a super-block trailer with the rows' `d` (and q4_k's `dmin`) as f32.
const fn is_k(k: u8) -> bool {
    k == Q4K || k == Q6K
}

/// Bytes of one block in the panel: its units, then (k-quants) the trailer.
const fn pb(k: u8) -> usize {
    units_per_block(k) * ub(k)
        + match k {
            Q4K => 64,
            Q6K => 32,
            _ => 0,
        }
}

/// Where the quants of unit `u` start in an activation row (q8_0: blocks of
/// 34 bytes, q8_1: 36, q8_K: 292 per 256 values).
const fn x_unit(k: u8, u: usize) -> usize {
    match k {
        Q4_1 | Q5_1 => u * 36 + 4,
        Q4K => u / 8 * 292 + 4 + u % 8 * 32,
        Q6K => u / 16 * 292 + 4 + u % 16 * 16,
        _ => u * 34 + 2,
    }
}

/// Activation rows per micro-tile: 8 accumulators + 8 i32 sums + the 8 group
/// vectors fit AVX-512's 32 registers.
const RX: usize = 8;

/// `$body` for `$i` = 0, 1, … 7 while `$i < $n` (a constant), written out.
macro_rules! unroll8 {
    ($i:ident < $n:expr, $body:block) => {
        unroll8!(@ $i, $n, $body, 0 1 2 3 4 5 6 7)
    };
    (@ $i:ident, $n:expr, $body:block, $($k:literal)*) => {
        $({
            let $i: usize = $k;
            if $i < $n $body
        })*
    };
}

/// The panel product for weights of type `ty`, if there is one.
pub fn for_type(ty: GgmlType) -> Option<PanelFn> {
    Some(match ty {
        GgmlType::Q4_0 => run::<Q4_0>,
        GgmlType::Q4_1 => run::<Q4_1>,
        GgmlType::Q5_0 => run::<Q5_0>,
        GgmlType::Q5_1 => run::<Q5_1>,
        GgmlType::Q8_0 => run::<Q8_0>,
        GgmlType::Q4K => run::<Q4K>,
        GgmlType::Q6K => run::<Q6K>,
        _ => return None,
    })
}

/// A cache line, so the panel's vectors are aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

thread_local! {
    /// The panel buffer of this thread, grown once.
    static PANEL: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Output rows `r0..r1` of the job, every activation row.
fn run<const K: u8>(job: &PanelJob, r0: usize, r1: usize) {
    PANEL.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => run_with::<K>(job, r0, r1, &mut buf),
        // Only if a task ran inside another on this thread (tasks do not
        // nest today); a fresh buffer keeps that correct.
        Err(_) => run_with::<K>(job, r0, r1, &mut Vec::new()),
    })
}

fn run_with<const K: u8>(job: &PanelJob, r0: usize, r1: usize, buf: &mut Vec<Line>) {
    let block_len = 4 * groups(K) * units_per_block(K);
    assert!(job.cols.is_multiple_of(block_len) && r0 <= r1 && r1 <= job.rows && job.n > 0);
    let nb = job.cols / block_len;
    let units = nb * units_per_block(K);
    // the bounds of every load and store below, checked once
    assert!(job.ws >= nb * wb(K) && job.w.len() >= job.rows * job.ws);
    let last = x_unit(K, units - 1) + 4 * groups(K);
    assert!(job.xs >= last && job.x.len() >= (job.n - 1) * job.xs + last);
    assert!(job.xd.len() >= job.n * units && job.xinit.len() >= job.n * units);
    assert!(job.xm.len() >= job.n * units);
    let lines = (nb * pb(K)).div_ceil(64);
    if buf.len() < lines {
        buf.resize(lines, Line([0; 64]));
    }
    let pan = buf.as_mut_ptr().cast::<u8>();
    let mut r = r0;
    while r < r1 {
        let m = (r1 - r).min(8);
        // SAFETY: this module is reachable only through the AVX512 table,
        // handed out after its features were detected; rows r..r+m and all
        // blocks are within `w` (asserted above); `pan` holds nb·pb bytes.
        unsafe { repack::<K>(job, r, m, nb, pan) };
        let mut i = 0;
        while i < job.n {
            let left = job.n - i;
            // SAFETY: as above; activation rows i.. < n (the asserted bounds
            // cover every unit of every row); `job.out` checks the stores.
            unsafe {
                if is_k(K) {
                    // 4 rows: the super-block sums need more registers
                    if left >= 4 {
                        tile_k::<K, 4>(job, pan, nb, i, r, m);
                        i += 4;
                    } else {
                        tile_k::<K, 1>(job, pan, nb, i, r, m);
                        i += 1;
                    }
                } else if left >= RX {
                    tile::<K, RX>(job, pan, units, i, r, m);
                    i += RX;
                } else if left >= 4 {
                    tile::<K, 4>(job, pan, units, i, r, m);
                    i += 4;
                } else {
                    tile::<K, 1>(job, pan, units, i, r, m);
                    i += 1;
                }
            }
        }
        r += 8;
    }
}

/// 8 × 8 transpose of 32-bit lanes: row j's lane g → vector g's lane j.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(v: &[__m256i; 8]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
    let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
    let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
    let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
    let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
    let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
    let u = [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
        _mm256_unpacklo_epi64(t4, t6),
        _mm256_unpackhi_epi64(t4, t6),
        _mm256_unpacklo_epi64(t5, t7),
        _mm256_unpackhi_epi64(t5, t7),
    ];
    let mut out = [_mm256_setzero_si256(); 8];
    for g in 0..4 {
        out[g] = _mm256_permute2x128_si256::<0x20>(u[g], u[g + 4]);
        out[g + 4] = _mm256_permute2x128_si256::<0x31>(u[g], u[g + 4]);
    }
    out
}

/// Stores one interleaved unit: `g.len()` group vectors, then the scales
/// (f32, or i32 for the k-quants) and (formats with one) the minimums.
///
/// # Safety
/// `o..o + ub(K)` writable and 32-byte aligned.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_unit<const K: u8>(o: *mut u8, g: &[__m256i], scale: __m256i, min: &[f32; 8]) {
    // SAFETY: caller.
    unsafe {
        for (k, v) in g.iter().enumerate() {
            _mm256_store_si256(o.add(32 * k).cast(), *v);
        }
        let s = o.add(32 * g.len());
        _mm256_store_si256(s.cast(), scale);
        if has_min(K) {
            _mm256_store_ps(s.add(32).cast(), _mm256_loadu_ps(min.as_ptr()));
        }
    }
}

/// The f16 at `p`, as f32.
///
/// # Safety
/// `p..p + 2` readable.
#[inline]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: caller.
    crate::quant::f16::to_f32(unsafe { p.cast::<u16>().read_unaligned() })
}

/// Interleaves weight rows `r..r + m` (m ≤ 8; missing rows are zero) into `pan`.
///
/// # Safety
/// The rows' blocks are within `job.w`; `pan` holds `units · ub(K)` bytes,
/// 64-byte aligned; the CPU has the features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn repack<const K: u8>(job: &PanelJob, r: usize, m: usize, nb: usize, pan: *mut u8) {
    let w = job.w.as_ptr();
    let m4 = _mm256_set1_epi8(0x0F);
    for b in 0..nb {
        // SAFETY (whole block): caller — row r + j's block b is within w, the
        // units written are within pan.
        let row = |j: usize| unsafe { w.add((r + j) * job.ws + b * wb(K)) };
        let out = |unit: usize| unsafe { pan.add(b * pb(K) + unit * ub(K)) };
        // the k-quants' trailer: the rows' d (and dmin)
        let trailer = |d: &[f32; 8], dmin: &[f32; 8]| unsafe {
            let t = pan.add(b * pb(K) + units_per_block(K) * ub(K));
            _mm256_store_ps(t.cast(), _mm256_loadu_ps(d.as_ptr()));
            if K == Q4K {
                _mm256_store_ps(t.add(32).cast(), _mm256_loadu_ps(dmin.as_ptr()));
            }
        };
        // SAFETY (both): an unaligned 32-byte load of an 8-element array.
        let f32s = |v: &[f32; 8]| unsafe { _mm256_castps_si256(_mm256_loadu_ps(v.as_ptr())) };
        let i32s = |v: &[i32; 8]| unsafe { _mm256_loadu_si256(v.as_ptr().cast()) };
        let mut v = [_mm256_setzero_si256(); 8];
        let mut scale = [0f32; 8];
        let mut min = [0f32; 8];
        match K {
            Q4K => {
                // unit s: the low (even s) or high nibbles of bytes 16 + 32·(s/2)
                let mut sc = [[0u8; 8]; 8];
                let mut mn = [[0u8; 8]; 8];
                let mut d = [0f32; 8];
                let mut dmin = [0f32; 8];
                for j in 0..m {
                    let p = row(j);
                    // SAFETY: the block's 144 bytes (caller).
                    let s12 = unsafe { core::slice::from_raw_parts(p.add(4), 12) };
                    for s in 0..8 {
                        (sc[j][s], mn[j][s]) = q4_k::scale_min(s, s12);
                    }
                    // SAFETY: as above.
                    (d[j], dmin[j]) = unsafe { (f16_at(p), f16_at(p.add(2))) };
                }
                for s in 0..8 {
                    let mut isc = [0i32; 8];
                    for j in 0..m {
                        // SAFETY: as above.
                        let q = unsafe { ld32p(row(j).add(16 + 32 * (s / 2))) };
                        let q = if s % 2 == 0 {
                            q
                        } else {
                            _mm256_srli_epi16::<4>(q)
                        };
                        v[j] = _mm256_and_si256(q, m4);
                        isc[j] = sc[j][s] as i32;
                        min[j] = mn[j][s] as f32;
                    }
                    // SAFETY: unit s of this block.
                    unsafe { store_unit::<K>(out(s), &transpose8(&v), i32s(&isc), &min) };
                }
                trailer(&d, &dmin);
            }
            Q6K => {
                // the 32 values 128h + 32k + (0..32), as unsigned 6-bit quants,
                // hold units c = 8h + 2k (low 16 bytes) and c + 1 (high 16)
                for h in 0..2 {
                    for k in 0..4 {
                        let c = 8 * h + 2 * k;
                        let (mut sc1, mut sc2) = ([0i32; 8], [0i32; 8]);
                        for j in 0..m {
                            let p = row(j);
                            // SAFETY: the block's 210 bytes (caller).
                            let (ql, qh, sc) = unsafe {
                                scale[j] = f16_at(p.add(208));
                                (
                                    ld32p(p.add(64 * h + 32 * (k % 2))),
                                    ld32p(p.add(128 + 32 * h)),
                                    [*p.add(192 + c) as i8, *p.add(193 + c) as i8],
                                )
                            };
                            let lo = if k < 2 {
                                ql
                            } else {
                                _mm256_srli_epi16::<4>(ql)
                            };
                            // qh bits 2k, 2k+1 → bits 4, 5 (the mask drops what
                            // the 16-bit shifts carry over from the other byte)
                            let hi = match k {
                                0 => _mm256_slli_epi16::<4>(qh),
                                1 => _mm256_slli_epi16::<2>(qh),
                                2 => qh,
                                _ => _mm256_srli_epi16::<2>(qh),
                            };
                            v[j] = _mm256_or_si256(
                                _mm256_and_si256(lo, m4),
                                _mm256_and_si256(hi, _mm256_set1_epi8(0x30)),
                            );
                            (sc1[j], sc2[j]) = (sc[0] as i32, sc[1] as i32);
                        }
                        let t = transpose8(&v);
                        // SAFETY: units c and c + 1 of this block.
                        unsafe {
                            store_unit::<K>(out(c), &t[..4], i32s(&sc1), &min);
                            store_unit::<K>(out(c + 1), &t[4..], i32s(&sc2), &min);
                        }
                    }
                }
                trailer(&scale, &min);
            }
            _ => {
                for j in 0..m {
                    let p = row(j);
                    // SAFETY: the block's bytes (caller); each reads within it
                    // (see the formats in crate::quant).
                    unsafe {
                        v[j] = match K {
                            Q4_0 => nibbles_p(p.add(2)),
                            Q4_1 => nibbles_p(p.add(4)),
                            Q5_0 => q5_p(p.add(2)),
                            Q5_1 => q5_p(p.add(4)),
                            _ => _mm256_xor_si256(ld32p(p.add(2)), _mm256_set1_epi8(0x80u8 as i8)),
                        };
                        scale[j] = f16_at(p);
                        if has_min(K) {
                            min[j] = f16_at(p.add(2));
                        }
                    }
                }
                // SAFETY: the block's one unit.
                unsafe { store_unit::<K>(out(0), &transpose8(&v), f32s(&scale), &min) };
            }
        }
    }
}

/// The integer sums of activation rows `i0..i0 + N` against the panel unit
/// at `blk` (global unit `u` of `units` per row): `xinit + Σ u·y` per lane
/// (weight row). Written out (not loops) so the sums stay in registers, and
/// group-major so the N dependency chains interleave.
///
/// # Safety
/// `blk` is a stored unit; activation rows `i0..i0 + N` and their unit `u`
/// exist (bounds asserted by `run_with`); the CPU has the features.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unit_dots<const K: u8, const N: usize>(
    job: &PanelJob,
    blk: *const u8,
    u: usize,
    units: usize,
    i0: usize,
) -> [__m256i; N] {
    let x = job.x.as_ptr();
    let mut wv = [_mm256_setzero_si256(); 8];
    unroll8!(g < groups(K), {
        // SAFETY: 32-byte aligned vectors within the panel unit (caller).
        wv[g] = unsafe { _mm256_load_si256(blk.add(32 * g).cast()) };
    });
    let mut s = [_mm256_setzero_si256(); N];
    let mut xp = [x; N];
    unroll8!(i < N, {
        // SAFETY: activation row i0 + i, unit u (caller); the figures hold
        // n·units values.
        unsafe {
            xp[i] = x.add((i0 + i) * job.xs + x_unit(K, u));
            s[i] = _mm256_set1_epi32(*job.xinit.get_unchecked((i0 + i) * units + u));
        }
    });
    unroll8!(g < groups(K), {
        unroll8!(i < N, {
            // SAFETY: 4 of the unit's quants (caller).
            let y4 = unsafe { xp[i].add(4 * g).cast::<i32>().read_unaligned() };
            s[i] = _mm256_dpbusd_epi32(s[i], wv[g], _mm256_set1_epi32(y4));
        });
    });
    s
}

/// Stores `acc[i]` as `y[i0 + i][r..r + m]`.
///
/// # Safety
/// The CPU has the features (`job.out` checks the bounds; tasks own
/// disjoint rows).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store_rows<const N: usize>(
    job: &PanelJob,
    acc: &[__m256; N],
    i0: usize,
    r: usize,
    m: usize,
) {
    for (i, &v) in acc.iter().enumerate() {
        let p = job.out(i0 + i, r, m);
        // SAFETY: `out` checked y[i0 + i][r..r + m]; tasks own disjoint rows.
        unsafe {
            if m == 8 {
                _mm256_storeu_ps(p, v)
            } else {
                _mm256_mask_storeu_ps(p, ((1u32 << m) - 1) as u8, v)
            }
        }
    }
}

/// [`tile`] for the k-quants: per super-block, the units' integer sums
/// weighted by their integer scales in i32 (exact, as ggml), q4_k's minimum
/// term `Σ mn·Σy` in f32 (exact: integers below 2²⁴), then one scaling by
/// `d·d_x` (and `dmin·d_x`) per super-block.
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_k<const K: u8, const N: usize>(
    job: &PanelJob,
    pan: *const u8,
    nb: usize,
    i0: usize,
    r: usize,
    m: usize,
) {
    let upb = units_per_block(K);
    let units = nb * upb;
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let mut isum = [_mm256_setzero_si256(); N];
        let mut fmin = [_mm256_setzero_ps(); N];
        for su in 0..upb {
            let u = b * upb + su;
            // SAFETY: unit su of block b in the panel (caller).
            let blk = unsafe { pan.add(b * pb(K) + su * ub(K)) };
            // SAFETY: as above; activation rows i0.. and unit u exist (caller).
            let (s, sc) = unsafe {
                (
                    unit_dots::<K, N>(job, blk, u, units, i0),
                    _mm256_load_si256(blk.add(32 * groups(K)).cast()),
                )
            };
            unroll8!(i < N, {
                isum[i] = _mm256_add_epi32(isum[i], _mm256_mullo_epi32(s[i], sc));
                if K == Q4K {
                    // SAFETY: as above.
                    unsafe {
                        let mn = _mm256_load_ps(blk.add(32 * groups(K) + 32).cast());
                        let sy = *job.xm.get_unchecked((i0 + i) * units + u);
                        fmin[i] = _mm256_fmadd_ps(mn, _mm256_set1_ps(sy), fmin[i]);
                    }
                }
            });
        }
        // SAFETY: block b's trailer (caller).
        let (d, dmin) = unsafe {
            let t = pan.add(b * pb(K) + upb * ub(K));
            let dmin = if K == Q4K {
                _mm256_load_ps(t.add(32).cast())
            } else {
                _mm256_setzero_ps()
            };
            (_mm256_load_ps(t.cast()), dmin)
        };
        unroll8!(i < N, {
            // SAFETY: the figures hold n·units values; every unit of a
            // super-block has its d.
            let dx = _mm256_set1_ps(unsafe { *job.xd.get_unchecked((i0 + i) * units + b * upb) });
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i]), _mm256_mul_ps(d, dx), acc[i]);
            if K == Q4K {
                acc[i] = _mm256_fnmadd_ps(fmin[i], _mm256_mul_ps(dmin, dx), acc[i]);
            }
        });
    }
    // SAFETY: the caller's bounds.
    unsafe { store_rows(job, &acc, i0, r, m) }
}

/// Output rows `r..r + m` (one panel) for activation rows `i0..i0 + N`.
///
/// # Safety
/// `pan` holds the panel (`repack`), activation rows `i0..i0 + N` exist with
/// all their units (bounds asserted by `run_with`); the CPU has the features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const K: u8, const N: usize>(
    job: &PanelJob,
    pan: *const u8,
    units: usize,
    i0: usize,
    r: usize,
    m: usize,
) {
    let mut acc = [_mm256_setzero_ps(); N];
    for u in 0..units {
        // SAFETY: unit u of the panel (caller).
        let blk = unsafe { pan.add(u * ub(K)) };
        // SAFETY: as above; activation rows i0.. and unit u exist (caller).
        let (s, dw) = unsafe {
            (
                unit_dots::<K, N>(job, blk, u, units, i0),
                _mm256_load_ps(blk.add(32 * groups(K)).cast()),
            )
        };
        unroll8!(i < N, {
            let a = (i0 + i) * units + u;
            // SAFETY: as above.
            unsafe {
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(*job.xd.get_unchecked(a)));
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[i]), d, acc[i]);
                if has_min(K) {
                    let mw = _mm256_load_ps(blk.add(32 * groups(K) + 32).cast());
                    acc[i] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*job.xm.get_unchecked(a)), acc[i]);
                }
            }
        });
    }
    // SAFETY: the caller's bounds.
    unsafe { store_rows(job, &acc, i0, r, m) }
}
