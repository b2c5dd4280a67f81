//! Tensor element types and their GGUF block layouts.
//!
//! Every quantized type stores a row as a sequence of fixed-size blocks of
//! `block_len()` values occupying `block_bytes()` bytes; the byte layouts are
//! ggml's (they are what GGUF files hold). One file per format holds its block
//! layout, its dequantizer and, where we produce it, its quantizer.

use std::fmt;

pub mod bf16;
pub mod f16;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q6_k;
pub mod q8_0;
// Activation formats only (ggml's "vec_dot types" for q4_1/q5_1 and the
// k-quants): the kernels quantize activation rows into them; they are not
// tensor types of our files, so they are not in `GgmlType`.
pub mod q8_1;
pub mod q8_k;
#[cfg(target_arch = "x86_64")]
mod x86;

/// A tensor element type, numbered as in ggml's `enum ggml_type` (the numbers are
/// what GGUF files store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q6K,
    Bf16,
}

/// All types we know, for iteration in tests and help text.
pub const ALL_TYPES: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4K,
    GgmlType::Q6K,
];

impl GgmlType {
    /// The type for a ggml type id, or `None` for ids we do not support.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
            30 => GgmlType::Bf16,
            _ => return None,
        })
    }

    /// The ggml type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q6K => 14,
            GgmlType::Bf16 => 30,
        }
    }

    /// ggml's lower-case name (`q4_k`, `bf16`, ...), as used on our command line.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q4K => "q4_k",
            GgmlType::Q6K => "q6_k",
            GgmlType::Bf16 => "bf16",
        }
    }

    /// Parses a name as printed by [`GgmlType::name`] (case-insensitive).
    pub fn from_name(s: &str) -> Option<GgmlType> {
        let s = s.to_ascii_lowercase();
        ALL_TYPES.iter().copied().find(|t| t.name() == s)
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                32
            }
            GgmlType::Q4K | GgmlType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::Bf16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4K => 144,
            GgmlType::Q6K => 210,
        }
    }

    /// Bytes of one row of `n` values, or `None` if `n` is not a whole number of
    /// blocks or the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bl = self.block_len() as u64;
        if !n.is_multiple_of(bl) {
            return None;
        }
        (n / bl).checked_mul(self.block_bytes() as u64)
    }

    /// Whether [`quantize`] can produce this type. True for every type: each
    /// quantizer is byte-identical to ggml's reference quantizer (checked
    /// against golden vectors from ggml in `tests/quant_golden.rs`).
    pub fn can_quantize(self) -> bool {
        true
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes `out.len()` values of type `ty` from `src` (which must hold exactly
/// `ty.row_bytes(out.len())` bytes).
///
/// The results are bit-identical to ggml's `to_float` for the type
/// (`dequantize_row_*` in ggml-quants.c, `ggml_fp16_to_fp32_row`, ...).
///
/// Panics if the lengths disagree: callers check sizes against the file before.
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    check_lengths(ty, out.len(), src.len());
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => f16::dequantize_row(src, out),
        GgmlType::Bf16 => bf16::dequantize_row(src, out),
        GgmlType::Q8_0 => q8_0::dequantize_row(src, out),
        GgmlType::Q4_0 => q4_0::dequantize_row(src, out),
        GgmlType::Q4_1 => q4_1::dequantize_row(src, out),
        GgmlType::Q5_0 => q5_0::dequantize_row(src, out),
        GgmlType::Q5_1 => q5_1::dequantize_row(src, out),
        GgmlType::Q4K => q4_k::dequantize_row(src, out),
        GgmlType::Q6K => q6_k::dequantize_row(src, out),
    }
}

/// Encodes `src` (a whole number of blocks) as type `ty` into `out` (exactly
/// `ty.row_bytes(src.len())` bytes), with ggml's rounding so the bytes equal
/// `ggml_quantize_chunk`'s without an importance matrix (which runs the
/// `quantize_row_*_ref` reference quantizers for every type here).
///
/// Panics if the lengths disagree, or if `src.len()` is not a whole number of
/// blocks. [`GgmlType::can_quantize`] is true for every type, so it never panics
/// for want of a quantizer.
pub fn quantize(ty: GgmlType, src: &[f32], out: &mut [u8]) {
    check_lengths(ty, src.len(), out.len());
    match ty {
        GgmlType::F32 => {
            for (o, x) in out.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::F16 => f16::quantize_row(src, out),
        GgmlType::Bf16 => bf16::quantize_row(src, out),
        GgmlType::Q8_0 => q8_0::quantize_row(src, out),
        GgmlType::Q4_0 => q4_0::quantize_row(src, out),
        GgmlType::Q4_1 => q4_1::quantize_row(src, out),
        GgmlType::Q5_0 => q5_0::quantize_row(src, out),
        GgmlType::Q5_1 => q5_1::quantize_row(src, out),
        GgmlType::Q4K => q4_k::quantize_row(src, out),
        GgmlType::Q6K => q6_k::quantize_row(src, out),
    }
}

/// Decodes a whole tensor of `n` values into a new vector (see [`dequantize`]).
pub fn dequantize_to_vec(ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize(ty, src, &mut out);
    out
}

fn check_lengths(ty: GgmlType, values: usize, bytes: usize) {
    match ty.row_bytes(values as u64) {
        Some(b) if b == bytes as u64 => {}
        Some(b) => panic!("{ty}: {values} values take {b} bytes, got {bytes}"),
        None => panic!(
            "{ty}: {values} values is not a whole number of blocks of {}",
            ty.block_len()
        ),
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the block formats: C's float-to-integer behaviour.

/// C's `(int)f` as compiled for x86-64 (`cvttss2si`): truncation toward zero,
/// and `INT_MIN` for NaN or out-of-range values (undefined behaviour in C, but
/// this is what ggml's builds do). The quantizers narrow the result further
/// (`(int8_t)`, `(uint8_t)`) by keeping the low bits, which Rust's `as` on an
/// `i32` also does.
#[inline]
pub(crate) fn c_trunc(f: f32) -> i32 {
    // NaN is in no range, so it lands in the else branch too.
    if (-2_147_483_648.0..2_147_483_648.0).contains(&f) {
        f as i32
    } else {
        i32::MIN
    }
}

/// ggml's `nearest_int`: round to nearest, ties to even, by adding 1.5 * 2^23
/// and reading the low mantissa bits. Valid for `|f| <= 4194303`, which the
/// k-quant callers guarantee.
#[inline]
pub(crate) fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000
}

/// Panics unless `values` and `bytes` are the same whole number of blocks of
/// `qk` values / `block_bytes` bytes. Returns the number of blocks.
#[inline]
pub(crate) fn assert_blocks(
    name: &str,
    values: usize,
    bytes: usize,
    qk: usize,
    block_bytes: usize,
) -> usize {
    let nb = values / qk;
    assert!(
        nb * qk == values && nb * block_bytes == bytes,
        "{name}: {values} values and {bytes} bytes are not the same whole number of blocks \
         ({qk} values, {block_bytes} bytes each)"
    );
    nb
}

/// Reads the little-endian f16 at `b[0..2]` as f32.
#[inline]
pub(crate) fn read_f16(b: &[u8]) -> f32 {
    f16::to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// Writes `x` rounded to f16 (ggml's conversion) at `b[0..2]`.
#[inline]
pub(crate) fn write_f16(b: &mut [u8], x: f32) {
    b[..2].copy_from_slice(&f16::from_f32(x).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        let cases = [
            (2.5, 2),
            (3.5, 4),
            (-2.5, -2),
            (-3.5, -4),
            (0.49999997, 0),
            (-0.5, 0),
            (7.0, 7),
        ];
        for (x, want) in cases {
            assert_eq!(nearest_int(x), want, "nearest_int({x})");
        }
    }

    #[test]
    fn c_trunc_is_cvttss2si() {
        assert_eq!(c_trunc(-7.9), -7);
        assert_eq!(c_trunc(16.49), 16);
        assert_eq!(c_trunc(f32::NAN), i32::MIN);
        assert_eq!(c_trunc(3e9), i32::MIN);
        assert_eq!(c_trunc(-3e9), i32::MIN);
    }

    #[test]
    fn zeros_stay_zero_and_ones_stay_close() {
        for ty in ALL_TYPES {
            let n = 256;
            let x: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 1.0 } else { 0.0 }).collect();
            let mut bytes = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
            quantize(ty, &x, &mut bytes);
            let back = dequantize_to_vec(ty, &bytes, n);
            // zeros stay zero; ones come back within the f16 scale error
            for (i, (&a, &b)) in x.iter().zip(&back).enumerate() {
                if a == 0.0 {
                    assert_eq!(b, 0.0, "{ty} value {i}"); // may be -0.0 (q4_0: (8 - 8) * -d)
                } else {
                    assert!((a - b).abs() <= 1.0 / 256.0, "{ty} value {i}: {b}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "not a whole number of blocks")]
    fn partial_block_panics() {
        let mut out = [0f32; 16];
        dequantize(GgmlType::Q8_0, &[0u8; 17], &mut out);
    }
}
