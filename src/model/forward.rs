//! The decoder forward pass over a batch of rows, in the order of the math:
//! norm → q/k/v (+LoRA at depth ≥ 2) → QK-norm → RoPE → cache → attention → o →
//! residual → norm → SwiGLU FFN → residual. The same function runs depth 1 (base
//! weights, every token) and depth ≥ 2 (LoRA on, hard tokens only).

use super::config::{Arch, Config};
use super::kv_cache::{KvCache, KvType, Rows};
use super::weights::{Layer, Linear, Model};
use crate::kernels::{self, MatmulScratch};
use crate::quant;
use crate::session::{CancelFlag, SessionError};
use half::f16;

/// Largest head dimension the attention kernel handles (stack accumulators).
pub const MAX_HEAD_DIM: usize = 512;

/// Activation buffers for up to `max_rows` rows, allocated once per session.
pub struct Scratch {
    pub max_rows: usize,
    pub x: Vec<f32>,    // (rows, dim) residual stream
    pub xb: Vec<f32>,   // (rows, dim) normed input of a sub-block
    pub q: Vec<f32>,    // (rows, n_heads·hd)
    pub k: Vec<f32>,    // (rows, n_kv·hd)
    pub v: Vec<f32>,    // (rows, n_kv·hd)
    pub att: Vec<f32>,  // (rows, n_heads·hd) attention output
    pub proj: Vec<f32>, // (rows, dim) output of o / down
    pub gate: Vec<f32>, // (rows, ffn)
    pub up: Vec<f32>,   // (rows, ffn)
    pub lin: LinearScratch,
    /// RoPE inverse frequencies (hd/2).
    inv_freq: Vec<f32>,
    /// (rows, hd/2) (cos, sin) of each row's rotation angles, computed once
    /// per call instead of once per layer and head.
    rope_cs: Vec<(f32, f32)>,
    /// With a q8_0 cache and a key bias ([`KeyBias`]): (positions, hd) the
    /// interleaved cos, sin of every cached position's rotation angles, filled
    /// as positions are first reached; empty (no capacity) otherwise.
    key_angles: Vec<f32>,
    /// Each row's (cache index, slot) in the current [`run_layers`] call.
    row_cache: Vec<(usize, usize)>,
}

impl Scratch {
    pub fn new(model: &Model, max_rows: usize) -> Scratch {
        let c = &model.cfg;
        let q_dim = c.n_heads * c.head_dim;
        let kv_dim = c.n_kv_heads * c.head_dim;
        let r = c.tah.as_ref().map_or(0, |t| t.lora_rank);
        let max_out = c.dim.max(c.ffn_dim).max(q_dim);
        let inv_freq = rope_inv_freq(c);
        Scratch {
            max_rows,
            x: vec![0.0; max_rows * c.dim],
            xb: vec![0.0; max_rows * c.dim],
            q: vec![0.0; max_rows * q_dim],
            k: vec![0.0; max_rows * kv_dim],
            v: vec![0.0; max_rows * kv_dim],
            att: vec![0.0; max_rows * q_dim],
            proj: vec![0.0; max_rows * c.dim],
            gate: vec![0.0; max_rows * c.ffn_dim],
            up: vec![0.0; max_rows * c.ffn_dim],
            lin: LinearScratch {
                lora_t: vec![0.0; max_rows * r],
                lora_y: vec![0.0; max_rows * max_out],
                mm: MatmulScratch::default(),
            },
            inv_freq,
            rope_cs: vec![(0.0, 0.0); max_rows * (c.head_dim / 2)],
            key_angles: Vec::new(),
            row_cache: vec![(0, 0); max_rows],
        }
    }

    /// Reserves (untouched until used) the angle table `KeyBias` reads for
    /// a cache of `ctx` positions, when `cache_type` and the model call for
    /// it; `false` if the allocator refuses.
    pub fn reserve_key_angles(&mut self, model: &Model, cache_type: KvType, ctx: usize) -> bool {
        if !KeyBias::applies(model, cache_type) {
            return true;
        }
        ctx.checked_mul(model.cfg.head_dim)
            .is_some_and(|n| self.key_angles.try_reserve_exact(n).is_ok())
    }

    /// Fills the angle table up to position `n_pos` (exclusive), within the
    /// reserved capacity: no allocation.
    fn fill_key_angles(&mut self, n_pos: usize) {
        let hd = 2 * self.inv_freq.len();
        let upto = n_pos.min(self.key_angles.capacity() / hd);
        for p in self.key_angles.len() / hd..upto {
            for f in &self.inv_freq {
                // as rope_angles
                let (sin, cos) = (p as f32 * f).sin_cos();
                self.key_angles.extend_from_slice(&[cos, sin]);
            }
        }
    }
}

/// A q8_0 cache of a model whose keys carry a bias (Qwen2: |b| up to 158 in a
/// few dimensions of layers 0–2) stores keys without it: one large entry
/// would set its whole block's step and swamp the rest (perplexity +8% on
/// Qwen2.5-0.5B). RoPE is linear, so the score splits exactly:
/// q·R_p(Wx + b) = q·R_p(Wx) + q·R_p b — the first from the q8_0 row, the
/// second in f32 from the bias and the key's angles, Σ_i A_i cos pθ_i +
/// B_i sin pθ_i with (A_i, B_i) from the query and the bias once per query.
/// Values drop their bias too: the softmax weights sum to 1, so it is added
/// back to the output once. A context shift re-rotates the stored part and
/// the bias part follows the new position.
struct KeyBias;

impl KeyBias {
    /// Whether a session of `model` with a `cache_type` cache splits biases
    /// out: q8_0, and key biases with no QK-norm between them and RoPE.
    fn applies(model: &Model, cache_type: KvType) -> bool {
        cache_type == KvType::Q8_0
            && model
                .layers
                .first()
                .is_some_and(|l| l.linear(Linear::K).1.is_some() && l.k_norm.is_none())
    }

    /// The interleaved (A_i, B_i) of query head `qh` against the key bias `b`
    /// of its KV head: q·R_p b = Σ_i A_i cos pθ_i + B_i sin pθ_i.
    fn query_terms(qh: &[f32], b: &[f32], neox: bool, ab: &mut [f32]) {
        let hd = qh.len();
        for i in 0..hd / 2 {
            let (x, y) = pair(i, hd, neox);
            ab[2 * i] = qh[x] * b[x] + qh[y] * b[y];
            ab[2 * i + 1] = qh[y] * b[x] - qh[x] * b[y];
        }
    }
}

/// The indices of RoPE's pair `i` in a head of `hd` ([`rope`]).
#[inline]
fn pair(i: usize, hd: usize, neox: bool) -> (usize, usize) {
    if neox {
        (i, i + hd / 2)
    } else {
        (2 * i, 2 * i + 1)
    }
}

/// The work buffers of the linears (the LoRA intermediates, the matmul scratch).
pub struct LinearScratch {
    lora_t: Vec<f32>, // (rows, r) A·x
    lora_y: Vec<f32>, // (rows, max out) B·(A·x)
    pub mm: MatmulScratch,
}

/// Which hidden states to record for the decider, and where.
pub struct Capture<'a> {
    /// Hidden-state indices (0 = embedding output, L = final-norm output).
    pub layers: &'a [usize],
    /// (rows, layers.len(), dim)
    pub out: &'a mut [f32],
}

/// `out = w ⊙ x / sqrt(mean(x²) + eps)` for each row of `dim` values.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        // As ggml: Σ x² in f64 (each square rounded to f32), mean narrowed to f32.
        let ss = (xr.iter().map(|v| (v * v) as f64).sum::<f64>() / dim as f64) as f32;
        let inv = 1.0 / (ss + eps).sqrt();
        for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
            *o = g * (v * inv);
        }
    }
}

/// In-place per-head RMSNorm (qwen3's QK-norm).
fn rms_norm_heads(x: &mut [f32], w: &[f32], eps: f32) {
    let hd = w.len();
    for h in x.chunks_exact_mut(hd) {
        let ss: f32 = h.iter().map(|v| v * v).sum::<f32>() / hd as f32;
        let inv = 1.0 / (ss + eps).sqrt();
        for (v, g) in h.iter_mut().zip(w) {
            *v = g * (*v * inv);
        }
    }
}

/// RoPE inverse frequencies (head_dim / 2 of them). HF / llama.cpp:
/// θ_i = base^(-2i/hd).
fn rope_inv_freq(c: &Config) -> Vec<f32> {
    (0..c.head_dim / 2)
        .map(|i| (c.rope_base as f64).powf(-(2.0 * i as f64) / c.head_dim as f64) as f32)
        .collect()
}

/// The (cos, sin) of position `pos`'s rotation angles `pos · inv_freq[i]`.
fn rope_angles(pos: usize, inv_freq: &[f32], cs: &mut [(f32, f32)]) {
    for (c, f) in cs.iter_mut().zip(inv_freq) {
        let (sin, cos) = (pos as f32 * f).sin_cos();
        *c = (cos, sin);
    }
}

/// Rotary embedding of one row of heads by the angles `cs` ([`rope_angles`]).
/// `neox`: pairs (i, i + hd/2) (qwen2/qwen3, and HF's rotate-half); otherwise
/// adjacent pairs (2i, 2i+1), the order llama.cpp's converter gives llama models.
fn rope(x: &mut [f32], hd: usize, cs: &[(f32, f32)], neox: bool) {
    for head in x.chunks_exact_mut(hd) {
        for (i, &(cos, sin)) in cs.iter().enumerate() {
            let (a, b) = pair(i, hd, neox);
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

/// Moves cached keys to other positions (a context shift): RoPE turns each
/// pair of a key at position p by the angle p·θ_i, and rotations compose, so
/// turning a cached key by delta·θ_i gives the key RoPE would have made at
/// p + delta (up to rounding) — no forward pass needed. Same pairs (`rope`'s
/// `neox`) and frequencies as the forward pass.
pub struct KeyRotation {
    hd: usize,
    neox: bool,
    inv_freq: Vec<f32>,
    /// The angles of `delta`, computed once per delta (a shift turns every
    /// moved row by the same one).
    cs: Vec<(f32, f32)>,
    delta: Option<isize>,
}

impl KeyRotation {
    pub fn new(c: &Config) -> KeyRotation {
        KeyRotation {
            hd: c.head_dim,
            neox: c.arch != Arch::Llama,
            inv_freq: rope_inv_freq(c),
            cs: vec![(1.0, 0.0); c.head_dim / 2],
            delta: None,
        }
    }

    /// Turns one cached key row (every key/value head) by `delta` positions.
    pub fn rotate(&mut self, row: &mut [f32], delta: isize) {
        if self.delta != Some(delta) {
            // In f64: the rotation adds no error of its own beyond the final
            // rounding of cos and sin.
            for (c, &f) in self.cs.iter_mut().zip(&self.inv_freq) {
                let (sin, cos) = (delta as f64 * f as f64).sin_cos();
                *c = (cos as f32, sin as f32);
            }
            self.delta = Some(delta);
        }
        rope(row, self.hd, &self.cs, self.neox);
    }
}

/// What the linears of one [`run_layers`] call share: the model, the number of
/// rows, and the LoRA scale α/r (`None` at depth 1, where LoRA is off).
struct Linears<'m> {
    model: &'m Model,
    n: usize,
    lora_scale: Option<f32>,
}

impl Linears<'_> {
    /// `y = x·Wᵀ (+ bias) (+ scale·(x·Aᵀ)·Bᵀ)` for linear `which` of `layer`.
    fn apply(&self, layer: &Layer, which: Linear, x: &[f32], y: &mut [f32], s: &mut LinearScratch) {
        let (w, bias, lora) = layer.linear(which);
        let (n, rows, cols) = (self.n, w.rows, w.cols);
        let y = &mut y[..n * rows];
        kernels::matmul(&self.model.mat(w), &x[..n * cols], n, y, &mut s.mm);
        if let Some(b) = bias {
            for yr in y.chunks_exact_mut(rows) {
                for (o, bv) in yr.iter_mut().zip(b) {
                    *o += bv;
                }
            }
        }
        if let (Some(l), Some(scale)) = (lora, self.lora_scale) {
            let t = &mut s.lora_t[..n * l.a.rows];
            kernels::matmul(&self.model.mat(&l.a), &x[..n * cols], n, t, &mut s.mm);
            let ly = &mut s.lora_y[..n * rows];
            kernels::matmul(&self.model.mat(&l.b), t, n, ly, &mut s.mm);
            for (o, d) in y.iter_mut().zip(ly.iter()) {
                *o += d * scale;
            }
        }
    }
}

/// `x += d`, elementwise (the residual connections).
fn add(x: &mut [f32], d: &[f32]) {
    for (x, d) in x.iter_mut().zip(d) {
        *x += d;
    }
}

/// The KV caches of a forward pass's rows: one session's (every row), or one
/// per session in a batched step ([`crate::session::Batch`]), cache `k` owning the
/// `k`-th run of consecutive rows.
pub trait Caches {
    fn count(&self) -> usize;
    fn cache(&self, k: usize) -> &KvCache;
    fn cache_mut(&mut self, k: usize) -> &mut KvCache;
}

impl Caches for KvCache {
    fn count(&self) -> usize {
        1
    }
    fn cache(&self, _: usize) -> &KvCache {
        self
    }
    fn cache_mut(&mut self, _: usize) -> &mut KvCache {
        self
    }
}

/// Runs every layer on the rows already in `s.x` (their input embeddings), at
/// `positions` (ascending within each cache's run), as depth `depth`. `parts[k]`
/// rows (consecutive, in order) belong to `caches.cache(k)`; the matrix
/// products run over all rows at once (the weights are read once), the cache
/// writes and attention per row against its own cache. Appends the rows'
/// keys/values at that depth and leaves the last layer's residual stream in `s.x`.
///
/// `cancel` is checked before each layer: once set, the call returns
/// [`SessionError::Cancelled`] with the rows' slots appended but only partly
/// written — the caller truncates the caches back (as `Session::feed` does).
#[allow(clippy::too_many_arguments)]
pub fn run_layers<C: Caches + Sync + ?Sized>(
    model: &Model,
    caches: &mut C,
    parts: &[usize],
    s: &mut Scratch,
    positions: &[usize],
    depth: usize,
    mut capture: Option<Capture>,
    cancel: &CancelFlag,
) -> Result<(), SessionError> {
    let c = &model.cfg;
    let (dim, hd) = (c.dim, c.head_dim);
    let q_dim = c.n_heads * hd;
    let kv_dim = c.n_kv_heads * hd;
    let n = positions.len();
    assert!(n <= s.max_rows && hd <= MAX_HEAD_DIM);
    assert!(parts.len() == caches.count() && parts.iter().sum::<usize>() == n);
    // Each row's cache and slot, found once per call.
    let mut row = 0;
    for (k, &m) in parts.iter().enumerate().filter(|(_, &m)| m > 0) {
        let cache = caches.cache_mut(k);
        let pos = &positions[row..row + m];
        if depth == 1 {
            debug_assert!(pos.iter().enumerate().all(|(i, &p)| p == cache.len(1) + i));
        }
        let first = cache.append(depth, pos);
        for i in 0..m {
            s.row_cache[row + i] = (k, first + i);
        }
        row += m;
    }
    let lin = Linears {
        model,
        n,
        lora_scale: match &c.tah {
            Some(t) if depth >= 2 => Some(t.lora_alpha / t.lora_rank as f32),
            _ => None,
        },
    };
    let (nd, eps) = (n * dim, c.rms_eps);
    let neox = c.arch != Arch::Llama;
    let n_sel = capture.as_ref().map_or(0, |cap| cap.layers.len());
    for (cs, &p) in s.rope_cs.chunks_exact_mut(hd / 2).zip(positions) {
        rope_angles(p, &s.inv_freq, cs);
    }
    // Session::new reserved the angle table for every position it can hold.
    let ty = caches.cache(0).ty;
    assert!((0..parts.len()).all(|k| caches.cache(k).ty == ty));
    let split_bias = KeyBias::applies(model, ty);
    if split_bias {
        let n_pos = positions.iter().max().map_or(0, |p| p + 1);
        s.fill_key_angles(n_pos);
        assert!(
            s.key_angles.len() >= n_pos * hd,
            "key angle table not reserved"
        );
    }

    for (l, layer) in model.layers.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(SessionError::Cancelled);
        }
        if let Some(cap) = capture.as_mut() {
            record(cap, l, &s.x[..n * dim], n, n_sel, dim);
        }

        // Attention block.
        rms_norm(&s.x[..nd], &layer.attn_norm, eps, &mut s.xb[..nd]);
        lin.apply(layer, Linear::Q, &s.xb, &mut s.q, &mut s.lin);
        lin.apply(layer, Linear::K, &s.xb, &mut s.k, &mut s.lin);
        lin.apply(layer, Linear::V, &s.xb, &mut s.v, &mut s.lin);
        let (bk, bv) = match split_bias {
            true => (layer.linear(Linear::K).1, layer.linear(Linear::V).1),
            false => (None, None),
        };
        for i in 0..n {
            let q = &mut s.q[i * q_dim..(i + 1) * q_dim];
            let k = &mut s.k[i * kv_dim..(i + 1) * kv_dim];
            let v = &mut s.v[i * kv_dim..(i + 1) * kv_dim];
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                rms_norm_heads(q, qn, eps);
                rms_norm_heads(k, kn, eps);
            }
            if let Some(bk) = bk {
                k.iter_mut().zip(bk).for_each(|(x, b)| *x -= b);
            }
            if let Some(bv) = bv {
                v.iter_mut().zip(bv).for_each(|(x, b)| *x -= b);
            }
            let cs = &s.rope_cs[i * (hd / 2)..(i + 1) * (hd / 2)];
            rope(q, hd, cs, neox);
            rope(k, hd, cs, neox);
            let (part, slot) = s.row_cache[i];
            caches.cache_mut(part).write(depth, l, slot, k, v);
        }
        let heads = (c.n_heads, c.n_kv_heads, hd);
        let att = &mut s.att[..n * q_dim];
        let key_bias = bk.map(|b| (b, &s.key_angles[..], neox));
        let rows = (&s.q[..n * q_dim], positions, &s.row_cache[..n]);
        attention(&*caches, l, depth, rows, heads, key_bias, att);
        if let Some(bv) = bv {
            // the values' bias, back once: the weights sum to 1
            for row in att.chunks_exact_mut(q_dim) {
                for (h, o) in row.chunks_exact_mut(hd).enumerate() {
                    let b = &bv[h / (c.n_heads / c.n_kv_heads) * hd..][..hd];
                    o.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                }
            }
        }
        lin.apply(layer, Linear::O, &s.att, &mut s.proj, &mut s.lin);
        add(&mut s.x[..nd], &s.proj[..nd]);

        // Feed-forward block: down(silu(gate(x)) · up(x)).
        rms_norm(&s.x[..nd], &layer.ffn_norm, eps, &mut s.xb[..nd]);
        lin.apply(layer, Linear::Gate, &s.xb, &mut s.gate, &mut s.lin);
        lin.apply(layer, Linear::Up, &s.xb, &mut s.up, &mut s.lin);
        kernels::swiglu(&mut s.gate[..n * c.ffn_dim], &s.up[..n * c.ffn_dim]);
        lin.apply(layer, Linear::Down, &s.gate, &mut s.proj, &mut s.lin);
        add(&mut s.x[..nd], &s.proj[..nd]);
    }
    if let Some(cap) = capture.as_mut() {
        if cap.layers.contains(&c.n_layers) {
            rms_norm(
                &s.x[..n * dim],
                &model.output_norm,
                c.rms_eps,
                &mut s.xb[..n * dim],
            );
            record(cap, c.n_layers, &s.xb[..n * dim], n, n_sel, dim);
        }
    }
    Ok(())
}

/// Copies rows of `h` into the capture slots of hidden-state index `index`.
fn record(cap: &mut Capture, index: usize, h: &[f32], n: usize, n_sel: usize, dim: usize) {
    for (j, _) in cap.layers.iter().enumerate().filter(|(_, &li)| li == index) {
        for i in 0..n {
            let at = (i * n_sel + j) * dim;
            cap.out[at..at + dim].copy_from_slice(&h[i * dim..(i + 1) * dim]);
        }
    }
}

/// The deepest `max_iter` a file may declare (the loader caps it here).
pub const MAX_DEPTH: usize = 16;

/// Keys, values and (depth ≥ 2) positions of one depth's cached rows.
type KvSet<'a> = (Rows<'a>, Rows<'a>, Option<&'a [usize]>);

/// Duo-causal attention: the query of row i (position p, depth d) attends to the
/// depth-1 keys at positions ≤ p and, for each depth 2..=d, to that depth's keys at
/// positions ≤ p — one softmax over all of them, computed online (no mask).
/// `rows` = the queries, their positions and each row's (cache, slot) in
/// `caches`; `heads` = (query heads, key/value heads, head dimension). `key_bias`: the
/// layer's key bias, the angle table and the pair layout, when a q8_0 cache
/// holds keys without their bias ([`KeyBias`]).
fn attention<C: Caches + Sync + ?Sized>(
    caches: &C,
    layer: usize,
    depth: usize,
    (q, positions, row_cache): (&[f32], &[usize], &[(usize, usize)]),
    heads: (usize, usize, usize),
    key_bias: Option<(&[f32], &[f32], bool)>,
    out: &mut [f32],
) {
    let (n_heads, n_kv, hd) = heads;
    let kv_dim = n_kv * hd;
    let group = n_heads / n_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    crate::threads::for_each_chunk_mut(out, hd, |task, o| {
        let (i, h) = (task / n_heads, task % n_heads);
        let p = positions[i];
        let cache = caches.cache(row_cache[i].0);
        // Visible slots per depth for the cache's last row; earlier rows see
        // prefixes. A fixed array, not a Vec: this runs per layer per token.
        let mut sets: [KvSet; MAX_DEPTH] = [(Rows::F32(&[]), Rows::F32(&[]), None); MAX_DEPTH];
        for d in 1..=depth {
            let (k, v) = cache.rows(d, layer, cache.len(d));
            sets[d - 1] = (k, v, (d > 1).then(|| cache.positions(d)));
        }
        let sets = &sets[..depth];
        let qh = &q[i * n_heads * hd + h * hd..][..hd];
        let kv_off = (h / group) * hd;
        // An f16 cache is read the way llama.cpp's CPU flash attention reads it
        // (f16 query, f16 value accumulator), so greedy runs agree with llama.cpp;
        // a q8_0 cache as llama.cpp reads one (q8_0 query, f32 accumulator); an
        // f32 cache keeps full f32 accumulation (the reference-parity path).
        match sets[0].0 {
            Rows::F16(_) => attend_f16(qh, sets, p, kv_dim, kv_off, scale, o),
            Rows::Q8_0(_) => {
                let kb = key_bias.map(|(b, angles, neox)| (&b[kv_off..kv_off + hd], angles, neox));
                attend_q8(qh, sets, p, kv_dim, kv_off, scale, kb, o)
            }
            Rows::F32(_) => attend_f32(qh, sets, p, kv_dim, kv_off, scale, o),
        }
    });
}

/// Cached rows a query at position `p` sees: depth 1 holds every position
/// (`None`), a deeper depth only its own, sorted.
fn visible(positions: Option<&[usize]>, p: usize) -> usize {
    positions.map_or(p + 1, |pos| pos.partition_point(|&pp| pp <= p))
}

/// One query head over f32 keys/values: online softmax in f32 (the
/// reference-parity path).
fn attend_f32(
    qh: &[f32],
    sets: &[KvSet],
    p: usize,
    kv_dim: usize,
    kv_off: usize,
    scale: f32,
    o: &mut [f32],
) {
    let hd = qh.len();
    let mut acc = [0f32; MAX_HEAD_DIM];
    let acc = &mut acc[..hd];
    let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
    for (keys, vals, pos) in sets {
        let (Rows::F32(keys), Rows::F32(vals)) = (keys, vals) else {
            unreachable!("one cache type for every depth")
        };
        let visible = visible(*pos, p);
        for j in 0..visible {
            let at = j * kv_dim + kv_off;
            let s = kernels::dot_f32(qh, &keys[at..at + hd]) * scale;
            let m_new = m.max(s);
            let corr = (m - m_new).exp();
            let w = (s - m_new).exp();
            l = l * corr + w;
            // acc = acc·corr + w·v
            for (a, x) in acc.iter_mut().zip(&vals[at..at + hd]) {
                *a = *a * corr + w * x;
            }
            m = m_new;
        }
    }
    let inv = 1.0 / l;
    for (o, a) in o.iter_mut().zip(acc.iter()) {
        *o = a * inv;
    }
}

/// Keys per chunk of [`attend_f16`]'s and [`attend_q8`]'s softmax.
const ATT_CHUNK: usize = 64;

/// One query head over f16 keys/values, in llama.cpp's CPU flash-attention
/// arithmetic (its default with an f16 cache), so greedy near-ties resolve as
/// there: the query rounded to f16, K·Q by [`kernels::dot_f16`], online softmax
/// with e^x (`expf`'s bits, [`kernels::Kernels::exp`]) where a new maximum
/// rescales the accumulator and otherwise weighs the row, and the weighted V
/// sum kept in an f16 accumulator ([`kernels::mad_f16`]).
fn attend_f16(
    qh: &[f32],
    sets: &[KvSet],
    p: usize,
    kv_dim: usize,
    kv_off: usize,
    scale: f32,
    o: &mut [f32],
) {
    let k = kernels::kernels();
    let hd = qh.len();
    let mut q16 = [f16::ZERO; MAX_HEAD_DIM];
    let q16 = &mut q16[..hd];
    for (d, s) in q16.iter_mut().zip(qh) {
        *d = f16::from_f32(*s);
    }
    let mut acc = [f16::ZERO; MAX_HEAD_DIM];
    let acc = &mut acc[..hd];
    let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
    // llama.cpp's online softmax, key by key: a new maximum m rescales the
    // sums by ms = e^(m_old − m), any other key weighs its value by
    // vs = e^(s − m). Done in chunks: the scores, then each key's exponent
    // argument, then all the e^ at once (vector kernel), then the sums.
    let mut arg = [0f32; ATT_CHUNK];
    let mut rescale = [false; ATT_CHUNK];
    for (keys, vals, pos) in sets {
        let (Rows::F16(keys), Rows::F16(vals)) = (keys, vals) else {
            unreachable!()
        };
        let visible = visible(*pos, p);
        for j0 in (0..visible).step_by(ATT_CHUNK) {
            let len = (visible - j0).min(ATT_CHUNK);
            for (t, (a, r)) in arg[..len].iter_mut().zip(&mut rescale[..len]).enumerate() {
                let at = (j0 + t) * kv_dim + kv_off;
                let s = (k.dot_f16)(q16, &keys[at..at + hd]) * scale;
                *r = s > m;
                if *r {
                    *a = m - s;
                    m = s;
                } else {
                    *a = s - m;
                }
            }
            (k.exp)(&mut arg[..len]);
            for (t, (&e, &r)) in arg[..len].iter().zip(&rescale[..len]).enumerate() {
                let at = (j0 + t) * kv_dim + kv_off;
                let (ms, vs) = if r { (e, 1.0) } else { (1.0, e) };
                (k.mad_f16)(acc, &vals[at..at + hd], ms, vs);
                l = l * ms + vs;
            }
        }
    }
    let inv = if l == 0.0 { 0.0 } else { 1.0 / l };
    for (o, a) in o.iter_mut().zip(acc.iter()) {
        *o = a.to_f32() * inv;
    }
}

/// One query head over q8_0 keys/values, in llama.cpp's CPU flash-attention
/// arithmetic with a q8_0 cache: the query quantized to q8_0 once
/// ([`quant::q8_0::quantize_row`], ggml's rule), K·Q as integer block dots
/// times the two scales ([`kernels::Kernels::dot_q8_0`], a chunk of keys per
/// call), the online softmax of [`attend_f16`], and the weighted V sum in an
/// f32 accumulator fed block by block from the q8_0 rows
/// ([`kernels::Kernels::mad_q8_0`]). Heads are whole blocks (the head dimension
/// is a multiple of 32: `KvType::check_head_dim`). `key_bias`: this KV
/// head's key bias, the angle table and the pair layout, whose term
/// ([`KeyBias`]) each score gets in f32.
#[allow(clippy::too_many_arguments)]
fn attend_q8(
    qh: &[f32],
    sets: &[KvSet],
    p: usize,
    kv_dim: usize,
    kv_off: usize,
    scale: f32,
    key_bias: Option<(&[f32], &[f32], bool)>,
    o: &mut [f32],
) {
    use quant::q8_0::{BLOCK_BYTES, QK};
    let k = kernels::kernels();
    let hd = qh.len();
    // bytes of a head, of a row, and where this head starts in a row
    let (hb, rb, ob) = (
        hd / QK * BLOCK_BYTES,
        kv_dim / QK * BLOCK_BYTES,
        kv_off / QK * BLOCK_BYTES,
    );
    let mut q8 = [0u8; MAX_HEAD_DIM / QK * BLOCK_BYTES];
    let q8 = &mut q8[..hb];
    quant::q8_0::quantize_row(qh, q8);
    let mut ab = [0f32; MAX_HEAD_DIM];
    let ab = &mut ab[..hd];
    if let Some((b, _, neox)) = key_bias {
        KeyBias::query_terms(qh, b, neox, ab);
    }
    let mut acc = [0f32; MAX_HEAD_DIM];
    let acc = &mut acc[..hd];
    let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
    let mut arg = [0f32; ATT_CHUNK];
    let mut rescale = [false; ATT_CHUNK];
    for (keys, vals, pos) in sets {
        let (Rows::Q8_0(keys), Rows::Q8_0(vals)) = (keys, vals) else {
            unreachable!("one cache type for every depth")
        };
        let visible = visible(*pos, p);
        for j0 in (0..visible).step_by(ATT_CHUNK) {
            let len = (visible - j0).min(ATT_CHUNK);
            // the chunk's keys of this head: `len` runs of `hb` bytes, `rb` apart
            let kc = &keys[j0 * rb + ob..(j0 + len - 1) * rb + ob + hb];
            (k.dot_q8_0)(q8, kc, rb, &mut arg[..len]);
            if let Some((_, angles, _)) = key_bias {
                for (t, a) in arg[..len].iter_mut().enumerate() {
                    let pk = pos.map_or(j0 + t, |pos| pos[j0 + t]);
                    *a += kernels::dot_f32(ab, &angles[pk * hd..(pk + 1) * hd]);
                }
            }
            // as attend_f16: each key's exponent argument against the running
            // maximum, a new maximum flagged to rescale
            for (a, r) in arg[..len].iter_mut().zip(&mut rescale[..len]) {
                let s = *a * scale;
                *r = s > m;
                if *r {
                    *a = m - s;
                    m = s;
                } else {
                    *a = s - m;
                }
            }
            (k.exp)(&mut arg[..len]);
            for (t, (&e, &r)) in arg[..len].iter().zip(&rescale[..len]).enumerate() {
                let at = (j0 + t) * rb + ob;
                let (ms, vs) = if r { (e, 1.0) } else { (1.0, e) };
                (k.mad_q8_0)(acc, &vals[at..at + hb], ms, vs);
                l = l * ms + vs;
            }
        }
    }
    let inv = if l == 0.0 { 0.0 } else { 1.0 / l };
    for (o, a) in o.iter_mut().zip(acc.iter()) {
        *o = a * inv;
    }
}

/// Final norm and LM head for `rows` (indices into the batch) into `logits`
/// (`rows.len() × vocab`).
pub fn logits(model: &Model, s: &mut Scratch, rows: &[usize], logits: &mut [f32]) {
    let c = &model.cfg;
    let dim = c.dim;
    for (j, &i) in rows.iter().enumerate() {
        rms_norm(
            &s.x[i * dim..(i + 1) * dim],
            &model.output_norm,
            c.rms_eps,
            &mut s.xb[j * dim..(j + 1) * dim],
        );
    }
    let n = rows.len();
    kernels::matmul(
        &model.mat(&model.output),
        &s.xb[..n * dim],
        n,
        &mut logits[..n * c.vocab],
        &mut s.lin.mm,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// Attention over a q8_0 cache equals attention over an f32 cache holding
    /// the same (dequantized) keys and values, for queries that q8_0 holds
    /// exactly: every head, row and depth is read where it should be.
    #[test]
    fn q8_0_attention_equals_f32_attention_on_the_dequantized_rows() {
        let (n_heads, n_kv, hd) = (4, 2, 64);
        let kv_dim = n_kv * hd;
        let mut q8 = KvCache::try_new(KvType::Q8_0, 2, kv_dim, 32, 2).unwrap();
        let mut f = KvCache::try_new(KvType::F32, 2, kv_dim, 32, 2).unwrap();
        let deep = [3usize, 7, 8, 15, 18];
        let n = 20;
        let pos: Vec<usize> = (0..n).collect();
        for c in [&mut q8, &mut f] {
            c.append(1, &pos);
            c.append(2, &deep);
        }
        for (depth, rows) in [(1, n), (2, deep.len())] {
            for layer in 0..2 {
                for i in 0..rows {
                    let seed = (depth * 1000 + layer * 100 + i) as u32;
                    let (k, v) = (values(kv_dim, seed), values(kv_dim, seed + 7));
                    q8.write(depth, layer, i, &k, &v);
                    // the f32 cache gets the values the q8_0 cache decodes to
                    let (Rows::Q8_0(kq), Rows::Q8_0(vq)) = q8.rows(depth, layer, i + 1) else {
                        unreachable!()
                    };
                    let rb = q8.row_bytes();
                    let (mut kd, mut vd) = (vec![0f32; kv_dim], vec![0f32; kv_dim]);
                    quant::q8_0::dequantize_row(&kq[i * rb..], &mut kd);
                    quant::q8_0::dequantize_row(&vq[i * rb..], &mut vd);
                    f.write(depth, layer, i, &kd, &vd);
                }
            }
        }
        // queries: integers in ±127 (each block reaching 127) times 2⁻⁶, which
        // ggml's quantizer stores exactly
        let qpos = [2usize, 8, 16, 19];
        let q: Vec<f32> = (0..qpos.len() * n_heads * hd)
            .map(|i| {
                let k = if i % 32 == 5 {
                    127
                } else {
                    (i * 37 % 255) as i32 - 127
                };
                k as f32 / 64.0
            })
            .collect();
        for depth in [1, 2] {
            let mut got = vec![0f32; q.len()];
            let mut want = vec![0f32; q.len()];
            let heads = (n_heads, n_kv, hd);
            attention(
                &q8,
                1,
                depth,
                (&q, &qpos, &[(0, 0); 4]),
                heads,
                None,
                &mut got,
            );
            attention(
                &f,
                1,
                depth,
                (&q, &qpos, &[(0, 0); 4]),
                heads,
                None,
                &mut want,
            );
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "depth {depth} [{i}]: {a} vs {b}"
                );
            }
        }
    }

    /// A q8_0 cache holding keys and values without their biases, scored
    /// with the bias term (`KeyBias`) and given the value bias back, equals
    /// f32 attention over the biased keys R_p(k + b) and values v + b, for
    /// both pair layouts and at both depths (sparse positions included).
    #[test]
    fn split_key_bias_equals_attention_over_biased_rows() {
        let (n_heads, n_kv, hd) = (4, 2, 64);
        let kv_dim = n_kv * hd;
        let n = 24;
        let deep = [2usize, 9, 10, 17, 23];
        let inv_freq: Vec<f32> = (0..hd / 2)
            .map(|i| 10000f64.powf(-(2.0 * i as f64) / hd as f64) as f32)
            .collect();
        let mut angles = Vec::new();
        let mut cs = vec![(0f32, 0f32); hd / 2];
        for p in 0..n {
            rope_angles(p, &inv_freq, &mut cs);
            angles.extend(cs.iter().flat_map(|&(c, s)| [c, s]));
        }
        // biases with a few large entries, as Qwen2's
        let mut bk = values(kv_dim, 99);
        bk[hd - 1] = 40.0;
        bk[kv_dim - 2] = -35.0;
        let bv = values(kv_dim, 98);
        for neox in [true, false] {
            let mut q8 = KvCache::try_new(KvType::Q8_0, 1, kv_dim, 32, 2).unwrap();
            let mut f = KvCache::try_new(KvType::F32, 1, kv_dim, 32, 2).unwrap();
            let pos: Vec<usize> = (0..n).collect();
            for c in [&mut q8, &mut f] {
                c.append(1, &pos);
                c.append(2, &deep);
            }
            for (depth, rows) in [(1, n), (2, deep.len())] {
                for i in 0..rows {
                    let p = if depth == 1 { i } else { deep[i] };
                    rope_angles(p, &inv_freq, &mut cs);
                    let seed = (depth * 100 + i) as u32;
                    let (mut k, v) = (values(kv_dim, seed), values(kv_dim, seed + 7));
                    rope(&mut k, hd, &cs, neox);
                    q8.write(depth, 0, i, &k, &v);
                    let (Rows::Q8_0(kq), Rows::Q8_0(vq)) = q8.rows(depth, 0, i + 1) else {
                        unreachable!()
                    };
                    let rb = q8.row_bytes();
                    let (mut kd, mut vd) = (vec![0f32; kv_dim], vec![0f32; kv_dim]);
                    quant::q8_0::dequantize_row(&kq[i * rb..], &mut kd);
                    quant::q8_0::dequantize_row(&vq[i * rb..], &mut vd);
                    let mut rbk = bk.clone();
                    rope(&mut rbk, hd, &cs, neox);
                    kd.iter_mut().zip(&rbk).for_each(|(x, b)| *x += b);
                    vd.iter_mut().zip(&bv).for_each(|(x, b)| *x += b);
                    f.write(depth, 0, i, &kd, &vd);
                }
            }
            // queries q8_0 holds exactly (see above)
            let qpos = [3usize, 9, 17, 23];
            let q: Vec<f32> = (0..qpos.len() * n_heads * hd)
                .map(|i| {
                    let k = if i % 32 == 3 {
                        -127
                    } else {
                        (i * 53 % 255) as i32 - 127
                    };
                    k as f32 / 128.0
                })
                .collect();
            for depth in [1, 2] {
                let mut got = vec![0f32; q.len()];
                let mut want = vec![0f32; q.len()];
                let kb = Some((&bk[..], &angles[..], neox));
                let heads = (n_heads, n_kv, hd);
                attention(
                    &q8,
                    0,
                    depth,
                    (&q, &qpos, &[(0, 0); 4]),
                    heads,
                    kb,
                    &mut got,
                );
                attention(
                    &f,
                    0,
                    depth,
                    (&q, &qpos, &[(0, 0); 4]),
                    heads,
                    None,
                    &mut want,
                );
                for row in got.chunks_exact_mut(n_heads * hd) {
                    for (h, o) in row.chunks_exact_mut(hd).enumerate() {
                        let b = &bv[h / (n_heads / n_kv) * hd..][..hd];
                        o.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                    }
                }
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "neox {neox} depth {depth} [{i}]: {a} vs {b}"
                    );
                }
            }
        }
    }
}
