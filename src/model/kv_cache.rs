//! The compact multi-depth KV cache.
//!
//! Depth 1 is dense: position p lives in slot p. Depths ≥ 2 are sparse: only the
//! hard tokens that ran that depth have a slot, appended in order with their
//! position.
//!
//! Memory follows the tokens actually cached, not the context length. Every
//! store (one depth of one layer, keys or values) is reserved up front for the
//! whole context as *zeroed* memory ([`std::alloc::alloc_zeroed`], i.e.
//! `calloc`): for large blocks the allocator maps fresh zero pages (or extends the
//! heap with them) without writing to them, so a page becomes resident only when a
//! row in it is written. All-zero bits are +0.0 in f16 and f32 alike, so the
//! zeroed block is a valid slice of either type. (`vec![f16::ZERO; n]` would
//! write every element: `f16` is not known to the standard library as a type
//! whose zero is all-zero bits.)
//!
//! Why reserve everything rather than grow in chunks as tokens arrive:
//! - the attention kernels read one contiguous slice per depth and layer
//!   ([`KvCache::rows`]); chunks would break that, and a contiguous buffer that
//!   grows by doubling would copy and allocate on the per-token path now and then;
//! - [`KvCache::append`] stays infallible: the only allocation, and so the only
//!   way to run out of memory, is [`KvCache::try_new`] at session start, where the
//!   caller can report it.
//!
//! The cost is address space: the whole context is reserved as virtual memory,
//! which fails early under strict overcommit (`vm.overcommit_memory=2`) or a low
//! `ulimit -v` even for a short conversation. Pages once written stay resident
//! until the cache is dropped (truncating keeps them for reuse). Sizes are checked
//! (`checked_mul`) and allocation failure is an error value, never an abort.

use half::f16;
use std::alloc::Layout;
use std::fmt;

/// Element type of cached keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
}

impl KvType {
    /// Bytes per cached value.
    pub fn size(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

/// Why a cache could not be reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// The cache's size in bytes does not fit in `usize`.
    TooLarge { capacity: usize, kv_dim: usize },
    /// The allocator refused to reserve the cache (`bytes` in all).
    OutOfMemory { capacity: usize, bytes: usize },
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::TooLarge { capacity, kv_dim } => write!(
                f,
                "a KV cache of {capacity} tokens × {kv_dim} values per layer is too large \
                 to address (lower the context length)"
            ),
            KvError::OutOfMemory { capacity, bytes } => write!(
                f,
                "cannot reserve {bytes} bytes of address space for a KV cache of \
                 {capacity} tokens (lower the context length)"
            ),
        }
    }
}

impl std::error::Error for KvError {}

/// Element types whose all-zero bit pattern is a valid value.
///
/// # Safety
/// Implementors must be plain data for which all-zero bytes are a valid value.
unsafe trait ZeroValid: Copy {}
// SAFETY: all-zero bits are +0.0 for both (f16 is a transparent u16).
unsafe impl ZeroValid for f32 {}
// SAFETY: as above.
unsafe impl ZeroValid for f16 {}

/// `n` zeros, allocated zeroed and not written, so untouched pages stay
/// unmapped; `None` if the allocator refuses.
fn zeroed<T: ZeroValid>(n: usize) -> Option<Vec<T>> {
    // Callers checked n * size_of::<T>() against overflow; this is a second check.
    let layout = Layout::array::<T>(n).ok()?;
    if layout.size() == 0 {
        return Some(Vec::new());
    }
    // SAFETY: the layout's size is non-zero.
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` comes from the global allocator with the layout of `[T; n]`,
    // which is the layout `Vec<T>` frees for capacity `n`; its `n` elements are
    // zero bytes, valid `T`s by `ZeroValid`; the Vec becomes its only owner.
    Some(unsafe { Vec::from_raw_parts(p, n, n) })
}

enum Store {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Store {
    fn new(ty: KvType, n: usize) -> Option<Store> {
        Some(match ty {
            KvType::F16 => Store::F16(zeroed(n)?),
            KvType::F32 => Store::F32(zeroed(n)?),
        })
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

    /// Dequantizes `out.len()` values from `at` into `out`.
    fn read(&self, at: usize, out: &mut [f32]) {
        match self {
            Store::F16(v) => {
                let n = out.len();
                for (d, s) in out.iter_mut().zip(&v[at..at + n]) {
                    *d = s.to_f32();
                }
            }
            Store::F32(v) => out.copy_from_slice(&v[at..at + out.len()]),
        }
    }

    /// Moves `n` values from `src` to `dst` as stored (the ranges may overlap).
    fn copy_within(&mut self, src: usize, dst: usize, n: usize) {
        match self {
            Store::F16(v) => v.copy_within(src..src + n, dst),
            Store::F32(v) => v.copy_within(src..src + n, dst),
        }
    }

    /// The first `n` values as stored (native byte order).
    fn bytes(&self, n: usize) -> &[u8] {
        match self {
            Store::F16(v) => {
                let v = &v[..n];
                // SAFETY: `f16` is a transparent `u16` (plain data, no padding);
                // the byte slice covers exactly the `n` values borrowed from `v`.
                unsafe {
                    std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
                }
            }
            Store::F32(v) => {
                let v = &v[..n];
                // SAFETY: `f32` is plain data without padding; the byte slice
                // covers exactly the `n` values borrowed from `v`.
                unsafe {
                    std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
                }
            }
        }
    }

    /// The first `n` values as stored, writable (any bytes are valid values).
    fn bytes_mut(&mut self, n: usize) -> &mut [u8] {
        match self {
            Store::F16(v) => {
                let v = &mut v[..n];
                let len = std::mem::size_of_val(v);
                // SAFETY: as in `bytes`, and every bit pattern is a valid `f16`;
                // the slice borrows `v` mutably, so it is the only access.
                unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), len) }
            }
            Store::F32(v) => {
                let v = &mut v[..n];
                let len = std::mem::size_of_val(v);
                // SAFETY: as in `bytes`, and every bit pattern is a valid `f32`;
                // the slice borrows `v` mutably, so it is the only access.
                unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), len) }
            }
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
    /// Reserves a cache of `capacity` tokens: `max_depth` depths of `n_layers`
    /// layers, keys and values of `kv_dim` values per token. Reserving costs
    /// address space only; memory is used as rows are written.
    pub fn try_new(
        ty: KvType,
        n_layers: usize,
        kv_dim: usize,
        capacity: usize,
        max_depth: usize,
    ) -> Result<KvCache, KvError> {
        let too_large = KvError::TooLarge { capacity, kv_dim };
        let per_store = capacity.checked_mul(kv_dim).ok_or(too_large.clone())?;
        let bytes = [ty.size(), 2, n_layers, max_depth]
            .iter()
            .try_fold(per_store, |acc, &m| acc.checked_mul(m))
            .ok_or(too_large)?;
        let oom = KvError::OutOfMemory { capacity, bytes };
        let store = || Store::new(ty, per_store).ok_or(oom.clone());
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(max_depth)
            .map_err(|_| oom.clone())?;
        for _ in 0..max_depth {
            let mut layers = Vec::new();
            layers
                .try_reserve_exact(n_layers)
                .map_err(|_| oom.clone())?;
            for _ in 0..n_layers {
                layers.push(Slot {
                    k: store()?,
                    v: store()?,
                });
            }
            slots.push(layers);
        }
        // Sparse depths hold at most one slot per token; reserved (not written)
        // now so that appending never allocates.
        let mut positions = Vec::new();
        for _ in 1..max_depth {
            let mut p = Vec::new();
            p.try_reserve_exact(capacity).map_err(|_| oom.clone())?;
            positions.push(p);
        }
        Ok(KvCache {
            ty,
            kv_dim,
            capacity,
            n_layers,
            slots,
            positions,
            len: vec![0; max_depth],
        })
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
        // Cannot overflow: try_new checked the full cache's size.
        self.len
            .iter()
            .map(|&n| n * self.kv_dim * 2 * self.ty.size() * self.n_layers)
            .collect()
    }

    /// Context shift: forgets the positions `keep..keep + drop` at every depth
    /// and moves the later ones down by `drop`, so the cache reads as if they
    /// had never been there. Depth 1 moves its slots down; a sparse depth
    /// removes its slots in the range, moves its later slots down and
    /// renumbers their positions. Every moved key row goes through
    /// `rotate(row, -drop)` (read, rotate, write back: any storage type works),
    /// which re-applies the positional rotation for its new position; values
    /// move as stored. The range is clamped to the cached positions.
    pub fn shift(&mut self, keep: usize, drop: usize, mut rotate: impl FnMut(&mut [f32], isize)) {
        let n_pos = self.len[0];
        let keep = keep.min(n_pos);
        let drop = drop.min(n_pos - keep);
        if drop == 0 {
            return;
        }
        // Slot ranges per depth: (first removed, first kept after, filled).
        let kv_dim = self.kv_dim;
        let mut row = vec![0f32; kv_dim];
        // A shift is at most ctx (< 2^24) positions: no overflow to isize.
        let delta = -(drop as isize);
        for d in 1..=self.max_depth() {
            let len = self.len[d - 1];
            let (a, b) = if d == 1 {
                (keep, keep + drop)
            } else {
                let pos = &mut self.positions[d - 2];
                let a = pos.partition_point(|&p| p < keep);
                let b = pos.partition_point(|&p| p < keep + drop);
                pos.drain(a..b);
                for p in &mut pos[a..] {
                    *p -= drop;
                }
                (a, b)
            };
            let moved = len - b;
            for s in &mut self.slots[d - 1] {
                s.v.copy_within(b * kv_dim, a * kv_dim, moved * kv_dim);
                s.k.copy_within(b * kv_dim, a * kv_dim, moved * kv_dim);
                for i in a..a + moved {
                    s.k.read(i * kv_dim, &mut row);
                    rotate(&mut row, delta);
                    s.k.write(i * kv_dim, &row);
                }
            }
            self.len[d - 1] = len - (b - a);
        }
    }

    /// Bytes of one slot's keys in one layer (values per row × bytes per value).
    pub fn row_bytes(&self) -> usize {
        self.kv_dim * self.ty.size()
    }

    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// The stored bytes of the keys and values of the first `n` slots at
    /// `depth` in `layer` (`n × row_bytes()` each), for saving a session.
    pub fn raw_rows(&self, depth: usize, layer: usize, n: usize) -> (&[u8], &[u8]) {
        let s = &self.slots[depth - 1][layer];
        let len = n * self.kv_dim;
        (s.k.bytes(len), s.v.bytes(len))
    }

    /// [`KvCache::raw_rows`], writable: restoring a saved session writes the
    /// rows back after [`KvCache::set_layout`].
    pub fn raw_rows_mut(&mut self, depth: usize, layer: usize, n: usize) -> (&mut [u8], &mut [u8]) {
        let s = &mut self.slots[depth - 1][layer];
        let len = n * self.kv_dim;
        (s.k.bytes_mut(len), s.v.bytes_mut(len))
    }

    /// Forgets everything, then marks `n_pos` dense slots at depth 1 and, at
    /// each depth d ≥ 2, one slot per position `sparse(d)` yields as filled,
    /// leaving their rows as they are. The positions must be ascending and
    /// below `n_pos` ≤ capacity; otherwise the cache is left empty and this
    /// is an error (the caller, restoring a saved session, checked them).
    pub fn set_layout<I: Iterator<Item = usize>>(
        &mut self,
        n_pos: usize,
        mut sparse: impl FnMut(usize) -> I,
    ) -> Result<(), &'static str> {
        self.truncate(0);
        if n_pos > self.capacity {
            return Err("more positions than the cache holds");
        }
        for d in 2..=self.max_depth() {
            let list = &mut self.positions[d - 2];
            for p in sparse(d) {
                // Capacity was reserved for `capacity` positions: no allocation.
                if p >= n_pos || list.last().is_some_and(|&q| q >= p) || list.len() == self.capacity
                {
                    self.truncate(0);
                    return Err("sparse positions not ascending below the token count");
                }
                list.push(p);
            }
            self.len[d - 1] = list.len();
        }
        self.len[0] = n_pos;
        Ok(())
    }
}
