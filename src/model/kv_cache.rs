//! The compact multi-depth KV cache.
//!
//! Depth 1 is dense: position p lives in slot p. Depths ≥ 2 are sparse: only the
//! hard tokens that ran that depth have a slot, appended in order with their
//! position. All slots are reserved up front (a session never allocates per
//! token); the pages of unused slots are never touched, so they cost no memory.

use half::f16;

/// Element type of cached keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
}

enum Store {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Store {
    fn new(ty: KvType, n: usize) -> Store {
        // vec![0; n] is a zeroed allocation: untouched pages are not resident.
        match ty {
            KvType::F16 => Store::F16(vec![f16::ZERO; n]),
            KvType::F32 => Store::F32(vec![0.0; n]),
        }
    }

    fn view(&self, len: usize) -> Rows<'_> {
        match self {
            Store::F16(v) => Rows::F16(&v[..len]),
            Store::F32(v) => Rows::F32(&v[..len]),
        }
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F16(v) => {
                for (d, s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(*s);
                }
            }
            Store::F32(v) => v[at..at + src.len()].copy_from_slice(src),
        }
    }
}

/// A read-only view of cached rows: row `i` is `kv_dim` values.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
}

/// One depth of one layer.
struct Slot {
    k: Store,
    v: Store,
}

/// Cached keys/values for every layer and depth.
pub struct KvCache {
    pub ty: KvType,
    pub kv_dim: usize,
    pub capacity: usize,
    n_layers: usize,
    /// `slots[depth - 1][layer]`.
    slots: Vec<Vec<Slot>>,
    /// Positions of the sparse slots of depths ≥ 2: `positions[depth - 2][i]`.
    positions: Vec<Vec<usize>>,
    /// Filled slots per depth (depth 1: the number of positions).
    len: Vec<usize>,
}

impl KvCache {
    pub fn new(
        ty: KvType,
        n_layers: usize,
        kv_dim: usize,
        capacity: usize,
        max_depth: usize,
    ) -> KvCache {
        let slots = (0..max_depth)
            .map(|_| {
                (0..n_layers)
                    .map(|_| Slot {
                        k: Store::new(ty, capacity * kv_dim),
                        v: Store::new(ty, capacity * kv_dim),
                    })
                    .collect()
            })
            .collect();
        let positions = (1..max_depth)
            .map(|_| Vec::with_capacity(capacity))
            .collect();
        KvCache {
            ty,
            kv_dim,
            capacity,
            n_layers,
            slots,
            positions,
            len: vec![0; max_depth],
        }
    }

    pub fn max_depth(&self) -> usize {
        self.slots.len()
    }

    /// Filled slots at `depth` (1-based).
    pub fn len(&self, depth: usize) -> usize {
        self.len[depth - 1]
    }

    pub fn is_empty(&self) -> bool {
        self.len[0] == 0
    }

    /// Positions of the slots at a depth ≥ 2 (ascending).
    pub fn positions(&self, depth: usize) -> &[usize] {
        &self.positions[depth - 2]
    }

    /// Reserves `n` new slots at `depth` for tokens at `pos` (ascending, after
    /// every cached one); returns the index of the first.
    pub fn append(&mut self, depth: usize, pos: &[usize]) -> usize {
        let first = self.len[depth - 1];
        assert!(
            first + pos.len() <= self.capacity,
            "KV cache full (callers check the context)"
        );
        if depth >= 2 {
            self.positions[depth - 2].extend_from_slice(pos);
        }
        self.len[depth - 1] += pos.len();
        first
    }

    /// Stores the key and value rows of slot `i` at `depth` in `layer`.
    pub fn write(&mut self, depth: usize, layer: usize, i: usize, k: &[f32], v: &[f32]) {
        let s = &mut self.slots[depth - 1][layer];
        s.k.write(i * self.kv_dim, k);
        s.v.write(i * self.kv_dim, v);
    }

    /// Keys and values of the first `n` slots at `depth` in `layer`.
    pub fn rows(&self, depth: usize, layer: usize, n: usize) -> (Rows<'_>, Rows<'_>) {
        let s = &self.slots[depth - 1][layer];
        let len = n * self.kv_dim;
        (s.k.view(len), s.v.view(len))
    }

    /// Forgets everything after the first `n_pos` positions (all depths).
    pub fn truncate(&mut self, n_pos: usize) {
        self.len[0] = self.len[0].min(n_pos);
        for d in 2..=self.max_depth() {
            let keep = self.positions[d - 2].partition_point(|&p| p < n_pos);
            self.positions[d - 2].truncate(keep);
            self.len[d - 1] = keep;
        }
    }

    /// Bytes of filled slots at each depth (keys + values, all layers).
    pub fn bytes_per_depth(&self) -> Vec<usize> {
        let elem = match self.ty {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        self.len
            .iter()
            .map(|&n| n * self.kv_dim * 2 * elem * self.n_layers)
            .collect()
    }
}
