//! aarch64 kernels: three tables, chosen at run time (see [`super::kernels`]).
//!
//! * [`NEON`] (`neon`): baseline ARMv8 Advanced SIMD, which every aarch64 CPU
//!   has (Raspberry Pi 4 / Cortex-A72). Integer block dot products with
//!   widening multiplies (`smull`, `smull2`) and pairwise add-accumulate
//!   (`sadalp`): each i8·i8 product is formed in i16 and widened to i32 before
//!   any further sum, so no value can overflow (even −128·−128).
//! * [`DOTPROD`] (`dotprod`): the same with `sdot` (FEAT_DotProd, Cortex-A55/
//!   A76 and later), issued through `asm!` because the intrinsic is unstable.
//! * [`I8MM`] (`i8mm`): the 32-value block types with `smmla` (FEAT_I8MM,
//!   Cortex-A510/A710/X2 and later): one instruction multiplies 8 values of
//!   2 weight rows by 8 values of 2 activation rows, so tiles of 2 weight rows
//!   × an even number of activation rows use it; single activation rows
//!   (decoding, n = 1) and odd leftovers use `sdot`. The k-quants use the
//!   `sdot` kernels in this table too.
//!
//! Every table covers every weight type (f32, f16, bf16, q8_0, q4_0, q4_1,
//! q5_0, q5_1, q4_k, q6_k) and `dot_f32`; the float types and `dot_f32` are
//! the same plain-NEON code in all three (f32 FMA; f16 widened with `fcvtl`,
//! bf16 with a 16-bit shift).
//!
//! Arithmetic: exact integer sums per block (per sub-block for the
//! k-quants, times the sub-block scale, in i32), then f32 scaling by the block
//! scales as ggml's `ggml_vec_dot_*_generic` does; the float sums are kept in
//! four f32 lanes and reduced at the end, so results differ from
//! [`super::generic`] only by f32 rounding order (the tests bound it by
//! 1e-5 · Σ|terms|). The float types accumulate in f32 with FMA where the
//! generic code sums f32 products in f64.
//!
//! Layout of the code: a [`Kern`] is one weight type's micro-kernel — `WR`
//! weight rows against `R` activation rows over a whole row — and [`drive`]
//! checks the slice bounds once and walks a tile with it (4 weight rows at a
//! time when there is one activation row, else 2 weight rows × 4 activation
//! rows, with smaller leftovers). The integer dot of 16 byte pairs is a [`Dot`]
//! (`smull`-based or `sdot`), so one source serves both tables.

use super::{Kernels, TileFn};
use crate::quant::q4_k::scale_min as q4k_scale_min;
use core::arch::aarch64::*;
use core::arch::asm;
use core::marker::PhantomData;

// ---------------------------------------------------------------------------
// The tables

macro_rules! table {
    ($name:ident, $label:literal, $supported:expr, $m:ident) => {
        #[doc = concat!("The `", $label, "` table (see the module documentation).")]
        pub static $name: Kernels = Kernels {
            name: $label,
            supported: $supported,
            f32: $m::f32,
            f16: $m::f16,
            bf16: $m::bf16,
            q8_0: $m::q8_0,
            q4_0: $m::q4_0,
            q4_1: $m::q4_1,
            q5_0: $m::q5_0,
            q5_1: $m::q5_1,
            q4_k: $m::q4_k,
            q6_k: $m::q6_k,
            dot_f32,
            panel: super::no_panel,
            decode_multi: super::no_multi,
            swiglu: super::swiglu::swiglu,
            exp: super::exp::exp,
            dot_f16: super::attn_f16::dot_f16,
            mad_f16: super::attn_f16::mad_f16,
            dot_q8_0: super::attn_q8::neon::dot_q8_0,
            mad_q8_0: super::attn_q8::neon::mad_q8_0,
        };
    };
}

table!(NEON, "neon", supports_neon, neon);
table!(DOTPROD, "dotprod", supports_dotprod, dotprod);
table!(I8MM, "i8mm", supports_i8mm, i8mm);

fn supports_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

fn supports_dotprod() -> bool {
    supports_neon() && std::arch::is_aarch64_feature_detected!("dotprod")
}

fn supports_i8mm() -> bool {
    supports_dotprod() && std::arch::is_aarch64_feature_detected!("i8mm")
}

/// Defines `pub fn $name: TileFn` running [`drive`] with kernel `$k`, compiled
/// with the target features `$feat` (which the table's `supported` checks).
macro_rules! tiles {
    ($feat:literal; $($name:ident => $k:ty),* $(,)?) => {$(
        pub fn $name(
            cols: usize,
            w: &[u8],
            w_stride: usize,
            x: &[u8],
            x_stride: usize,
            nx: usize,
            out: &mut [f32],
        ) {
            /// # Safety
            /// The CPU has the target features `$feat`.
            #[target_feature(enable = $feat)]
            unsafe fn imp(
                cols: usize,
                w: &[u8],
                w_stride: usize,
                x: &[u8],
                x_stride: usize,
                nx: usize,
                out: &mut [f32],
            ) {
                // SAFETY: the caller guarantees `$feat` (this fn's # Safety),
                // the only requirement of `drive` for `$k`.
                unsafe { drive::<$k>(cols, w, w_stride, x, x_stride, nx, out) }
            }
            // SAFETY: this function is only reachable through its table,
            // which `kernels()`/`available()` hand out only after the table's
            // `supported` detected `$feat` on this CPU (and `neon` is part of
            // every aarch64 target). `drive` checks all slice bounds.
            unsafe { imp(cols, w, w_stride, x, x_stride, nx, out) }
        }
        const _: TileFn = $name;
    )*};
}

mod neon {
    use super::*;
    tiles! {"neon";
        f32 => F32K, f16 => F16K, bf16 => Bf16K,
        q8_0 => Q32K<Q8_0W, Mull>, q4_0 => Q32K<Q4_0W, Mull>, q4_1 => Q32K<Q4_1W, Mull>,
        q5_0 => Q32K<Q5_0W, Mull>, q5_1 => Q32K<Q5_1W, Mull>,
        q4_k => Q4KK<Mull>, q6_k => Q6KK<Mull>,
    }
}

mod dotprod {
    pub use super::neon::{bf16, f16, f32};
    use super::*;
    tiles! {"neon,dotprod";
        q8_0 => Q32K<Q8_0W, Sdot>, q4_0 => Q32K<Q4_0W, Sdot>, q4_1 => Q32K<Q4_1W, Sdot>,
        q5_0 => Q32K<Q5_0W, Sdot>, q5_1 => Q32K<Q5_1W, Sdot>,
        q4_k => Q4KK<Sdot>, q6_k => Q6KK<Sdot>,
    }
}

mod i8mm {
    pub use super::dotprod::{q4_k, q6_k};
    pub use super::neon::{bf16, f16, f32};
    use super::*;
    tiles! {"neon,dotprod,i8mm";
        q8_0 => Mmla<Q8_0W>, q4_0 => Mmla<Q4_0W>, q4_1 => Mmla<Q4_1W>,
        q5_0 => Mmla<Q5_0W>, q5_1 => Mmla<Q5_1W>,
    }
}

// ---------------------------------------------------------------------------
// Small helpers

/// f16 at `p` (little-endian, unaligned) as f32, with `fcvt` (base ARMv8 FP).
///
/// # Safety
/// `p..p+2` must be readable.
#[inline(always)]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees `p..p+2` readable (this fn's # Safety);
    // unaligned read.
    let h = u16::from_le(unsafe { p.cast::<u16>().read_unaligned() });
    let out: f32;
    // SAFETY: a register-only conversion; FP/SIMD is part of every aarch64 target.
    unsafe {
        asm!("fcvt {o:s}, {h:h}", o = lateout(vreg) out, h = in(vreg) h,
             options(pure, nomem, nostack, preserves_flags));
    }
    out
}

/// f32 at `p` (little-endian, unaligned).
///
/// # Safety
/// `p..p+4` must be readable.
#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees `p..p+4` readable (this fn's # Safety);
    // unaligned read.
    unsafe { f32::from_bits(u32::from_le(p.cast::<u32>().read_unaligned())) }
}

/// 16 bytes at `p` as i8.
///
/// # Safety
/// `p..p+16` must be readable.
#[inline(always)]
unsafe fn ld_s8(p: *const u8) -> int8x16_t {
    // SAFETY: the caller guarantees `p..p+16` readable (this fn's # Safety);
    // `ld1` has no alignment requirement; NEON is baseline on aarch64.
    unsafe { vld1q_s8(p.cast()) }
}

/// 16 bytes at `p`.
///
/// # Safety
/// `p..p+16` must be readable.
#[inline(always)]
unsafe fn ld_u8(p: *const u8) -> uint8x16_t {
    // SAFETY: the caller guarantees `p..p+16` readable (this fn's # Safety);
    // `ld1` has no alignment requirement; NEON is baseline on aarch64.
    unsafe { vld1q_u8(p) }
}

/// 4 little-endian f32 at `p` (byte loads: no alignment).
///
/// # Safety
/// `p..p+16` must be readable.
#[inline(always)]
unsafe fn ld_f32(p: *const u8) -> float32x4_t {
    // SAFETY: the caller guarantees `p..p+16` readable (this fn's # Safety);
    // `ld1` has no alignment requirement; NEON is baseline on aarch64.
    unsafe { vreinterpretq_f32_u8(vld1q_u8(p)) }
}

/// 8 little-endian u16 at `p` (byte loads: no alignment).
///
/// # Safety
/// `p..p+16` must be readable.
#[inline(always)]
unsafe fn ld_u16(p: *const u8) -> uint16x8_t {
    // SAFETY: the caller guarantees `p..p+16` readable (this fn's # Safety);
    // `ld1` has no alignment requirement; NEON is baseline on aarch64.
    unsafe { vreinterpretq_u16_u8(vld1q_u8(p)) }
}

/// Eight f16 (as bits) to two f32x4 with `fcvtl`/`fcvtl2` (base ARMv8 SIMD;
/// the f16 vector intrinsics are unstable).
///
/// # Safety
/// None beyond NEON, which every aarch64 CPU has (`unsafe` only because the
/// callers' intrinsics need a NEON context).
#[inline(always)]
unsafe fn f16x8_to_f32(v: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let lo: float32x4_t;
    let hi: float32x4_t;
    // SAFETY: register-only conversions, available on every aarch64 CPU.
    unsafe {
        asm!("fcvtl {lo:v}.4s, {v:v}.4h", "fcvtl2 {hi:v}.4s, {v:v}.8h",
             lo = out(vreg) lo, hi = out(vreg) hi, v = in(vreg) v,
             options(pure, nomem, nostack, preserves_flags));
    }
    (lo, hi)
}

/// Eight bf16 (as bits) to two f32x4: bf16 is the top half of an f32.
///
/// # Safety
/// None beyond NEON, which every aarch64 CPU has (the NEON intrinsics are
/// only safe to call in a `neon` target-feature context).
#[inline(always)]
unsafe fn bf16x8_to_f32(v: uint16x8_t) -> (float32x4_t, float32x4_t) {
    // SAFETY: register-only NEON intrinsics; NEON is baseline on aarch64.
    unsafe {
        (
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(v))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(v)),
        )
    }
}

/// bf16 bits to f32.
#[inline(always)]
fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

// ---------------------------------------------------------------------------
// Integer dot products of 16 byte pairs

/// `acc` plus the products of 16 i8 pairs, spread over the four i32 lanes in
/// some way (callers only use lane sums, or scale all lanes alike).
trait Dot {
    /// # Safety
    /// The CPU has the instructions of the implementation: NEON for [`Mull`]
    /// (every aarch64 CPU), FEAT_DotProd for [`Sdot`].
    unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// Baseline NEON: `smull`/`smull2` into i16 (one product always fits), then
/// `sadalp` (pairwise add-accumulate long) into i32.
struct Mull;

impl Dot for Mull {
    #[inline(always)]
    unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: register-only NEON intrinsics; NEON is baseline on aarch64.
        unsafe {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            vpadalq_s16(vpadalq_s16(acc, lo), hi)
        }
    }
}

/// FEAT_DotProd `sdot`. Only used from functions compiled with `dotprod`.
struct Sdot;

impl Dot for Sdot {
    #[inline(always)]
    unsafe fn dot16(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: register-only; the caller runs only where dotprod was detected.
        unsafe {
            asm!("sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                 acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
                 options(pure, nomem, nostack, preserves_flags));
        }
        acc
    }
}

#[inline(always)]
#[allow(unused_unsafe)] // the intrinsics are safe fns on newer toolchains
fn s64(v: int8x16_t) -> int64x2_t {
    // SAFETY: a bit cast between vector types (NEON is baseline on aarch64).
    unsafe { vreinterpretq_s64_s8(v) }
}

#[inline(always)]
#[allow(unused_unsafe)]
fn s8(v: int64x2_t) -> int8x16_t {
    // SAFETY: a bit cast between vector types (NEON is baseline on aarch64).
    unsafe { vreinterpretq_s8_s64(v) }
}

/// FEAT_I8MM `smmla`: `acc + [a0·b0, a0·b1, a1·b0, a1·b1]` where `a0`/`a1`
/// (`b0`/`b1`) are the low/high 8 bytes of `a` (`b`). Only used from functions
/// compiled with `i8mm`.
///
/// # Safety
/// The CPU has FEAT_I8MM.
#[inline(always)]
unsafe fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: register-only; the caller runs only where i8mm was detected.
    unsafe {
        asm!("smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
             acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
             options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

// ---------------------------------------------------------------------------
// The tile driver

/// One weight type's micro-kernel.
trait Kern {
    /// Values per block (1 for the float types).
    const BL: usize;
    /// Weight bytes per block.
    const WB: usize;
    /// Activation bytes per block.
    const XB: usize;
    /// `out[a][k] = Σ W_a · X_k` over `nb` blocks of weight rows `w[a]` and
    /// activation rows `x[k]`.
    ///
    /// # Safety
    /// `w[a]..w[a] + nb·WB` and `x[k]..x[k] + nb·XB` readable; the CPU has the
    /// features of the calling table.
    unsafe fn tile<const WR: usize, const R: usize>(
        nb: usize,
        w: [*const u8; WR],
        x: [*const u8; R],
    ) -> [[f32; R]; WR];
}

/// Runs a [`TileFn`] with kernel `K` (see the module documentation of
/// [`super`] for the contract). Checks every bound the kernels rely on.
///
/// # Safety
/// The CPU has the features `K`'s instructions need.
#[inline(always)]
unsafe fn drive<K: Kern>(
    cols: usize,
    w: &[u8],
    w_stride: usize,
    x: &[u8],
    x_stride: usize,
    nx: usize,
    out: &mut [f32],
) {
    assert!(
        cols.is_multiple_of(K::BL),
        "{cols} columns: not whole blocks"
    );
    let nb = cols / K::BL;
    assert!(w_stride > 0 && w_stride >= nb * K::WB, "weight stride");
    let m = w.len() / w_stride;
    assert_eq!(out.len(), m * nx, "output length");
    if m == 0 || nx == 0 {
        return;
    }
    assert!(
        x.len() >= (nx - 1) * x_stride + nb * K::XB,
        "activation length"
    );
    // From here on every weight row j < m has its nb·WB bytes in `w`, every
    // activation row i < nx its nb·XB bytes in `x` (checked above).
    let wp = |j: usize| w[j * w_stride..].as_ptr();
    let mut j = 0;
    if nx == 1 {
        while j + 4 <= m {
            // SAFETY: rows j..j+4 < m and row 0 < nx are in bounds (see above).
            let r = unsafe {
                K::tile::<4, 1>(nb, [wp(j), wp(j + 1), wp(j + 2), wp(j + 3)], [x.as_ptr()])
            };
            for (a, v) in r.iter().enumerate() {
                out[j + a] = v[0];
            }
            j += 4;
        }
    } else {
        while j + 2 <= m {
            // SAFETY: rows j, j+1 < m are in bounds; `rows` keeps i < nx.
            unsafe { rows::<K, 2>(nb, [wp(j), wp(j + 1)], x, x_stride, nx, &mut out[j * nx..]) };
            j += 2;
        }
    }
    while j < m {
        // SAFETY: row j < m is in bounds; `rows` keeps i < nx.
        unsafe { rows::<K, 1>(nb, [wp(j)], x, x_stride, nx, &mut out[j * nx..]) };
        j += 1;
    }
}

/// `WR` weight rows against all `nx` activation rows: 4 at a time, then the
/// leftover 1–3. Writes `out[a·nx + i]`.
///
/// # Safety
/// As [`Kern::tile`] for the weight rows; `x` holds `nx` rows (checked by
/// [`drive`]).
#[inline(always)]
unsafe fn rows<K: Kern, const WR: usize>(
    nb: usize,
    w: [*const u8; WR],
    x: &[u8],
    x_stride: usize,
    nx: usize,
    out: &mut [f32],
) {
    /// # Safety
    /// As [`rows`], and activation rows `i..i + R` are below `nx`.
    #[inline(always)]
    unsafe fn go<K: Kern, const WR: usize, const R: usize>(
        nb: usize,
        w: [*const u8; WR],
        x: &[u8],
        x_stride: usize,
        i: usize,
        nx: usize,
        out: &mut [f32],
    ) {
        let xs: [*const u8; R] = core::array::from_fn(|k| x[(i + k) * x_stride..].as_ptr());
        // SAFETY: activation rows i..i+R < nx are in bounds (drive's check).
        let r = unsafe { K::tile::<WR, R>(nb, w, xs) };
        for (a, ra) in r.iter().enumerate() {
            out[a * nx + i..a * nx + i + R].copy_from_slice(ra);
        }
    }
    let mut i = 0;
    // SAFETY (all calls): i + R <= nx.
    unsafe {
        while i + 4 <= nx {
            go::<K, WR, 4>(nb, w, x, x_stride, i, nx, out);
            i += 4;
        }
        match nx - i {
            3 => go::<K, WR, 3>(nb, w, x, x_stride, i, nx, out),
            2 => go::<K, WR, 2>(nb, w, x, x_stride, i, nx, out),
            1 => go::<K, WR, 1>(nb, w, x, x_stride, i, nx, out),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// 32-value block types: q8_0, q4_0, q5_0 (with q8_0 activations) and q4_1,
// q5_1 (with q8_1 activations)

/// A 32-value weight block: its bytes, its decoder to 32 i8 (values 0..16 and
/// 16..32) and whether it has a minimum (`m` at byte 2, paired with q8_1's `s`).
/// The scale `d` is the f16 at byte 0 in all of them.
trait Q32 {
    const WB: usize;
    const MIN: bool;
    /// The block at `p` as 32 i8 values.
    ///
    /// # Safety
    /// `p..p + WB` readable (NEON is baseline on aarch64).
    unsafe fn decode(p: *const u8) -> (int8x16_t, int8x16_t);
}

/// Activation block bytes and quant offset for a weight type's q8 format.
const fn q8_layout(min: bool) -> (usize, usize) {
    if min {
        (36, 4) // q8_1: d, s, qs
    } else {
        (34, 2) // q8_0: d, qs
    }
}

struct Q8_0W;
struct Q4_0W;
struct Q4_1W;
struct Q5_0W;
struct Q5_1W;

impl Q32 for Q8_0W {
    const WB: usize = 34;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (int8x16_t, int8x16_t) {
        // SAFETY: the caller guarantees the block's WB = 34 bytes at `p`
        // readable (Q32::decode's # Safety); this reads `p+2..p+34`. NEON is
        // baseline on aarch64.
        unsafe { (ld_s8(p.add(2)), ld_s8(p.add(18))) }
    }
}

/// The 4-bit quants at `q`: low nibbles (values 0..16), high (16..32).
///
/// # Safety
/// `q..q+16` must be readable.
#[inline(always)]
unsafe fn nibbles(q: *const u8) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: the caller guarantees `q..q+16` readable (this fn's # Safety);
    // NEON is baseline on aarch64.
    unsafe {
        let v = ld_u8(q);
        (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
    }
}

/// q5's fifth bits from the 4 bytes of `qh` at `p`, as 0x10 in the byte of
/// each value whose bit is set (values 0..16, 16..32).
///
/// # Safety
/// `p..p+4` must be readable.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: the caller guarantees `p..p+4` readable (this fn's # Safety;
    // unaligned read); `BIT` is 16 bytes; NEON is baseline on aarch64.
    unsafe {
        const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
        let qh = p.cast::<[u8; 4]>().read_unaligned();
        let bit = vld1q_u8(BIT.as_ptr());
        let lo = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1]));
        let hi = vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3]));
        let h = vdupq_n_u8(0x10);
        (
            vandq_u8(vtstq_u8(lo, bit), h),
            vandq_u8(vtstq_u8(hi, bit), h),
        )
    }
}

impl Q32 for Q4_0W {
    const WB: usize = 18;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (int8x16_t, int8x16_t) {
        // SAFETY: the caller guarantees the block's WB = 18 bytes at `p`
        // readable (Q32::decode's # Safety); this reads `p+2..p+18`. NEON is
        // baseline on aarch64.
        unsafe {
            let (l, h) = nibbles(p.add(2));
            let off = vdupq_n_s8(8);
            (
                vsubq_s8(vreinterpretq_s8_u8(l), off),
                vsubq_s8(vreinterpretq_s8_u8(h), off),
            )
        }
    }
}

impl Q32 for Q4_1W {
    const WB: usize = 20;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (int8x16_t, int8x16_t) {
        // SAFETY: the caller guarantees the block's WB = 20 bytes at `p`
        // readable (Q32::decode's # Safety); this reads `p+4..p+20`. NEON is
        // baseline on aarch64.
        unsafe {
            let (l, h) = nibbles(p.add(4));
            (vreinterpretq_s8_u8(l), vreinterpretq_s8_u8(h))
        }
    }
}

impl Q32 for Q5_0W {
    const WB: usize = 22;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (int8x16_t, int8x16_t) {
        // SAFETY: the caller guarantees the block's WB = 22 bytes at `p`
        // readable (Q32::decode's # Safety); this reads `p+2..p+22`. NEON is
        // baseline on aarch64.
        unsafe {
            let (bl, bh) = fifth_bits(p.add(2));
            let (l, h) = nibbles(p.add(6));
            let off = vdupq_n_s8(16);
            (
                vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(l, bl)), off),
                vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(h, bh)), off),
            )
        }
    }
}

impl Q32 for Q5_1W {
    const WB: usize = 24;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (int8x16_t, int8x16_t) {
        // SAFETY: the caller guarantees the block's WB = 24 bytes at `p`
        // readable (Q32::decode's # Safety); this reads `p+4..p+24`. NEON is
        // baseline on aarch64.
        unsafe {
            let (bl, bh) = fifth_bits(p.add(4));
            let (l, h) = nibbles(p.add(8));
            (
                vreinterpretq_s8_u8(vorrq_u8(l, bl)),
                vreinterpretq_s8_u8(vorrq_u8(h, bh)),
            )
        }
    }
}

/// 32-value block types with [`Dot`] `D`: per block and row pair,
/// `sumi` in four i32 lanes, `acc += f32(sumi) · (dw·dx)` (+ `mw·sx`).
struct Q32K<Q, D>(PhantomData<(Q, D)>);

impl<Q: Q32, D: Dot> Kern for Q32K<Q, D> {
    const BL: usize = 32;
    const WB: usize = Q::WB;
    const XB: usize = q8_layout(Q::MIN).0;

    #[inline(always)]
    unsafe fn tile<const WR: usize, const R: usize>(
        nb: usize,
        w: [*const u8; WR],
        x: [*const u8; R],
    ) -> [[f32; R]; WR] {
        // SAFETY: the caller guarantees that every `w[a]` has its nb·WB bytes and
        // every `x[k]` its nb·XB bytes readable, and the CPU features of the
        // calling table (Kern::tile's # Safety); every pointer below stays in
        // those blocks. NEON is baseline; `D` needs only those features.
        unsafe {
            let xq = q8_layout(Q::MIN).1;
            let zero = vdupq_n_s32(0);
            let mut acc = [[vdupq_n_f32(0.0); R]; WR];
            let mut mins = [[0f32; R]; WR];
            for b in 0..nb {
                let mut wq = [(vdupq_n_s8(0), vdupq_n_s8(0)); WR];
                let mut dw = [0f32; WR];
                let mut mw = [0f32; WR];
                for a in 0..WR {
                    let p = w[a].add(b * Q::WB);
                    wq[a] = Q::decode(p);
                    dw[a] = f16_at(p);
                    if Q::MIN {
                        mw[a] = f16_at(p.add(2));
                    }
                }
                for k in 0..R {
                    let p = x[k].add(b * Self::XB);
                    let dx = f16_at(p);
                    let (x0, x1) = (ld_s8(p.add(xq)), ld_s8(p.add(xq + 16)));
                    for a in 0..WR {
                        let s = D::dot16(D::dot16(zero, wq[a].0, x0), wq[a].1, x1);
                        acc[a][k] = vfmaq_n_f32(acc[a][k], vcvtq_f32_s32(s), dw[a] * dx);
                    }
                    if Q::MIN {
                        let sx = f16_at(p.add(2));
                        for a in 0..WR {
                            mins[a][k] += mw[a] * sx;
                        }
                    }
                }
            }
            core::array::from_fn(|a| core::array::from_fn(|k| vaddvq_f32(acc[a][k]) + mins[a][k]))
        }
    }
}

/// 32-value block types with `smmla` for 2 weight rows × pairs of activation
/// rows; everything else (n = 1, a lone weight row, an odd number of
/// activation rows in the tile) goes to the `sdot` kernel.
struct Mmla<Q>(PhantomData<Q>);

impl<Q: Q32> Kern for Mmla<Q> {
    const BL: usize = 32;
    const WB: usize = Q::WB;
    const XB: usize = q8_layout(Q::MIN).0;

    #[inline(always)]
    unsafe fn tile<const WR: usize, const R: usize>(
        nb: usize,
        w: [*const u8; WR],
        x: [*const u8; R],
    ) -> [[f32; R]; WR] {
        // SAFETY: the caller guarantees that every `w[a]` has its nb·WB bytes and
        // every `x[k]` its nb·XB bytes readable, and the CPU features of the
        // calling table (Kern::tile's # Safety); every pointer below stays in
        // those blocks. The table using `Mmla` checked i8mm and dotprod
        // (`smmla`, and `sdot` via `Q32K<Q, Sdot>`).
        unsafe {
            if WR != 2 || !R.is_multiple_of(2) {
                return Q32K::<Q, Sdot>::tile::<WR, R>(nb, w, x);
            }
            // WR == 2 here; `WR - 1` keeps the indexing valid in every instance.
            let (w0, w1) = (w[0], w[WR - 1]);
            let xq = q8_layout(Q::MIN).1;
            let zero = vdupq_n_s32(0);
            // acc[q] lanes: [w0·x(2q), w0·x(2q+1), w1·x(2q), w1·x(2q+1)]
            let mut acc = [vdupq_n_f32(0.0); R];
            let mut macc = [vdupq_n_f32(0.0); R];
            for b in 0..nb {
                let (p0, p1) = (w0.add(b * Q::WB), w1.add(b * Q::WB));
                let (l0, h0) = Q::decode(p0);
                let (l1, h1) = Q::decode(p1);
                // 2×8 matrices: [w0 bytes 8c..8c+8, w1 bytes 8c..8c+8]
                let wm = [
                    s8(vzip1q_s64(s64(l0), s64(l1))),
                    s8(vzip2q_s64(s64(l0), s64(l1))),
                    s8(vzip1q_s64(s64(h0), s64(h1))),
                    s8(vzip2q_s64(s64(h0), s64(h1))),
                ];
                let dw = vcombine_f32(vdup_n_f32(f16_at(p0)), vdup_n_f32(f16_at(p1)));
                let mw = if Q::MIN {
                    vcombine_f32(vdup_n_f32(f16_at(p0.add(2))), vdup_n_f32(f16_at(p1.add(2))))
                } else {
                    vdupq_n_f32(0.0)
                };
                for q in 0..R / 2 {
                    let (pa, pb) = (x[2 * q].add(b * Self::XB), x[2 * q + 1].add(b * Self::XB));
                    let (a0, a1) = (ld_s8(pa.add(xq)), ld_s8(pa.add(xq + 16)));
                    let (b0, b1) = (ld_s8(pb.add(xq)), ld_s8(pb.add(xq + 16)));
                    let mut s = smmla(zero, wm[0], s8(vzip1q_s64(s64(a0), s64(b0))));
                    s = smmla(s, wm[1], s8(vzip2q_s64(s64(a0), s64(b0))));
                    s = smmla(s, wm[2], s8(vzip1q_s64(s64(a1), s64(b1))));
                    s = smmla(s, wm[3], s8(vzip2q_s64(s64(a1), s64(b1))));
                    let dx = vset_lane_f32::<1>(f16_at(pb), vdup_n_f32(f16_at(pa)));
                    acc[q] = vfmaq_f32(
                        acc[q],
                        vcvtq_f32_s32(s),
                        vmulq_f32(dw, vcombine_f32(dx, dx)),
                    );
                    if Q::MIN {
                        let sx =
                            vset_lane_f32::<1>(f16_at(pb.add(2)), vdup_n_f32(f16_at(pa.add(2))));
                        macc[q] = vfmaq_f32(macc[q], mw, vcombine_f32(sx, sx));
                    }
                }
            }
            let mut r = [[0f32; R]; WR];
            for q in 0..R / 2 {
                let v = vaddq_f32(acc[q], macc[q]);
                r[0][2 * q] = vgetq_lane_f32::<0>(v);
                r[0][2 * q + 1] = vgetq_lane_f32::<1>(v);
                r[WR - 1][2 * q] = vgetq_lane_f32::<2>(v);
                r[WR - 1][2 * q + 1] = vgetq_lane_f32::<3>(v);
            }
            r
        }
    }
}

// ---------------------------------------------------------------------------
// k-quants (q8_K activations: f32 d at 0, 256 quants at 4, 16 i16 bsums at 260)

const Q8K_QS: usize = 4;
const Q8K_BSUMS: usize = 260;

/// q4_k · q8_K: per super-block and row pair, `Σ_j sc[j]·(q4·q8 over
/// sub-block j)` in i32 lanes, `acc += f32(that)·(d·dx)`, and
/// `mins -= (dmin·dx)·Σ_j m[j]·(bsums[2j] + bsums[2j+1])`.
struct Q4KK<D>(PhantomData<D>);

impl<D: Dot> Kern for Q4KK<D> {
    const BL: usize = 256;
    const WB: usize = 144;
    const XB: usize = 292;

    #[inline(always)]
    unsafe fn tile<const WR: usize, const R: usize>(
        nb: usize,
        w: [*const u8; WR],
        x: [*const u8; R],
    ) -> [[f32; R]; WR] {
        // SAFETY: the caller guarantees that every `w[a]` has its nb·WB bytes and
        // every `x[k]` its nb·XB bytes readable, and the CPU features of the
        // calling table (Kern::tile's # Safety); every pointer below stays in
        // those blocks. NEON is baseline; `D` needs only those features.
        unsafe {
            let zero = vdupq_n_s32(0);
            let mut acc = [[vdupq_n_f32(0.0); R]; WR];
            let mut mins = [[0f32; R]; WR];
            for b in 0..nb {
                for a in 0..WR {
                    let p = w[a].add(b * Self::WB);
                    let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
                    let packed = p.add(4).cast::<[u8; 12]>().read_unaligned();
                    let mut sc = [0i32; 8];
                    let mut mn = [0i32; 8];
                    for j in 0..8 {
                        let (s, m) = q4k_scale_min(j, &packed);
                        (sc[j], mn[j]) = (s as i32, m as i32);
                    }
                    let mut isum = [zero; R];
                    for g in 0..4 {
                        let (l0, h0) = nibbles(p.add(16 + 32 * g));
                        let (l1, h1) = nibbles(p.add(16 + 32 * g + 16));
                        let (l0, l1) = (vreinterpretq_s8_u8(l0), vreinterpretq_s8_u8(l1));
                        let (h0, h1) = (vreinterpretq_s8_u8(h0), vreinterpretq_s8_u8(h1));
                        for k in 0..R {
                            let q = x[k].add(b * Self::XB + Q8K_QS + 64 * g);
                            let sl = D::dot16(D::dot16(zero, l0, ld_s8(q)), l1, ld_s8(q.add(16)));
                            let sh = D::dot16(
                                D::dot16(zero, h0, ld_s8(q.add(32))),
                                h1,
                                ld_s8(q.add(48)),
                            );
                            isum[k] =
                                vmlaq_n_s32(vmlaq_n_s32(isum[k], sl, sc[2 * g]), sh, sc[2 * g + 1]);
                        }
                    }
                    let m0 = vld1q_s32(mn.as_ptr());
                    let m1 = vld1q_s32(mn.as_ptr().add(4));
                    for k in 0..R {
                        let xp = x[k].add(b * Self::XB);
                        let dx = f32_at(xp);
                        acc[a][k] = vfmaq_n_f32(acc[a][k], vcvtq_f32_s32(isum[k]), d * dx);
                        // pairs of 16-value bsums are the 32-value sub-block sums
                        let bs0 = vpaddlq_s16(vreinterpretq_s16_u8(ld_u8(xp.add(Q8K_BSUMS))));
                        let bs1 = vpaddlq_s16(vreinterpretq_s16_u8(ld_u8(xp.add(Q8K_BSUMS + 16))));
                        let summ = vaddvq_s32(vmlaq_s32(vmulq_s32(bs0, m0), bs1, m1));
                        mins[a][k] -= (dmin * dx) * summ as f32;
                    }
                }
            }
            core::array::from_fn(|a| core::array::from_fn(|k| vaddvq_f32(acc[a][k]) + mins[a][k]))
        }
    }
}

/// q6_k · q8_K: per super-block and row pair, `Σ_j sc[j]·((q6−32)·q8 over
/// sub-block j)` in i32 lanes, `acc += f32(that)·(d·dx)`.
struct Q6KK<D>(PhantomData<D>);

impl<D: Dot> Kern for Q6KK<D> {
    const BL: usize = 256;
    const WB: usize = 210;
    const XB: usize = 292;

    #[inline(always)]
    unsafe fn tile<const WR: usize, const R: usize>(
        nb: usize,
        w: [*const u8; WR],
        x: [*const u8; R],
    ) -> [[f32; R]; WR] {
        // SAFETY: the caller guarantees that every `w[a]` has its nb·WB bytes and
        // every `x[k]` its nb·XB bytes readable, and the CPU features of the
        // calling table (Kern::tile's # Safety); every pointer below stays in
        // those blocks. NEON is baseline; `D` needs only those features.
        unsafe {
            let zero = vdupq_n_s32(0);
            let mut acc = [[vdupq_n_f32(0.0); R]; WR];
            for b in 0..nb {
                for a in 0..WR {
                    let p = w[a].add(b * Self::WB);
                    let d = f16_at(p.add(208));
                    let sc = p.add(192).cast::<[i8; 16]>().read_unaligned();
                    let mut isum = [zero; R];
                    for h in 0..2 {
                        let (ql, qh) = (p.add(64 * h), p.add(128 + 32 * h));
                        let ql: [uint8x16_t; 4] = core::array::from_fn(|i| ld_u8(ql.add(16 * i)));
                        let (qh0, qh1) = (ld_u8(qh), ld_u8(qh.add(16)));
                        let (m4, m30) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x30));
                        let hb = |v: uint8x16_t| vandq_u8(v, m30);
                        // value t covers positions 128h + 16t .. +16 = sub-block 8h + t
                        let u = [
                            vorrq_u8(vandq_u8(ql[0], m4), hb(vshlq_n_u8::<4>(qh0))),
                            vorrq_u8(vandq_u8(ql[1], m4), hb(vshlq_n_u8::<4>(qh1))),
                            vorrq_u8(vandq_u8(ql[2], m4), hb(vshlq_n_u8::<2>(qh0))),
                            vorrq_u8(vandq_u8(ql[3], m4), hb(vshlq_n_u8::<2>(qh1))),
                            vorrq_u8(vshrq_n_u8::<4>(ql[0]), hb(qh0)),
                            vorrq_u8(vshrq_n_u8::<4>(ql[1]), hb(qh1)),
                            vorrq_u8(vshrq_n_u8::<4>(ql[2]), hb(vshrq_n_u8::<2>(qh0))),
                            vorrq_u8(vshrq_n_u8::<4>(ql[3]), hb(vshrq_n_u8::<2>(qh1))),
                        ];
                        let off = vdupq_n_s8(32);
                        let v: [int8x16_t; 8] =
                            core::array::from_fn(|t| vsubq_s8(vreinterpretq_s8_u8(u[t]), off));
                        for k in 0..R {
                            let q = x[k].add(b * Self::XB + Q8K_QS + 128 * h);
                            let mut s = isum[k];
                            for t in 0..8 {
                                let dt = D::dot16(zero, v[t], ld_s8(q.add(16 * t)));
                                s = vmlaq_n_s32(s, dt, sc[8 * h + t] as i32);
                            }
                            isum[k] = s;
                        }
                    }
                    for k in 0..R {
                        let dx = f32_at(x[k].add(b * Self::XB));
                        acc[a][k] = vfmaq_n_f32(acc[a][k], vcvtq_f32_s32(isum[k]), d * dx);
                    }
                }
            }
            core::array::from_fn(|a| core::array::from_fn(|k| vaddvq_f32(acc[a][k])))
        }
    }
}

// ---------------------------------------------------------------------------
// Float types (one value per "block"; any column count)

/// f32 weights · f32 activations: FMA in four lanes, scalar tail.
struct F32K;

impl Kern for F32K {
    const BL: usize = 1;
    const WB: usize = 4;
    const XB: usize = 4;

    #[inline(always)]
    unsafe fn tile<const WR: usize, const R: usize>(
        n: usize,
        w: [*const u8; WR],
        x: [*const u8; R],
    ) -> [[f32; R]; WR] {
        // SAFETY: the caller guarantees that every `w[a]` has its n·WB bytes and
        // every `x[k]` its n·XB bytes readable, and the CPU features of the
        // calling table (Kern::tile's # Safety); every pointer below stays in
        // those values. NEON is baseline on aarch64.
        unsafe {
            let mut acc = [[vdupq_n_f32(0.0); R]; WR];
            let mut c = 0;
            while c + 4 <= n {
                let wv: [float32x4_t; WR] = core::array::from_fn(|a| ld_f32(w[a].add(4 * c)));
                for k in 0..R {
                    let xv = ld_f32(x[k].add(4 * c));
                    for a in 0..WR {
                        acc[a][k] = vfmaq_f32(acc[a][k], wv[a], xv);
                    }
                }
                c += 4;
            }
            let mut r: [[f32; R]; WR] =
                core::array::from_fn(|a| core::array::from_fn(|k| vaddvq_f32(acc[a][k])));
            for c in c..n {
                for a in 0..WR {
                    for k in 0..R {
                        r[a][k] += f32_at(w[a].add(4 * c)) * f32_at(x[k].add(4 * c));
                    }
                }
            }
            r
        }
    }
}

/// Half-precision float types: 8 values per step, widened to f32.
trait Half {
    fn to_f32(h: u16) -> f32;
    /// Eight values to two f32x4.
    ///
    /// # Safety
    /// None beyond NEON, which every aarch64 CPU has.
    unsafe fn widen(v: uint16x8_t) -> (float32x4_t, float32x4_t);
}

struct F16H;
struct Bf16H;

impl Half for F16H {
    #[inline(always)]
    fn to_f32(h: u16) -> f32 {
        crate::quant::f16::to_f32(h)
    }
    #[inline(always)]
    unsafe fn widen(v: uint16x8_t) -> (float32x4_t, float32x4_t) {
        // SAFETY: NEON only, which is baseline on aarch64 (Half::widen's # Safety).
        unsafe { f16x8_to_f32(v) }
    }
}

impl Half for Bf16H {
    #[inline(always)]
    fn to_f32(h: u16) -> f32 {
        bf16_to_f32(h)
    }
    #[inline(always)]
    unsafe fn widen(v: uint16x8_t) -> (float32x4_t, float32x4_t) {
        // SAFETY: NEON only, which is baseline on aarch64 (Half::widen's # Safety).
        unsafe { bf16x8_to_f32(v) }
    }
}

/// f16 or bf16 weights · the same activations: widen to f32, FMA in four
/// lanes, scalar tail.
struct HalfK<H>(PhantomData<H>);
type F16K = HalfK<F16H>;
type Bf16K = HalfK<Bf16H>;

impl<H: Half> Kern for HalfK<H> {
    const BL: usize = 1;
    const WB: usize = 2;
    const XB: usize = 2;

    #[inline(always)]
    unsafe fn tile<const WR: usize, const R: usize>(
        n: usize,
        w: [*const u8; WR],
        x: [*const u8; R],
    ) -> [[f32; R]; WR] {
        // SAFETY: the caller guarantees that every `w[a]` has its n·WB bytes and
        // every `x[k]` its n·XB bytes readable, and the CPU features of the
        // calling table (Kern::tile's # Safety); every pointer below stays in
        // those values. NEON is baseline on aarch64.
        unsafe {
            let mut acc = [[vdupq_n_f32(0.0); R]; WR];
            let mut c = 0;
            while c + 8 <= n {
                let wv: [(float32x4_t, float32x4_t); WR] =
                    core::array::from_fn(|a| H::widen(ld_u16(w[a].add(2 * c))));
                for k in 0..R {
                    let (x0, x1) = H::widen(ld_u16(x[k].add(2 * c)));
                    for a in 0..WR {
                        acc[a][k] = vfmaq_f32(vfmaq_f32(acc[a][k], wv[a].0, x0), wv[a].1, x1);
                    }
                }
                c += 8;
            }
            let mut r: [[f32; R]; WR] =
                core::array::from_fn(|a| core::array::from_fn(|k| vaddvq_f32(acc[a][k])));
            let h = |p: *const u8| H::to_f32(u16::from_le(p.cast::<u16>().read_unaligned()));
            for c in c..n {
                for a in 0..WR {
                    for k in 0..R {
                        r[a][k] += h(w[a].add(2 * c)) * h(x[k].add(2 * c));
                    }
                }
            }
            r
        }
    }
}

/// `Σ a[i]·b[i]`: four f32x4 FMA chains, scalar tail.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // SAFETY: every load reads 4 floats at c + 4i + 4 <= n, inside both slices;
    // NEON is part of every aarch64 target.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut c = 0;
        while c + 16 <= n {
            for (i, s) in acc.iter_mut().enumerate() {
                *s = vfmaq_f32(
                    *s,
                    vld1q_f32(pa.add(c + 4 * i)),
                    vld1q_f32(pb.add(c + 4 * i)),
                );
            }
            c += 16;
        }
        while c + 4 <= n {
            acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(c)), vld1q_f32(pb.add(c)));
            c += 4;
        }
        let mut s = vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ));
        for c in c..n {
            s += a[c] * b[c];
        }
        s
    }
}

#[cfg(test)]
mod tests {
    //! Every table this CPU supports against [`generic`](super::super::generic)
    //! on random data, for every weight type: n = 1 and n > 1, odd and even
    //! weight/activation row counts, 3–5 blocks per row, unaligned slices.
    //!
    //! Tolerance: `|got − want| ≤ 1e-5 · Σ|terms| + 1e-30`, where Σ|terms| is
    //! the sum of the absolute values of the products the dot product adds
    //! (for types with a minimum: the scale part and the minimum part
    //! separately). The integer parts are exact in both; only the f32 (or, for
    //! the generic float types, f64) summation order differs.

    use super::super::{available, generic, kernels, ActType, Kernels};
    use super::*;
    use crate::quant::{self, GgmlType, ALL_TYPES};

    /// splitmix64
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// roughly normal, scaled; occasional outliers
        fn value(&mut self) -> f32 {
            let s: f32 = (0..4)
                .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
                .sum();
            let v = (s - 2.0) * 1.7;
            if self.next().is_multiple_of(61) {
                v * 9.0
            } else {
                v
            }
        }
        fn bytes(&mut self, b: &mut [u8]) {
            for x in b {
                *x = self.next() as u8;
            }
        }
    }

    /// Byte ranges of a weight block that are not scales (may be random).
    fn weight_quant_range(ty: GgmlType) -> Option<(usize, usize)> {
        Some(match ty {
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => (2, ty.block_bytes()),
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K => (4, ty.block_bytes()),
            GgmlType::Q6K => (0, 208),
            _ => return None,
        })
    }

    /// `rows` weight rows of `cols` values: quantized random values, or (raw)
    /// with the quant bytes replaced by random bytes (scales kept).
    fn weights(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize, raw: bool) -> Vec<u8> {
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut out = vec![0u8; rows * rb];
        let mut v = vec![0f32; cols];
        for r in out.chunks_exact_mut(rb) {
            v.iter_mut().for_each(|x| *x = rng.value());
            quant::quantize(ty, &v, r);
            if raw {
                let (s, e) = weight_quant_range(ty).unwrap();
                for b in r.chunks_exact_mut(ty.block_bytes()) {
                    rng.bytes(&mut b[s..e]);
                }
            }
        }
        out
    }

    /// `rows` activation rows in format `at`; raw: random quants, with
    /// q8_1's `s` and q8_K's `bsums` recomputed to match them.
    fn acts(rng: &mut Rng, at: ActType, rows: usize, cols: usize, raw: bool) -> Vec<u8> {
        let xs = at.row_bytes(cols);
        let mut out = vec![0u8; rows * xs];
        let mut v = vec![0f32; cols];
        for r in out.chunks_exact_mut(xs) {
            v.iter_mut().for_each(|x| *x = rng.value());
            at.quantize(&v, r);
            if !raw {
                continue;
            }
            match at {
                ActType::Q8_0 => r.chunks_exact_mut(34).for_each(|b| rng.bytes(&mut b[2..])),
                ActType::Q8_1 => {
                    for b in r.chunks_exact_mut(36) {
                        rng.bytes(&mut b[4..]);
                        let sum: i32 = b[4..].iter().map(|&q| q as i8 as i32).sum();
                        let d = quant::f16::to_f32(u16::from_le_bytes([b[0], b[1]]));
                        b[2..4]
                            .copy_from_slice(&quant::f16::from_f32(sum as f32 * d).to_le_bytes());
                    }
                }
                ActType::Q8K => {
                    for b in r.chunks_exact_mut(292) {
                        rng.bytes(&mut b[4..260]);
                        for g in 0..16 {
                            let s: i32 = b[4 + 16 * g..20 + 16 * g]
                                .iter()
                                .map(|&q| q as i8 as i32)
                                .sum();
                            b[260 + 2 * g..262 + 2 * g].copy_from_slice(&(s as i16).to_le_bytes());
                        }
                    }
                }
                _ => unreachable!(),
            }
        }
        out
    }

    /// The activation row as f32 values.
    fn act_values(at: ActType, x: &[u8], cols: usize) -> Vec<f32> {
        let mut v = vec![0f32; cols];
        match at {
            ActType::F32 => quant::dequantize(GgmlType::F32, x, &mut v),
            ActType::F16 => quant::dequantize(GgmlType::F16, x, &mut v),
            ActType::Bf16 => quant::dequantize(GgmlType::Bf16, x, &mut v),
            ActType::Q8_0 => quant::q8_0::dequantize_row(x, &mut v),
            ActType::Q8_1 => quant::q8_1::dequantize_row(x, &mut v),
            ActType::Q8K => quant::q8_k::dequantize_row(x, &mut v),
        }
        v
    }

    /// Σ|terms| of one weight row · one activation row.
    fn abs_terms(ty: GgmlType, w: &[u8], xv: &[f32]) -> f64 {
        let cols = xv.len();
        let dot_abs = |w: &[u8]| -> f64 {
            let wv = quant::dequantize_to_vec(ty, w, cols);
            wv.iter().zip(xv).map(|(a, b)| (a * b).abs() as f64).sum()
        };
        match ty {
            // d at bytes 0..2, minimum scale at 2..4: count both parts
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K => {
                let (mut scale_part, mut min_part) = (w.to_vec(), w.to_vec());
                for b in scale_part.chunks_exact_mut(ty.block_bytes()) {
                    b[2..4].fill(0);
                }
                for b in min_part.chunks_exact_mut(ty.block_bytes()) {
                    b[0..2].fill(0);
                }
                dot_abs(&scale_part) + dot_abs(&min_part)
            }
            _ => dot_abs(w),
        }
    }

    fn check(k: &Kernels, ty: GgmlType, m: usize, nx: usize, cols: usize, raw: bool, seed: u64) {
        let mut rng = Rng(seed);
        let at = ActType::of(ty);
        let (rb, xs) = (
            ty.row_bytes(cols as u64).unwrap() as usize,
            at.row_bytes(cols),
        );
        let w = weights(&mut rng, ty, m, cols, raw);
        let x = acts(&mut rng, at, nx, cols, raw);
        // one byte of offset: no alignment for the kernels to rely on
        let (mut wbuf, mut xbuf) = (vec![0u8; w.len() + 1], vec![0u8; x.len() + 1]);
        wbuf[1..].copy_from_slice(&w);
        xbuf[1..].copy_from_slice(&x);
        let mut got = vec![f32::NAN; m * nx];
        let mut want = vec![f32::NAN; m * nx];
        (k.tile(ty))(cols, &wbuf[1..], rb, &xbuf[1..], xs, nx, &mut got);
        (generic::KERNELS.tile(ty))(cols, &w, rb, &x, xs, nx, &mut want);
        for i in 0..nx {
            let xv = act_values(at, &x[i * xs..(i + 1) * xs], cols);
            for j in 0..m {
                let tol = 1e-5 * abs_terms(ty, &w[j * rb..(j + 1) * rb], &xv) + 1e-30;
                let (g, e) = (got[j * nx + i], want[j * nx + i]);
                assert!(
                    ((g - e).abs() as f64) <= tol,
                    "{} {ty}: m={m} nx={nx} cols={cols} raw={raw}: out[{j}][{i}] = {g}, generic {e}, tol {tol:e}",
                    k.name
                );
            }
        }
    }

    fn aarch64_tables() -> Vec<&'static Kernels> {
        available()
            .into_iter()
            .filter(|k| k.name != "generic")
            .collect()
    }

    #[test]
    fn tables_match_generic_on_every_type() {
        let tables = aarch64_tables();
        assert!(!tables.is_empty(), "neon is always available on aarch64");
        let mut seed = 1;
        for k in &tables {
            for ty in ALL_TYPES {
                let bl = ty.block_len();
                // ≥ 3 blocks (for the float types: 3 or 5 × 32 values plus a
                // tail of 5 that is not a whole SIMD step)
                let col_choices: Vec<usize> = if bl == 1 {
                    vec![3 * 32 + 5, 5 * 32 + 5]
                } else {
                    vec![3 * bl, 5 * bl]
                };
                let raws: &[bool] = if bl == 1 { &[false] } else { &[false, true] };
                for &cols in &col_choices {
                    for &raw in raws {
                        for m in [1, 2, 3, 4, 5, 7] {
                            for nx in [1, 2, 3, 4, 5, 6, 7, 9] {
                                seed += 1;
                                check(k, ty, m, nx, cols, raw, seed);
                            }
                        }
                    }
                }
            }
            eprintln!("{}: all types match generic", k.name);
        }
    }

    #[test]
    fn dot_f32_matches_f64_sum() {
        let mut rng = Rng(7);
        for n in [0, 1, 3, 4, 7, 16, 17, 35, 64, 100, 1001] {
            let a: Vec<f32> = (0..n).map(|_| rng.value()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.value()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let abs: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64 * *y as f64).abs())
                .sum();
            for k in aarch64_tables() {
                let got = (k.dot_f32)(&a, &b);
                assert!(
                    (got as f64 - want).abs() <= 1e-5 * abs + 1e-30,
                    "{} n={n}: {got} vs {want}",
                    k.name
                );
            }
        }
    }

    /// The full `matmul` path (activation quantization, parallel chunks,
    /// transpose) with each table against generic.
    #[test]
    fn matmul_with_each_table_matches_generic() {
        use super::super::{matmul_with, MatmulScratch, Matrix};
        let mut rng = Rng(11);
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q6K,
            GgmlType::F16,
        ] {
            let (rows, cols) = (67, 512);
            let data = weights(&mut rng, ty, rows, cols, false);
            let w = Matrix {
                ty,
                data: &data,
                rows,
                cols,
            };
            for n in [1, 5] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.value()).collect();
                let mut want = vec![0f32; n * rows];
                matmul_with(
                    &generic::KERNELS,
                    &w,
                    &x,
                    n,
                    &mut want,
                    &mut MatmulScratch::default(),
                );
                for k in aarch64_tables() {
                    let mut got = vec![0f32; n * rows];
                    matmul_with(k, &w, &x, n, &mut got, &mut MatmulScratch::default());
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        let scale = e.abs().max(1.0);
                        assert!(
                            (g - e).abs() <= 1e-3 * scale,
                            "{} {ty} n={n} [{i}]: {g} vs {e}",
                            k.name
                        );
                    }
                }
            }
        }
    }

    /// Which table `kernels()` picks here; with `TAH_EXPECT_KERNELS` set (the
    /// qemu script sets it per emulated CPU), that it is the expected one.
    #[test]
    fn selected_table() {
        let names: Vec<_> = available().iter().map(|k| k.name).collect();
        let chosen = kernels().name;
        eprintln!("aarch64 kernels: available {names:?}, selected {chosen:?}");
        println!("selected kernels: {chosen}");
        let best = if supports_i8mm() {
            "i8mm"
        } else if supports_dotprod() {
            "dotprod"
        } else {
            "neon"
        };
        if std::env::var_os("TAH_KERNELS").is_none() {
            assert_eq!(chosen, best);
        }
        if let Ok(want) = std::env::var("TAH_EXPECT_KERNELS") {
            assert_eq!(chosen, want, "available: {names:?}");
        }
    }
}
