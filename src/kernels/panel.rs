//! Panel products, the portable half: what a [`PanelFn`] is given.
//!
//! A panel product (e.g. [`super::x86::panel`]) computes a prefill matrix
//! product with the weights interleaved a few rows at a time, so one vector
//! instruction works on several weight rows. Its unit of work is a **unit**:
//! the span of values that share one weight scale (32 values for the
//! block-32 types and q4_k's sub-blocks, 16 for q6_k's). For each activation
//! row and unit, [`figures`] gives the numbers the product needs besides the
//! quants, so the kernels never decode activation blocks:
//!
//! * `xd`: the activation scale `d`;
//! * `xinit`: the integer sum's starting value, `−offset · Σq` where the
//!   weights' quants are stored with an offset (q4_0: 8, q5_0: 16, q8_0's
//!   signed quants flipped to unsigned: 128, q6_k: 32), else 0;
//! * `xm`: the factor of the weights' per-unit minimum: `s = d·Σq` (q8_1,
//!   for q4_1/q5_1) or the unit's `Σq` (q8_K, for q4_k: an integer, exact in
//!   f32), else 0.

use super::ActType;
use crate::quant::{self, GgmlType};

/// A panel product: output rows `r0..r1` of `job`, for every activation row.
pub type PanelFn = fn(job: &PanelJob, r0: usize, r1: usize);

/// Values per unit for weights of type `ty`, if panel products handle it.
pub fn unit_len(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
            Some(32)
        }
        GgmlType::Q4K => Some(32),
        GgmlType::Q6K => Some(16),
        _ => None,
    }
}

/// What is added to the weights' quants to make them unsigned.
fn weight_offset(ty: GgmlType) -> i32 {
    match ty {
        GgmlType::Q4_0 => 8,
        GgmlType::Q5_0 => 16,
        GgmlType::Q8_0 => 128,
        GgmlType::Q6K => 32,
        _ => 0,
    }
}

/// One [`super::matmul`] for a [`PanelFn`]: the weights, the activation rows
/// in the type's activation format with their [`figures`], and the output.
/// Only [`super::matmul_with`] makes one, and it hands each task its own
/// rows, so the tasks' writes never overlap.
pub struct PanelJob<'a> {
    pub cols: usize,
    pub rows: usize,
    /// `rows` weight rows of `ws` bytes.
    pub w: &'a [u8],
    pub ws: usize,
    /// `n` activation rows, `xs` bytes apart.
    pub x: &'a [u8],
    pub xs: usize,
    pub n: usize,
    /// Per activation row and unit (`i · units + u`), see the module
    /// documentation.
    pub xd: &'a [f32],
    pub xinit: &'a [i32],
    pub xm: &'a [f32],
    /// `n × rows` outputs, row-major.
    pub(super) y: *mut f32,
}

// SAFETY: `y` is written only through `out`, by tasks that own disjoint row
// ranges (see `matmul_with`); everything else is shared read-only data.
unsafe impl Sync for PanelJob<'_> {}

impl PanelJob<'_> {
    /// A pointer to `y[i][r..r + len]`, after checking it is within `y`.
    pub fn out(&self, i: usize, r: usize, len: usize) -> *mut f32 {
        assert!(i < self.n && r + len <= self.rows);
        self.y.wrapping_add(i * self.rows + r)
    }
}

/// Fills `xd`, `xinit` and `xm` (each `n · cols / unit_len(ty)` long) for
/// the `n` activation rows in `act` (`xs` bytes apart) of a product with
/// weights of type `ty` (which has a [`unit_len`]).
pub fn figures(
    ty: GgmlType,
    act: &[u8],
    xs: usize,
    n: usize,
    xd: &mut [f32],
    xinit: &mut [i32],
    xm: &mut [f32],
) {
    let unit = unit_len(ty).expect("a panel type");
    let at = ActType::of(ty);
    let cols = match at {
        ActType::Q8_0 => xs / 34 * 32,
        ActType::Q8_1 => xs / quant::q8_1::BLOCK_BYTES * 32,
        _ => xs / quant::q8_k::BLOCK_BYTES * quant::q8_k::QK_K,
    };
    let units = cols / unit;
    assert!(xd.len() == n * units && xinit.len() == n * units && xm.len() == n * units);
    let off = weight_offset(ty);
    let f16 = |b: &[u8]| quant::f16::to_f32(u16::from_le_bytes([b[0], b[1]]));
    let sum = |q: &[u8]| q.iter().map(|&v| v as i8 as i32).sum::<i32>();
    for i in 0..n {
        let row = &act[i * xs..][..xs];
        for u in 0..units {
            let k = i * units + u;
            let (d, q, m) = match at {
                ActType::Q8_0 => {
                    let b = &row[u * 34..][..34];
                    (f16(b), &b[2..], None)
                }
                ActType::Q8_1 => {
                    let b = &row[u * quant::q8_1::BLOCK_BYTES..][..quant::q8_1::BLOCK_BYTES];
                    (f16(b), &b[4..], Some(f16(&b[2..])))
                }
                _ => {
                    let per = quant::q8_k::QK_K / unit;
                    let b = &row[u / per * quant::q8_k::BLOCK_BYTES..][..quant::q8_k::BLOCK_BYTES];
                    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    let q = &b[quant::q8_k::QS + u % per * unit..][..unit];
                    (d, q, None)
                }
            };
            let s = sum(q);
            xd[k] = d;
            xinit[k] = -off * s;
            xm[k] = match (m, ty) {
                (Some(m), _) => m,
                (None, GgmlType::Q4K) => s as f32,
                _ => 0.0,
            };
        }
    }
}
