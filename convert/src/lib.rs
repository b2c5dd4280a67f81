//! `tah-convert`: Hugging Face / TaH checkpoints and GGUF files to `.tah`.
//!
//! Inputs, by what the path holds:
//! - a directory with `tah_config.json`: a TaH checkpoint in the reference layout
//!   (base + `lora/` + `iter_decider.bin`);
//! - a directory with `config.json`: a plain Hugging Face model (base only);
//! - a `.gguf` file: a plain model (base only).

pub mod decider;
pub mod error;
pub mod gguf_in;
pub mod gguf_tokenizer;
pub mod hf;
pub mod hf_tokenizer;
pub mod pickle;
pub mod plan;
pub mod safetensors_in;
pub mod synthetic;
pub mod tah_ckpt;
pub mod tah_config;
pub mod torchzip;
pub mod validate;

use error::Result;

use std::path::Path;
use tah::format::{keys, GgufFile};
use tah::quant::GgmlType;

/// Which type each output tensor is stored as.
///
/// - Norms, biases and other 1-D tensors: always f32 (tiny, and precision matters).
/// - Without `--quant`: every tensor keeps its source type.
/// - With `--quant T`: the decoder's linear weights become T (q8_0, or f16, where a
///   row does not fill whole T blocks). The token embedding and the LM head keep
///   their source precision, f16 when the source is f32/bf16, unless `embd` says
///   otherwise: the depth-2 soft input mixes embedding rows, so a coarse embedding
///   would move TaH's second pass away from the reference.
/// - `--quant f32` means f32 for every tensor: the embedding and LM head too
///   (unless `embd` names another type), and the LoRA and decider matrices.
/// - Otherwise LoRA and decider tensors ignore the flags (a few MB, and the
///   decider's threshold test is sensitive): LoRA and decider matrices keep the
///   checkpoint's dtype (f32, or losslessly bf16 / f16; f64 becomes f32),
///   decider vectors are f32.
#[derive(Clone, Debug, Default)]
pub struct TypePolicy {
    pub quant: Option<GgmlType>,
    pub embd: Option<GgmlType>,
}

impl TypePolicy {
    /// Whether every tensor is to be stored as f32 (`--quant f32`).
    pub fn all_f32(&self) -> bool {
        self.quant == Some(GgmlType::F32)
    }

    pub fn base_type(&self, name: &str, dims: &[u64], src: GgmlType) -> GgmlType {
        if dims.len() < 2 {
            return GgmlType::F32;
        }
        let fits = |t: GgmlType| dims[0].is_multiple_of(t.block_len() as u64);
        let embd = name == keys::TOKEN_EMBD || name == keys::OUTPUT;
        let want = match (embd, self.quant, self.embd) {
            (true, _, Some(e)) => e,
            (true, Some(GgmlType::F32), None) => GgmlType::F32,
            (true, Some(_), None) if matches!(src, GgmlType::F32 | GgmlType::Bf16) => GgmlType::F16,
            (true, _, None) => src,
            (false, Some(q), _) => q,
            (false, None, _) => src,
        };
        if fits(want) {
            want
        } else if fits(GgmlType::Q8_0) && want != GgmlType::F32 {
            GgmlType::Q8_0
        } else {
            GgmlType::F16
        }
    }
}

/// llama.cpp's `general.file_type` for a model whose linears are mostly `ty`.
pub fn llama_ftype(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q4K => 15,
        GgmlType::Q6K => 18,
        GgmlType::Bf16 => 32,
    }
}

/// Everything a conversion can be asked for beyond the input and output.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub policy: TypePolicy,
    /// Attach random TaH parts (benchmarking only) to a base model.
    pub synthetic: Option<synthetic::SyntheticTah>,
}

/// What a finished conversion produced.
pub struct Summary {
    pub tensors: usize,
    pub bytes: u64,
}

/// Converts `input` to `out` (written atomically). `progress(done, total, name)` is
/// called as tensors are written.
pub fn convert(
    input: &Path,
    out: &Path,
    policy: &TypePolicy,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Summary> {
    let opts = Options {
        policy: policy.clone(),
        synthetic: None,
    };
    convert_with(input, out, &opts, progress)
}

/// [`convert`] with every option.
pub fn convert_with(
    input: &Path,
    out: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Summary> {
    if input.is_dir() {
        let is_tah = input.join("tah_config.json").is_file();
        let src = tah_ckpt::Source::open(input, is_tah)?;
        let plan = src.plan(&opts.policy)?;
        return finish(plan, input, out, opts, progress);
    }
    if !input.exists() {
        bail!("{}: no such file or directory", input.display());
    }
    let src = GgufFile::open(input)?;
    let plan = gguf_in::plan(&src, &opts.policy)?;
    finish(plan, input, out, opts, progress)
}

fn finish(
    mut plan: plan::Plan<'_>,
    input: &Path,
    out: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Summary> {
    if let Some(syn) = &opts.synthetic {
        if plan.get(keys::MAX_ITER).is_some() {
            bail!(
                "{}: already a TaH model; --synthetic-tah takes a base model",
                input.display()
            );
        }
        synthetic::attach(&mut plan, syn)?;
    }
    // Nothing is written unless the runtime would load the result.
    validate::check_plan(&plan)?;
    let bytes = plan::write(&plan, out, progress)?;
    Ok(Summary {
        tensors: plan.tensors.len(),
        bytes,
    })
}
