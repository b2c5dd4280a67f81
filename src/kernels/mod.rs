//! Matrix products against weights in their stored (often quantized) types.
//!
//! Every product in the forward pass goes through [`matmul`]: `y = x · Wᵀ` for `n`
//! activation rows. The weight matrix is a view into the mapped file.
//!
//! # How a product is computed (ggml's scheme)
//!
//! 1. Each activation row is converted ONCE per call into the weight type's
//!    *activation format* ([`ActType::of`], ggml's "vec_dot type"): `q8_0` for
//!    `q4_0`/`q5_0`/`q8_0`, `q8_1` for `q4_1`/`q5_1`, `q8_K` for `q4_k`/`q6_k`,
//!    f16 for f16, bf16 for bf16, f32 for f32. The quantizers are the ones in
//!    [`crate::quant`], bit-identical to ggml's `quantize_row_*_ref`.
//! 2. Output rows are split into chunks that run in parallel on the current
//!    pool ([`crate::threads`]; the caller sets up a pool of `-t` threads).
//! 3. Each chunk calls the weight type's [`TileFn`] from the selected
//!    [`Kernels`] table, which computes the integer (or float) dot products of
//!    its weight rows against all activation rows, scaled per block as ggml does.
//!    With [`PANEL_MIN_ROWS`] or more activation rows and a table that has
//!    one, the chunk runs the type's [`PanelFn`] instead ([`panel`]: weights
//!    interleaved a few rows at a time, output written row-major).
//!
//! # The kernel interface (what an ISA file provides)
//!
//! An ISA module (`generic.rs`, `x86.rs`, and e.g. `aarch64.rs`) provides one
//! or more `static` [`Kernels`] tables: a name, one [`TileFn`] per weight type
//! and a [`Kernels::dot_f32`]. A table may take any entry from
//! [`generic::KERNELS`] (`..generic::KERNELS` in the struct literal), so a new
//! ISA can be brought up one type at a time. The contract for every entry:
//!
//! * **Tile product.** `tile(cols, w, w_stride, x, x_stride, nx, out)`: `w` holds
//!   `m = w.len() / w_stride` weight rows of `cols` values in the weight type
//!   (`w_stride` = the row's byte size, rows packed); `x` holds `nx` activation
//!   rows in [`ActType::of`] that type, `x_stride` bytes apart (last one may be
//!   exactly `x_stride` long). Write `out[j * nx + i] = Σ_c W[j][c] · X[i][c]`
//!   for all `j < m`, `i < nx` (`out.len() == m * nx`). `cols` is a whole number
//!   of the type's blocks. Byte slices have no alignment: use unaligned loads.
//! * **Arithmetic.** Per block, the integer dot product of the quants, scaled
//!   by the block scales exactly as ggml's `ggml_vec_dot_*_generic`; a SIMD
//!   kernel may sum blocks (and float lanes) in another order. Tests compare
//!   every table with [`generic`] and with ggml's own `vec_dot` output.
//! * **Safety.** Entries are safe `fn`s. A table whose kernels need CPU
//!   features is only handed out by [`available`] after the features were
//!   detected at run time; its `fn`s may rely on that (and say so in a
//!   `// SAFETY:` comment where they call `#[target_feature]` code).
//! * **Registration.** Add the table to [`ALL`] below in preference order
//!   (best last), with the features it needs in [`Kernels::supported`].
//!
//! The table is chosen once ([`kernels`]): the best one the CPU supports, or
//! the one named by the environment variable `TAH_KERNELS`
//! (`generic`, `avx2`, `avx512`, ... — for tests and benchmarks).

use crate::quant::{self, GgmlType};
use std::sync::OnceLock;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
pub mod attn_f16;
pub mod attn_q8;
pub mod exp;
pub mod generic;
pub mod panel;
pub mod swiglu;

pub use panel::{PanelFn, PanelJob};
#[cfg(target_arch = "x86_64")]
pub mod x86;

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

// ---------------------------------------------------------------------------
// Activation formats

/// The format activation rows are converted to before a product with weights
/// of a given type (ggml's `vec_dot_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActType {
    /// little-endian f32 (for f32 weights)
    F32,
    /// f16, ggml's rounding (for f16 weights)
    F16,
    /// bf16, ggml's rounding (for bf16 weights)
    Bf16,
    /// [`quant::q8_0`] blocks of 32 (for q4_0, q5_0, q8_0)
    Q8_0,
    /// [`quant::q8_1`] blocks of 32 with `s = d·Σq` (for q4_1, q5_1)
    Q8_1,
    /// [`quant::q8_k`] blocks of 256 with 16 partial sums (for q4_k, q6_k)
    Q8K,
}

impl ActType {
    /// The activation format for weights of type `w`.
    pub fn of(w: GgmlType) -> ActType {
        match w {
            GgmlType::F32 => ActType::F32,
            GgmlType::F16 => ActType::F16,
            GgmlType::Bf16 => ActType::Bf16,
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => ActType::Q8_0,
            GgmlType::Q4_1 | GgmlType::Q5_1 => ActType::Q8_1,
            GgmlType::Q4K | GgmlType::Q6K => ActType::Q8K,
        }
    }

    /// ggml's type id.
    pub fn ggml_id(self) -> u32 {
        match self {
            ActType::F32 => 0,
            ActType::F16 => 1,
            ActType::Bf16 => 30,
            ActType::Q8_0 => 8,
            ActType::Q8_1 => quant::q8_1::GGML_ID,
            ActType::Q8K => quant::q8_k::GGML_ID,
        }
    }

    /// Bytes of one row of `cols` values (`cols` a whole number of blocks).
    pub fn row_bytes(self, cols: usize) -> usize {
        match self {
            ActType::F32 => 4 * cols,
            ActType::F16 | ActType::Bf16 => 2 * cols,
            ActType::Q8_0 => cols / 32 * 34,
            ActType::Q8_1 => cols / 32 * quant::q8_1::BLOCK_BYTES,
            ActType::Q8K => cols / 256 * quant::q8_k::BLOCK_BYTES,
        }
    }

    /// Converts one row, bit-identical to ggml's reference conversion.
    pub fn quantize(self, x: &[f32], out: &mut [u8]) {
        match self {
            ActType::F32 => {
                for (o, v) in out.chunks_exact_mut(4).zip(x) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            ActType::F16 => quant::f16::quantize_row(x, out),
            ActType::Bf16 => quant::bf16::quantize_row(x, out),
            ActType::Q8_0 => quant::q8_0::quantize_row(x, out),
            ActType::Q8_1 => quant::q8_1::quantize_row(x, out),
            ActType::Q8K => quant::q8_k::quantize_row(x, out),
        }
    }
}

// ---------------------------------------------------------------------------
// The kernel table

/// A tile product; see the module documentation for the contract.
/// `(cols, w, w_stride, x, x_stride, nx, out)`.
pub type TileFn = fn(
    cols: usize,
    w: &[u8],
    w_stride: usize,
    x: &[u8],
    x_stride: usize,
    nx: usize,
    out: &mut [f32],
);

/// One instruction set's kernels. See the module documentation.
pub struct Kernels {
    /// The name `TAH_KERNELS` selects it by (`generic`, `avx2`, `avx512`, ...).
    pub name: &'static str,
    /// Whether this CPU can run the table (run-time feature detection).
    pub supported: fn() -> bool,
    pub f32: TileFn,
    pub f16: TileFn,
    pub bf16: TileFn,
    pub q8_0: TileFn,
    pub q4_0: TileFn,
    pub q4_1: TileFn,
    pub q5_0: TileFn,
    pub q5_1: TileFn,
    pub q4_k: TileFn,
    pub q6_k: TileFn,
    /// `Σ a[i]·b[i]` over f32 slices of equal length (attention, decider);
    /// any summation order.
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// Attention scores over an f16 cache ([`attn_f16::dot_f16`]'s arithmetic,
    /// bit-exact).
    pub dot_f16: fn(&[half::f16], &[half::f16]) -> f32,
    /// The f16 value accumulator's update ([`attn_f16::mad_f16`], bit-exact).
    pub mad_f16: fn(&mut [half::f16], &[half::f16], f32, f32),
    /// Attention scores over a q8_0 cache: a q8_0 query against a run of
    /// q8_0 keys `stride` bytes apart ([`attn_q8::dot_q8_0`], bit-exact).
    pub dot_q8_0: fn(&[u8], &[u8], usize, &mut [f32]),
    /// The f32 value accumulator's update from a q8_0 value row
    /// ([`attn_q8::mad_q8_0`], bit-exact).
    pub mad_q8_0: fn(&mut [f32], &[u8], f32, f32),
    /// A prefill product for weights of this type that writes `y` row-major
    /// ([`PanelFn`]), if the table has one; used for [`PANEL_MIN_ROWS`] or
    /// more activation rows.
    pub panel: fn(GgmlType) -> Option<PanelFn>,
    /// Batched decoding's product for weights of this type ([`MultiFn`]),
    /// if the table has one; without, each activation row goes through the
    /// one-row tile in turn (same results, more work).
    pub decode_multi: fn(GgmlType) -> Option<MultiFn>,
    /// The feed-forward gate `g = silu(g) · u` ([`swiglu::swiglu`]; within a
    /// few ulp of it).
    pub swiglu: fn(&mut [f32], &[f32]),
    /// `x = e^x` in place ([`exp::exp`]; the same bits on all but rare inputs).
    pub exp: fn(&mut [f32]),
}

/// Several activation rows against weight rows, each output bit-for-bit what
/// the table's one-row tile gives for that activation row alone, the weights
/// unpacked once for all of them. The [`TileFn`] shape and output layout.
pub type MultiFn = TileFn;

/// [`Kernels::decode_multi`] of a table without such kernels.
pub fn no_multi(_: GgmlType) -> Option<MultiFn> {
    None
}

/// [`Kernels::panel`] of a table without panel products.
pub fn no_panel(_: GgmlType) -> Option<PanelFn> {
    None
}

/// Fewest activation rows for which [`matmul`] uses a table's panel product.
pub const PANEL_MIN_ROWS: usize = 4;

impl Kernels {
    /// The tile product for weights of type `ty`.
    pub fn tile(&self, ty: GgmlType) -> TileFn {
        match ty {
            GgmlType::F32 => self.f32,
            GgmlType::F16 => self.f16,
            GgmlType::Bf16 => self.bf16,
            GgmlType::Q8_0 => self.q8_0,
            GgmlType::Q4_0 => self.q4_0,
            GgmlType::Q4_1 => self.q4_1,
            GgmlType::Q5_0 => self.q5_0,
            GgmlType::Q5_1 => self.q5_1,
            GgmlType::Q4K => self.q4_k,
            GgmlType::Q6K => self.q6_k,
        }
    }
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernels({})", self.name)
    }
}

/// Every table compiled into this build, in preference order (best last).
/// An aarch64 module registers its tables here.
pub static ALL: &[&Kernels] = &[
    &generic::KERNELS,
    #[cfg(target_arch = "x86_64")]
    &x86::AVX2,
    #[cfg(target_arch = "x86_64")]
    &x86::AVX512,
    #[cfg(target_arch = "aarch64")]
    &aarch64::NEON,
    #[cfg(target_arch = "aarch64")]
    &aarch64::DOTPROD,
    #[cfg(target_arch = "aarch64")]
    &aarch64::I8MM,
];

/// The tables this CPU can run, in preference order (best last).
pub fn available() -> Vec<&'static Kernels> {
    ALL.iter().copied().filter(|k| (k.supported)()).collect()
}

/// The table named `name`, if it is compiled in and this CPU can run it.
pub fn by_name(name: &str) -> Option<&'static Kernels> {
    available().into_iter().find(|k| k.name == name)
}

/// The table every product uses, chosen on first use: `TAH_KERNELS` if set
/// (panics if that table cannot run here: a test or benchmark asked for it),
/// else the best supported one.
pub fn kernels() -> &'static Kernels {
    static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();
    CHOSEN.get_or_init(|| match std::env::var("TAH_KERNELS") {
        Ok(name) if !name.is_empty() => by_name(&name).unwrap_or_else(|| {
            let names: Vec<_> = available().iter().map(|k| k.name).collect();
            panic!("TAH_KERNELS={name}: not available on this CPU (available: {names:?})")
        }),
        _ => *available().last().expect("generic is always available"),
    })
}

// ---------------------------------------------------------------------------
// matmul

/// Reusable buffers for [`matmul`], grown on first use and then reused (no
/// allocation per call once warm). One per session.
#[derive(Default)]
pub struct MatmulScratch {
    /// The activation rows in the weight type's activation format.
    act: Vec<u8>,
    /// For n > 1: the output transposed (rows × n), as the tiles produce it.
    yt: Vec<f32>,
    /// For panel products: per activation row and unit, [`panel::figures`].
    xd: Vec<f32>,
    xinit: Vec<i32>,
    xm: Vec<f32>,
    /// Every activation row computed exactly as it would be alone: the
    /// one-row kernels (whose block sums are ordered differently from the
    /// multi-row tiles' and the panels'), run over each small group of weight
    /// rows for all activation rows in turn. Batched decoding sets it so that
    /// a session's tokens do not depend on who else is in the batch.
    pub rowwise: bool,
}

/// Smallest amount of weight bytes worth a parallel task.
const MIN_TASK_BYTES: usize = 16 * 1024;
/// Tasks per thread: enough to even out uneven progress, few enough to keep the
/// scheduling cost small.
const TASKS_PER_THREAD: usize = 4;

/// Output rows per parallel task for a matrix with `rows` rows of `row_bytes`.
fn rows_per_task(rows: usize, row_bytes: usize, threads: usize) -> usize {
    let by_threads = rows.div_ceil(threads.max(1) * TASKS_PER_THREAD);
    let by_bytes = MIN_TASK_BYTES.div_ceil(row_bytes.max(1));
    // multiples of 8 keep the kernels' row tiles and panels whole
    by_threads
        .max(by_bytes)
        .max(1)
        .next_multiple_of(8)
        .min(rows.max(1))
}

/// `y[i][r] = Σ_c x[i][c] · W[r][c]` for `n` rows of `x` (`n × cols`, row-major) into
/// `y` (`n × rows`), with the kernels chosen by [`kernels`].
pub fn matmul(w: &Matrix, x: &[f32], n: usize, y: &mut [f32], scratch: &mut MatmulScratch) {
    matmul_with(kernels(), w, x, n, y, scratch)
}

/// [`matmul`] with a given kernel table (tests and benchmarks).
pub fn matmul_with(
    k: &Kernels,
    w: &Matrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    assert_eq!(x.len(), n * w.cols);
    assert_eq!(y.len(), n * w.rows);
    if n == 0 || w.rows == 0 {
        return;
    }
    let (rows, cols) = (w.rows, w.cols);
    let row_bytes = w.row_bytes();
    assert_eq!(
        Some(row_bytes as u64),
        w.ty.row_bytes(cols as u64),
        "{}: {} bytes per row for {cols} columns",
        w.ty,
        row_bytes
    );
    assert_eq!(row_bytes * rows, w.data.len());

    // 1. activations into the vec_dot format, once
    let at = ActType::of(w.ty);
    let xs = at.row_bytes(cols);
    if scratch.act.len() < n * xs {
        scratch.act.resize(n * xs, 0);
    }
    let act = &mut scratch.act[..n * xs];
    for (xr, ar) in x.chunks_exact(cols).zip(act.chunks_exact_mut(xs)) {
        at.quantize(xr, ar);
    }
    let act = &scratch.act[..n * xs];
    let per = rows_per_task(rows, row_bytes, crate::threads::current_threads());

    if n >= PANEL_MIN_ROWS && !scratch.rowwise {
        if let Some(panel) = (k.panel)(w.ty) {
            let units = n * cols / panel::unit_len(w.ty).expect("a panel type");
            let (xd, xinit, xm) = (&mut scratch.xd, &mut scratch.xinit, &mut scratch.xm);
            if xd.len() < units {
                xd.resize(units, 0.0);
                xinit.resize(units, 0);
                xm.resize(units, 0.0);
            }
            let (xd, xinit, xm) = (&mut xd[..units], &mut xinit[..units], &mut xm[..units]);
            panel::figures(w.ty, act, xs, n, xd, xinit, xm);
            let job = PanelJob {
                cols,
                rows,
                w: w.data,
                ws: row_bytes,
                x: act,
                xs,
                n,
                xd,
                xinit,
                xm,
                y: y.as_mut_ptr(),
            };
            // each task its own rows (`PanelJob`'s contract); `y` stays
            // borrowed until all are done
            let tasks = rows.div_ceil(per);
            crate::threads::for_each(tasks, &|t| panel(&job, t * per, rows.min((t + 1) * per)));
            return;
        }
    }

    // 2. parallel over chunks of output rows; 3. the tile kernel
    let tile = k.tile(w.ty);
    let run = |out: &mut [f32], wchunk: &[u8]| tile(cols, wchunk, row_bytes, act, xs, n, out);
    let out: &mut [f32] = if n == 1 {
        &mut *y
    } else {
        if scratch.yt.len() < n * rows {
            scratch.yt.resize(n * rows, 0.0);
        }
        &mut scratch.yt[..n * rows]
    };
    if scratch.rowwise && n > 1 {
        // Each activation row through the one-row kernel, a few weight rows
        // at a time: those stay in cache while every activation row uses
        // them (the weights are still read from memory once), and each
        // output is bit-for-bit what the row alone gives.
        const SUB: usize = 64;
        let one = |o: &mut [f32], wchunk: &[u8]| {
            let mut buf = [0.0f32; SUB];
            for (s, wsub) in wchunk.chunks(SUB * row_bytes).enumerate() {
                let m = wsub.len() / row_bytes;
                for (i, a) in act.chunks_exact(xs).enumerate() {
                    tile(cols, wsub, row_bytes, a, xs, 1, &mut buf[..m]);
                    for (r, &v) in buf[..m].iter().enumerate() {
                        o[(s * SUB + r) * n + i] = v;
                    }
                }
            }
        };
        let wchunk = per * row_bytes;
        let multi = (k.decode_multi)(w.ty);
        crate::threads::for_each_chunk_mut(out, per * n, |i, o| {
            let wc = &w.data[i * wchunk..w.data.len().min((i + 1) * wchunk)];
            match multi {
                Some(f) => f(cols, wc, row_bytes, act, xs, n, o),
                None => one(o, wc),
            }
        });
    } else if per >= rows {
        run(out, w.data);
    } else {
        let wchunk = per * row_bytes;
        crate::threads::for_each_chunk_mut(out, per * n, |i, o| {
            run(o, &w.data[i * wchunk..w.data.len().min((i + 1) * wchunk)])
        });
    }
    if n > 1 {
        // rows × n → n × rows, 16 rows at a time: the source block stays in
        // L1 and every output row gets a whole cache line per block
        let yt = &scratch.yt[..n * rows];
        for (b, blk) in yt.chunks(16 * n).enumerate() {
            for i in 0..n {
                let dst = &mut y[i * rows + 16 * b..][..blk.len() / n];
                for (k, d) in dst.iter_mut().enumerate() {
                    *d = blk[k * n + i];
                }
            }
        }
    }
}

/// `g[i] = silu(g[i]) · u[i]` with the selected kernels.
#[inline]
pub fn swiglu(g: &mut [f32], u: &[f32]) {
    (kernels().swiglu)(g, u)
}

/// `Σ a[i]·b[i]` with the selected kernels (attention scores, decider).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    (kernels().dot_f32)(a, b)
}
