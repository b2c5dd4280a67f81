//! Tensor element types and their GGUF block layouts.
//!
//! Every quantized type stores a row as a sequence of fixed-size blocks of
//! `block_len()` values occupying `block_bytes()` bytes; the byte layouts are
//! ggml's (they are what GGUF files hold). One file per format holds its block
//! layout, its dequantizer and, where we produce it, its quantizer.

use std::fmt;

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
        if n % bl != 0 {
            return None;
        }
        (n / bl).checked_mul(self.block_bytes() as u64)
    }

    /// Whether [`quantize`] can produce this type.
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
/// Panics if the lengths disagree: callers check sizes against the file before.
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    let _ = (ty, src, out);
    unimplemented!("filled in by the quant module")
}

/// Encodes `src` (a whole number of blocks) as type `ty` into `out` (exactly
/// `ty.row_bytes(src.len())` bytes), with ggml's rounding so the bytes equal
/// `ggml_quantize_chunk`'s.
pub fn quantize(ty: GgmlType, src: &[f32], out: &mut [u8]) {
    let _ = (ty, src, out);
    unimplemented!("filled in by the quant module")
}
