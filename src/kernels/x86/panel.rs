//! AVX-512 VNNI prefill products for the block-32 weight types (q4_0, q4_1,
//! q5_0, q5_1, q8_0) against q8_0/q8_1 activations: the weights are
//! interleaved 8 rows at a time into a small per-thread buffer (a *panel*) and
//! the output is written row-major (no transpose afterwards).
//!
//! Why: the tiles of `x86.rs` reduce each (weight row, activation row, block)
//! product in a vector of its own, so every such triple pays a dot, a convert,
//! a scale multiply and an FMA, and the multiply-add units are the bottleneck.
//! Interleaved, lane r of group vector g holds weight row r's quants
//! 4g..4g+4, so `vpdpbusd` against the activation's 4 bytes broadcast
//! accumulates 8 rows' block products at once, and the convert, scale and FMA
//! are shared by the 8 rows. A panel is repacked once per call and reused by
//! every activation row (llama.cpp gets the same effect by repacking Q4_0 at
//! load, which keeps a second copy of the weights; this costs ≤ 64 KiB per
//! thread).
//!
//! Arithmetic per block, as ggml's: unsigned quants u = q + offset (q4_0: 8,
//! q5_0: 16, q8_0: 128, its signed quants flipped), `Σ u·y − offset·Σy` in i32
//! (exact), times `d_w·d_x` in f32, plus `m_w·s_x` for q4_1/q5_1. Only the
//! float summation order differs from the scalar path.

use super::{ld32p, nibbles_p, q5_p};
use crate::kernels::{PanelFn, PanelJob};
use crate::quant::GgmlType;
use core::arch::x86_64::*;
use std::cell::RefCell;

// The weight formats, as the kernels' const parameter.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;

/// Bytes of one weight block.
const fn wb(k: u8) -> usize {
    match k {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        _ => 34,
    }
}

/// What is added to a quant to make it unsigned.
const fn offset(k: u8) -> i32 {
    match k {
        Q4_0 => 8,
        Q5_0 => 16,
        Q8_0 => 128,
        _ => 0,
    }
}

/// Formats with a per-block minimum (q8_1 activations: `d`, `s`, quants).
const fn has_min(k: u8) -> bool {
    k == Q4_1 || k == Q5_1
}

/// Bytes of one activation block, and where its quants start.
const fn xb(k: u8) -> (usize, usize) {
    if has_min(k) {
        (36, 4)
    } else {
        (34, 2)
    }
}

/// One interleaved block: 8 groups × 8 rows × 4 quants (256 bytes), the 8
/// rows' scales (f32), the 8 rows' minimums (f32).
const PB: usize = 320;

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
    let nb = job.cols / 32;
    let (xbytes, _) = xb(K);
    // the bounds of every load and store below, checked once
    assert!(job.cols.is_multiple_of(32) && r0 <= r1 && r1 <= job.rows && job.n > 0);
    assert!(job.ws >= nb * wb(K) && job.w.len() >= job.rows * job.ws);
    assert!(job.xs >= nb * xbytes && job.x.len() >= (job.n - 1) * job.xs + nb * xbytes);
    assert!(job.xd.len() >= job.n * nb);
    assert!(
        if has_min(K) {
            job.xm.len()
        } else {
            job.xsum.len()
        } >= job.n * nb
    );
    let lines = nb * PB / 64;
    if buf.len() < lines {
        buf.resize(lines, Line([0; 64]));
    }
    let pan = buf.as_mut_ptr().cast::<u8>();
    let mut r = r0;
    while r < r1 {
        let m = (r1 - r).min(8);
        // SAFETY: this module is reachable only through the AVX512 table,
        // handed out after its features were detected; rows r..r+m and all
        // blocks are within `w` (asserted above); `pan` holds nb·PB bytes.
        unsafe { repack::<K>(job, r, m, nb, pan) };
        let mut i = 0;
        while i < job.n {
            let left = job.n - i;
            // SAFETY: as above; activation rows i..i+RX' < n (asserted bounds
            // cover every block of every row); `job.out` checks the stores.
            unsafe {
                if left >= RX {
                    tile::<K, RX>(job, pan, nb, i, r, m);
                    i += RX;
                } else if left >= 4 {
                    tile::<K, 4>(job, pan, nb, i, r, m);
                    i += 4;
                } else {
                    tile::<K, 1>(job, pan, nb, i, r, m);
                    i += 1;
                }
            }
        }
        r += 8;
    }
}

/// The 32 unsigned quants of the weight block at `p`, in element order.
///
/// # Safety
/// `p..p + wb(K)` readable; AVX2 available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack<const K: u8>(p: *const u8) -> __m256i {
    // SAFETY: caller; each reads within the block (see the formats in crate::quant).
    unsafe {
        match K {
            Q4_0 => nibbles_p(p.add(2)),
            Q4_1 => nibbles_p(p.add(4)),
            Q5_0 => q5_p(p.add(2)),
            Q5_1 => q5_p(p.add(4)),
            _ => _mm256_xor_si256(ld32p(p.add(2)), _mm256_set1_epi8(0x80u8 as i8)),
        }
    }
}

/// Interleaves weight rows `r..r + m` (m ≤ 8; missing rows are zero) into `pan`.
///
/// # Safety
/// The rows' blocks are within `job.w`; `pan` holds `nb · PB` bytes, 64-byte
/// aligned; the CPU has the features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn repack<const K: u8>(job: &PanelJob, r: usize, m: usize, nb: usize, pan: *mut u8) {
    let w = job.w.as_ptr();
    for b in 0..nb {
        let mut v = [_mm256_setzero_si256(); 8];
        let mut d = [0u16; 8];
        let mut mn = [0u16; 8];
        for j in 0..m {
            // SAFETY: caller (row r + j, block b within w).
            unsafe {
                let p = w.add((r + j) * job.ws + b * wb(K));
                v[j] = unpack::<K>(p);
                d[j] = p.cast::<u16>().read_unaligned();
                if has_min(K) {
                    mn[j] = p.add(2).cast::<u16>().read_unaligned();
                }
            }
        }
        // 8 × 8 transpose of 32-bit lanes: row j's group g → group g's lane j
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
        // SAFETY: caller (pan holds block b's PB bytes, aligned to 32).
        unsafe {
            let o = pan.add(b * PB);
            for g in 0..4 {
                let lo = _mm256_permute2x128_si256::<0x20>(u[g], u[g + 4]);
                let hi = _mm256_permute2x128_si256::<0x31>(u[g], u[g + 4]);
                _mm256_store_si256(o.add(32 * g).cast(), lo);
                _mm256_store_si256(o.add(32 * (g + 4)).cast(), hi);
            }
            _mm256_store_ps(
                o.add(256).cast(),
                _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().cast())),
            );
            if has_min(K) {
                _mm256_store_ps(
                    o.add(288).cast(),
                    _mm256_cvtph_ps(_mm_loadu_si128(mn.as_ptr().cast())),
                );
            }
        }
    }
}

/// Output rows `r..r + m` (one panel) for activation rows `i0..i0 + N`.
///
/// # Safety
/// `pan` holds the panel (`repack`), activation rows `i0..i0 + N` exist with
/// all their blocks (bounds asserted by `run_with`); the CPU has the features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const K: u8, const N: usize>(
    job: &PanelJob,
    pan: *const u8,
    nb: usize,
    i0: usize,
    r: usize,
    m: usize,
) {
    let (xbytes, xq) = xb(K);
    let x = job.x.as_ptr();
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        // SAFETY: block b of the panel (caller).
        let blk = unsafe { pan.add(b * PB) };
        // SAFETY: 32-byte aligned vectors within the panel block.
        let (wv, dw) = unsafe {
            (
                core::array::from_fn::<__m256i, 8, _>(|g| {
                    _mm256_load_si256(blk.add(32 * g).cast())
                }),
                _mm256_load_ps(blk.add(256).cast()),
            )
        };
        // Written out (not loops) so the sums and accumulators stay in
        // registers, and group-major so the N dependency chains interleave.
        let mut s = [_mm256_setzero_si256(); N];
        let mut xp = [x; N];
        unroll8!(i < N, {
            let a = (i0 + i) * nb + b;
            // SAFETY: activation row i0 + i, block b (caller); the aux arrays
            // hold n·nb values.
            unsafe {
                xp[i] = x.add((i0 + i) * job.xs + b * xbytes + xq);
                if offset(K) != 0 {
                    s[i] = _mm256_set1_epi32(-offset(K) * *job.xsum.get_unchecked(a));
                }
            }
        });
        unroll8!(g < 8, {
            unroll8!(i < N, {
                // SAFETY: 4 of the block's 32 quants (caller).
                let y4 = unsafe { xp[i].add(4 * g).cast::<i32>().read_unaligned() };
                s[i] = _mm256_dpbusd_epi32(s[i], wv[g], _mm256_set1_epi32(y4));
            });
        });
        unroll8!(i < N, {
            let a = (i0 + i) * nb + b;
            // SAFETY: as above.
            unsafe {
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(*job.xd.get_unchecked(a)));
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[i]), d, acc[i]);
                if has_min(K) {
                    let mw = _mm256_load_ps(blk.add(288).cast());
                    acc[i] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*job.xm.get_unchecked(a)), acc[i]);
                }
            }
        });
    }
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
