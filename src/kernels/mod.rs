//! Matrix products against weights in their stored (often quantized) types.
//!
//! Every product in the forward pass goes through [`matmul`]: `y = x · Wᵀ` for `n`
//! activation rows. The weight matrix is a view into the mapped file.

use crate::quant::GgmlType;
use rayon::prelude::*;

/// A weight matrix of `rows` × `cols` values of type `ty`, row-major: row r (one
/// output feature) occupies `row_bytes` bytes.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Matrix<'a> {
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Row `r` as f32 values.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        crate::quant::dequantize(self.ty, self.row(r), &mut out[..self.cols]);
    }
}

/// Reusable buffers for [`matmul`], sized once per session.
#[derive(Default)]
pub struct MatmulScratch {}

/// Rows of output computed per parallel task.
const ROWS_PER_TASK: usize = 16;

/// `y[i][r] = Σ_c x[i][c] · W[r][c]` for `n` rows of `x` (`n × cols`, row-major) into
/// `y` (`n × rows`).
pub fn matmul(w: &Matrix, x: &[f32], n: usize, y: &mut [f32], _scratch: &mut MatmulScratch) {
    assert_eq!(x.len(), n * w.cols);
    assert_eq!(y.len(), n * w.rows);
    let rows = w.rows;
    // Work on column blocks of y's transpose: each task owns ROWS_PER_TASK output
    // features for every activation row, so the weight rows are read once.
    let mut yt = vec![0f32; n * rows];
    yt.par_chunks_mut(ROWS_PER_TASK * n)
        .enumerate()
        .for_each(|(task, out)| {
            let mut wrow = vec![0f32; w.cols];
            let r0 = task * ROWS_PER_TASK;
            for (j, out_r) in out.chunks_mut(n).enumerate() {
                w.dequantize_row(r0 + j, &mut wrow);
                for (i, o) in out_r.iter_mut().enumerate() {
                    *o = dot_f32(&wrow, &x[i * w.cols..(i + 1) * w.cols]);
                }
            }
        });
    for r in 0..rows {
        for i in 0..n {
            y[i * rows + r] = yt[r * n + i];
        }
    }
}

pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: vectorisable and less rounding drift than one chain.
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
