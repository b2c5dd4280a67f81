//! `q8_K`: the activation format paired with the k-quants (`q4_k`, `q6_k`).
//! Never stored in our files; GGUF type id 15.
//!
//! ```text
//! field  bytes  meaning
//! -----  -----  -----------------------------------------------------------
//! d      4      f32 scale
//! qs     256    i8 quants; value j = qs[j] * d
//! bsums  32     16 × i16: bsums[g] = Σ qs[16g..16g+16] (for the k-quants' mins)
//! total  292
//! ```
//!
//! Quantizer (ggml `quantize_row_q8_K_ref`): `max` = the value of largest
//! magnitude (first one on ties), `iscale = -127 / max`,
//! `qs[j] = min(127, nearest_int(iscale · x[j]))`, `d = 1 / iscale`; an
//! all-zero block stores `d = 0` and zero quants (and leaves `bsums` as they
//! were in ggml; we write zeros).

use super::{assert_blocks, nearest_int};

/// ggml's type id (`GGML_TYPE_Q8_K`).
pub const GGML_ID: u32 = 15;
/// Values per block.
pub const QK_K: usize = 256;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 292;
/// Offset of `qs` in a block.
pub const QS: usize = 4;
/// Offset of `bsums` in a block.
pub const BSUMS: usize = 4 + 256;

/// Encodes whole blocks of `src` into `out`, byte-identical to ggml (except
/// the `bsums` of all-zero blocks, which ggml leaves unwritten); with AVX2
/// where the CPU has it (same bytes as [`quantize_row_scalar`]).
pub fn quantize_row(src: &[f32], out: &mut [u8]) {
    assert_blocks("q8_K", src.len(), out.len(), QK_K, BLOCK_BYTES);
    #[cfg(target_arch = "x86_64")]
    if super::x86::has_avx2() {
        for (x, b) in src
            .chunks_exact(QK_K)
            .zip(out.chunks_exact_mut(BLOCK_BYTES))
        {
            // SAFETY: AVX2 detected above; the chunks have exactly these sizes.
            unsafe { super::x86::q8k_block(x.try_into().unwrap(), b.try_into().unwrap()) }
        }
        return;
    }
    quantize_row_scalar(src, out)
}

/// The scalar [`quantize_row`] (the reference for the SIMD code).
pub fn quantize_row_scalar(src: &[f32], out: &mut [u8]) {
    assert_blocks("q8_K", src.len(), out.len(), QK_K, BLOCK_BYTES);
    for (x, b) in src
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in x {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b[QS..QS + QK_K].iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for g in 0..QK_K / 16 {
            let s: i32 = b[QS + 16 * g..QS + 16 * g + 16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            b[BSUMS + 2 * g..BSUMS + 2 * g + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// Decodes whole blocks (`qs[j] * d`), for tests.
pub fn dequantize_row(src: &[u8], out: &mut [f32]) {
    assert_blocks("q8_K", out.len(), src.len(), QK_K, BLOCK_BYTES);
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (o, &q) in y.iter_mut().zip(&b[QS..QS + QK_K]) {
            *o = (q as i8) as f32 * d;
        }
    }
}
