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
//! row in it is written. All-zero bits are +0.0 in f16 and f32 alike, and in
//! q8_0 a block of zero bytes has scale 0 and quants 0, i.e. 32 zeros, so the
//! zeroed block is a valid store of every type. (`vec![f16::ZERO; n]` would
//! write every element: `f16` is not known to the standard library as a type
//! whose zero is all-zero bits.)
//!
//! Types ([`KvType`]): f16 (default), f32 (the reference-parity path), and
//! q8_0 (ggml's blocks of 32 values, one f16 scale and 32 i8 quants: 34 bytes
//! where f16 takes 64), written by [`crate::quant::q8_0`]'s quantizer. A q8_0
//! block never straddles two heads: the head dimension must be a multiple of
//! 32 ([`KvType::check_head_dim`]), as llama.cpp requires of a quantized cache.
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

use crate::quant;
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::alloc::Layout;
use std::fmt;

/// Element type of cached keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
    /// ggml's q8_0 blocks ([`crate::quant::q8_0`]): 32 values in 34 bytes.
    Q8_0,
}

impl KvType {
    /// The name `--kv-type` takes (`f16`, `f32`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Values per block (1 for the float types).
    pub fn block_len(self) -> usize {
        match self {
            KvType::F16 | KvType::F32 => 1,
            KvType::Q8_0 => quant::q8_0::QK,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
            KvType::Q8_0 => quant::q8_0::BLOCK_BYTES,
        }
    }

    /// Bytes of `n` cached values, or `None` if `n` is not a whole number of
    /// blocks or the size overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_len()) {
            return None;
        }
        (n / self.block_len()).checked_mul(self.block_bytes())
    }

    /// Whether a model with heads of `head_dim` values can be cached in this
    /// type: each head must be a whole number of blocks (the attention kernels
    /// take one head's blocks at a time).
    pub fn check_head_dim(self, head_dim: usize) -> Result<(), String> {
        let bl = self.block_len();
        if head_dim.is_multiple_of(bl) {
            Ok(())
        } else {
            Err(format!(
                "a {} KV cache needs a head dimension that is a multiple of {bl}; \
                 this model's is {head_dim} (use --kv-type f16)",
                self.name()
            ))
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
    /// A row of `kv_dim` values is not a whole number of the type's blocks.
    Misaligned { ty: KvType, kv_dim: usize },
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
            KvError::Misaligned { ty, kv_dim } => write!(
                f,
                "a {} KV cache cannot hold rows of {kv_dim} values (not a multiple of {})",
                ty.name(),
                ty.block_len()
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
// SAFETY: every byte value is a valid u8 (q8_0 blocks are stored as bytes).
unsafe impl ZeroValid for u8 {}

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

/// Element types every bit pattern of which is a valid value, without
/// padding: a store of them may be viewed, and written, as bytes.
///
/// # Safety
/// Implementors must be plain data with no padding and no invalid bit patterns.
unsafe trait AnyBits: ZeroValid {}
// SAFETY: every 32-bit pattern is an f32, and the type has no padding.
unsafe impl AnyBits for f32 {}
// SAFETY: f16 is a transparent u16: every 16-bit pattern is one, no padding.
unsafe impl AnyBits for f16 {}

/// The bytes of `v` as stored (native byte order).
fn as_bytes<T: AnyBits>(v: &[T]) -> &[u8] {
    // SAFETY: `v` is `size_of_val(v)` initialised bytes of plain data without
    // padding (`AnyBits`), u8 has alignment 1, and the borrow keeps `v` alive.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// [`as_bytes`], writable.
fn as_bytes_mut<T: AnyBits>(v: &mut [T]) -> &mut [u8] {
    let n = std::mem::size_of_val(v);
    // SAFETY: as in `as_bytes`; any bytes written are a valid `T` (`AnyBits`),
    // and the exclusive borrow of `v` is the only access while this lives.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), n) }
}

/// Byte offset of value `at` in a q8_0 store (`at` is a whole number of
/// blocks: rows are, [`KvCache::try_new`] checks it).
#[inline]
fn q8_at(at: usize) -> usize {
    debug_assert!(at.is_multiple_of(quant::q8_0::QK));
    at / quant::q8_0::QK * quant::q8_0::BLOCK_BYTES
}

/// The rows of one depth of one layer, keys or values. Offsets and counts of
/// its functions are in values and whole rows (multiples of `kv_dim`).
enum Store {
    F16(Vec<f16>),
    F32(Vec<f32>),
    /// q8_0 blocks, as bytes: value `i` is in block `i / 32`.
    Q8_0(Vec<u8>),
}

impl Store {
    /// `n` zero values.
    fn new(ty: KvType, n: usize) -> Option<Store> {
        Some(match ty {
            KvType::F16 => Store::F16(zeroed(n)?),
            KvType::F32 => Store::F32(zeroed(n)?),
            KvType::Q8_0 => Store::Q8_0(zeroed(q8_at(n))?),
        })
    }

    fn view(&self, len: usize) -> Rows<'_> {
        match self {
            Store::F16(v) => Rows::F16(&v[..len]),
            Store::F32(v) => Rows::F32(&v[..len]),
            Store::Q8_0(v) => Rows::Q8_0(&v[..q8_at(len)]),
        }
    }

    /// Decodes `out.len()` values from value `at` into `out`.
    fn read(&self, at: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            Store::F16(v) => v[at..at + n].convert_to_f32_slice(out),
            Store::F32(v) => out.copy_from_slice(&v[at..at + n]),
            Store::Q8_0(v) => quant::q8_0::dequantize_row(&v[q8_at(at)..q8_at(at + n)], out),
        }
    }

    /// Stores `src` from value `at` (rounded to f16, or quantized to q8_0
    /// blocks by ggml's rule).
    fn write(&mut self, at: usize, src: &[f32]) {
        let n = src.len();
        match self {
            Store::F16(v) => {
                for (d, s) in v[at..at + n].iter_mut().zip(src) {
                    *d = f16::from_f32(*s);
                }
            }
            Store::F32(v) => v[at..at + n].copy_from_slice(src),
            Store::Q8_0(v) => quant::q8_0::quantize_row(src, &mut v[q8_at(at)..q8_at(at + n)]),
        }
    }

    /// Moves the `n` values at `src` to `dst` as stored (the ranges may overlap).
    fn copy_within(&mut self, src: usize, dst: usize, n: usize) {
        match self {
            Store::F16(v) => v.copy_within(src..src + n, dst),
            Store::F32(v) => v.copy_within(src..src + n, dst),
            Store::Q8_0(v) => v.copy_within(q8_at(src)..q8_at(src + n), q8_at(dst)),
        }
    }

    /// The first `n` values as stored (native byte order for f16/f32).
    fn bytes(&self, n: usize) -> &[u8] {
        match self {
            Store::F16(v) => as_bytes(&v[..n]),
            Store::F32(v) => as_bytes(&v[..n]),
            Store::Q8_0(v) => &v[..q8_at(n)],
        }
    }

    /// [`Store::bytes`], writable (any bytes are valid values of every type).
    fn bytes_mut(&mut self, n: usize) -> &mut [u8] {
        match self {
            Store::F16(v) => as_bytes_mut(&mut v[..n]),
            Store::F32(v) => as_bytes_mut(&mut v[..n]),
            Store::Q8_0(v) => &mut v[..q8_at(n)],
        }
    }
}

/// A read-only view of cached rows: row `i` is `kv_dim` values.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
    /// q8_0 blocks: row `i` is the `kv_dim / 32` blocks at byte
    /// `i · kv_dim / 32 · 34`, head `h` its blocks from `h · head_dim / 32`.
    Q8_0(&'a [u8]),
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
    /// Bytes of one slot's keys (or values) in one layer.
    row_bytes: usize,
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
        if !kv_dim.is_multiple_of(ty.block_len()) {
            return Err(KvError::Misaligned { ty, kv_dim });
        }
        let too_large = KvError::TooLarge { capacity, kv_dim };
        let row_bytes = ty.row_bytes(kv_dim).ok_or(too_large.clone())?;
        // values per store (each store is `capacity × row_bytes` bytes)
        let per_store = capacity.checked_mul(kv_dim).ok_or(too_large.clone())?;
        let bytes = [row_bytes, 2, n_layers, max_depth]
            .iter()
            .try_fold(capacity, |acc, &m| acc.checked_mul(m))
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
            row_bytes,
            capacity,
            n_layers,
            slots,
            positions,
            len: vec![0; max_depth],
        })
    }

    /// Bytes of one slot's keys (or values) in one layer: `kv_dim` values of
    /// the cache type (q8_0: `kv_dim / 32` blocks of 34 bytes).
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
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
            .map(|&n| n * self.row_bytes * 2 * self.n_layers)
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

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: [KvType; 3] = [KvType::F16, KvType::F32, KvType::Q8_0];

    /// `n` values with a spread of magnitudes (a block's scale follows its
    /// largest value).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                let u = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                u * (1.0 + (i % 7) as f32)
            })
            .collect()
    }

    #[test]
    fn row_bytes_follow_the_block_layout() {
        for (ty, want) in [(KvType::F16, 128), (KvType::F32, 256), (KvType::Q8_0, 68)] {
            assert_eq!(ty.row_bytes(64), Some(want), "{ty:?}");
            let c = KvCache::try_new(ty, 3, 64, 10, 2).unwrap();
            assert_eq!(c.row_bytes(), want, "{ty:?}");
        }
        assert_eq!(KvType::Q8_0.row_bytes(48), None);
        assert_eq!(KvType::F32.row_bytes(usize::MAX / 2), None);
    }

    #[test]
    fn q8_0_needs_whole_blocks_per_head() {
        assert_eq!(KvType::Q8_0.check_head_dim(64), Ok(()));
        assert_eq!(KvType::F16.check_head_dim(16), Ok(()));
        let e = KvType::Q8_0.check_head_dim(16).unwrap_err();
        assert!(e.contains("multiple of 32") && e.contains("is 16"), "{e}");
        assert_eq!(
            KvCache::try_new(KvType::Q8_0, 2, 48, 8, 1).err(),
            Some(KvError::Misaligned {
                ty: KvType::Q8_0,
                kv_dim: 48
            })
        );
    }

    #[test]
    fn bytes_per_depth_counts_q8_0_blocks() {
        let mut c = KvCache::try_new(KvType::Q8_0, 3, 64, 10, 2).unwrap();
        c.append(1, &[0, 1, 2, 3]);
        c.append(2, &[2]);
        // 2 blocks of 34 bytes per row, keys and values, 3 layers
        assert_eq!(c.bytes_per_depth(), vec![4 * 68 * 2 * 3, 68 * 2 * 3]);
    }

    #[test]
    fn q8_0_rows_round_trip_through_the_quant_module() {
        let kv_dim = 96;
        let mut c = KvCache::try_new(KvType::Q8_0, 2, kv_dim, 8, 2).unwrap();
        let (k, v) = (values(3 * kv_dim, 1), values(3 * kv_dim, 2));
        c.append(1, &[0, 1, 2]);
        for i in 0..3 {
            let r = i * kv_dim..(i + 1) * kv_dim;
            c.write(1, 1, i, &k[r.clone()], &v[r]);
        }
        let s = &c.slots[0][1];
        for (store, src) in [(&s.k, &k), (&s.v, &v)] {
            // the stored bytes are the scalar reference quantizer's
            let mut want = vec![0u8; 3 * 3 * 34];
            quant::q8_0::quantize_row_scalar(src, &mut want);
            assert_eq!(store.bytes(3 * kv_dim), &want[..]);
            // and read back as its dequantizer decodes them
            let mut deq = vec![0f32; 3 * kv_dim];
            quant::q8_0::dequantize_row(&want, &mut deq);
            let mut got = vec![0f32; 2 * kv_dim];
            store.read(kv_dim, &mut got);
            assert_eq!(got, deq[kv_dim..]);
            // within 0.57 of a block's step (half a step, plus the scale's
            // rounding to f16: at most 127 · 2⁻¹¹ steps)
            for (b, (x, y)) in src.chunks(32).zip(deq.chunks(32)).enumerate() {
                let step = x.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                for (x, y) in x.iter().zip(y) {
                    assert!((x - y).abs() <= 0.57 * step, "block {b}: {x} → {y}");
                }
            }
        }
        // an unwritten row is zeros
        let mut z = vec![1f32; kv_dim];
        c.slots[0][0].k.read(0, &mut z);
        assert!(z.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn float_rows_read_back() {
        let kv_dim = 32;
        let x = values(2 * kv_dim, 5);
        for ty in [KvType::F16, KvType::F32] {
            let mut st = Store::new(ty, 4 * kv_dim).unwrap();
            st.write(kv_dim, &x);
            let mut got = vec![0f32; 2 * kv_dim];
            st.read(kv_dim, &mut got);
            let want: Vec<f32> = match ty {
                KvType::F16 => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
                _ => x.clone(),
            };
            assert_eq!(got, want, "{ty:?}");
        }
    }

    #[test]
    fn copy_within_moves_rows_exactly() {
        let kv_dim = 64;
        for ty in TYPES {
            let mut st = Store::new(ty, 6 * kv_dim).unwrap();
            st.write(0, &values(5 * kv_dim, 9));
            let rb = ty.row_bytes(kv_dim).unwrap();
            let before = st.bytes(6 * kv_dim).to_vec();
            // rows 1..4 → 2..5 (overlapping, forwards), then 3..5 → 0..2
            st.copy_within(kv_dim, 2 * kv_dim, 3 * kv_dim);
            let mut want = before.clone();
            want[2 * rb..5 * rb].copy_from_slice(&before[rb..4 * rb]);
            assert_eq!(st.bytes(6 * kv_dim), &want[..], "{ty:?} forwards");
            st.copy_within(3 * kv_dim, 0, 2 * kv_dim);
            let mid = want.clone();
            want[..2 * rb].copy_from_slice(&mid[3 * rb..5 * rb]);
            assert_eq!(st.bytes(6 * kv_dim), &want[..], "{ty:?} backwards");
        }
    }

    #[test]
    fn bytes_mut_writes_what_bytes_and_read_see() {
        let kv_dim = 32;
        for ty in TYPES {
            let mut src = Store::new(ty, 2 * kv_dim).unwrap();
            src.write(0, &values(2 * kv_dim, 3));
            let mut dst = Store::new(ty, 3 * kv_dim).unwrap();
            let n = src.bytes(2 * kv_dim).len();
            assert_eq!(n, 2 * ty.row_bytes(kv_dim).unwrap(), "{ty:?}");
            dst.bytes_mut(2 * kv_dim)
                .copy_from_slice(src.bytes(2 * kv_dim));
            let (mut a, mut b) = (vec![0f32; 2 * kv_dim], vec![0f32; 2 * kv_dim]);
            src.read(0, &mut a);
            dst.read(0, &mut b);
            assert_eq!(a, b, "{ty:?}");
        }
    }
}
