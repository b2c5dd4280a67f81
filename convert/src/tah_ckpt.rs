//! Hugging Face model directories, plain or TaH (the reference layout:
//! base safetensors + `lora/` (PEFT) + `iter_decider.bin` + `tah_config.json`).

use crate::bail;
use crate::decider::{load_iter_decider, merge_settings, DeciderSettings, PickledDecider};
use crate::error::{Error, Result};
use crate::hf::{self, HfConfig};
use crate::pickle::DType;
use crate::plan::{Data, Plan};
use crate::safetensors_in::Safetensors;
use crate::tah_config::TahConfig;
use crate::TypePolicy;
use safetensors::Dtype;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use tah::format::{keys, MetaValue};
use tah::quant::GgmlType;

/// The TaH parts of a checkpoint.
pub struct TahParts {
    pub lora: Safetensors,
    pub rank: usize,
    pub alpha: f64,
    pub input_topk: usize,
    /// Decider settings after the reference's precedence rules.
    pub settings: DeciderSettings,
    pub decider: PickledDecider,
}

pub struct Source {
    pub dir: PathBuf,
    pub config: HfConfig,
    pub base: Safetensors,
    pub tah: Option<TahParts>,
}

impl Source {
    pub fn open(dir: &Path, is_tah: bool) -> Result<Source> {
        let config = HfConfig::load(dir)?;
        let base = Safetensors::open_model_dir(dir)?;
        let tah = if is_tah { Some(open_tah(dir)?) } else { None };
        Ok(Source {
            dir: dir.to_path_buf(),
            config,
            base,
            tah,
        })
    }

    pub fn plan(&self, policy: &TypePolicy) -> Result<Plan<'_>> {
        let c = &self.config;
        let mut plan = Plan::default();
        hf::set_arch_metadata(&mut plan, c)?;
        let name = self
            .dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
        if let Some(n) = name {
            plan.set(keys::NAME, MetaValue::String(n));
        }
        if !crate::hf_tokenizer::add_tokenizer(&mut plan, &self.dir)? {
            eprintln!(
                "note: {} has no tokenizer.json: the model can only be driven with token ids",
                self.dir.display()
            );
        }
        hf::add_base_tensors(&mut plan, c, &self.base, policy)?;
        let main_ty = plan
            .tensor(&keys::blk(0, "attn_q", "weight"))
            .map(|t| t.ty)
            .unwrap_or(GgmlType::F32);
        plan.set(keys::FILE_TYPE, MetaValue::U32(crate::llama_ftype(main_ty)));
        if let Some(t) = &self.tah {
            add_tah(&mut plan, c, t, policy.all_f32())?;
        }
        Ok(plan)
    }
}

fn open_tah(dir: &Path) -> Result<TahParts> {
    let lora_dir = dir.join("lora");
    let lora = Safetensors::open_file(&lora_dir.join("adapter_model.safetensors"))?;
    let cfg_path = lora_dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| Error::new(format!("{}: {e}", cfg_path.display())))?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::new(format!("{}: {e}", cfg_path.display())))?;
    let rank = cfg
        .get("r")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::new(format!("{}: no integer \"r\"", cfg_path.display())))?;
    let alpha = cfg
        .get("lora_alpha")
        .and_then(|v| v.as_f64())
        .ok_or_else(|| Error::new(format!("{}: no number \"lora_alpha\"", cfg_path.display())))?;
    check_adapter_config(&cfg).map_err(|e| Error::new(format!("{}: {e}", cfg_path.display())))?;
    for pat in ["rank_pattern", "alpha_pattern"] {
        if cfg
            .get(pat)
            .and_then(|v| v.as_object())
            .is_some_and(|o| !o.is_empty())
        {
            bail!("{}: per-module {pat} is not supported", cfg_path.display());
        }
    }
    if rank == 0 {
        bail!("{}: r = 0", cfg_path.display());
    }
    let cfg_path = dir.join("tah_config.json");
    let config = TahConfig::load(&cfg_path).map_err(|e| Error::new(e.to_string()))?;
    let decider_path = dir.join("iter_decider.bin");
    let decider = load_iter_decider(&decider_path)
        .map_err(|e| Error::new(format!("{}: {e}", decider_path.display())))?;
    let settings = merge_settings(&decider, &config)
        .map_err(|e| Error::new(format!("{}: {e}", decider_path.display())))?;
    if config.adapter_kwargs.r != rank as usize {
        bail!(
            "tah_config.json adapter_kwargs.r = {} but lora/adapter_config.json r = {rank}",
            config.adapter_kwargs.r
        );
    }
    if settings.max_iter == 0 {
        bail!("{}: max_iter must be at least 1", cfg_path.display());
    }
    Ok(TahParts {
        lora,
        rank: rank as usize,
        alpha,
        input_topk: config.input_updater_topk(),
        settings,
        decider,
    })
}

/// PEFT `adapter_config.json` settings that change what the adapter computes
/// and that the engine does not implement are errors: converting them would
/// give a file whose depth-2 pass silently differs from the checkpoint's.
/// Settings that only matter for training are accepted (`lora_dropout` with a
/// note: dropout is off at inference).
pub fn check_adapter_config(cfg: &serde_json::Value) -> Result<()> {
    let flag = |k: &str| cfg.get(k).and_then(|v| v.as_bool()) == Some(true);
    let set = |k: &str| match cfg.get(k) {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(serde_json::Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    };
    if flag("use_rslora") {
        bail!("use_rslora = true is not supported (it scales LoRA by alpha/sqrt(r), the engine by alpha/r)");
    }
    if flag("use_dora") {
        bail!("use_dora = true is not supported (DoRA's magnitude vectors are not carried)");
    }
    if flag("fan_in_fan_out") {
        bail!("fan_in_fan_out = true is not supported (transposed, Conv1D-style weights)");
    }
    match cfg.get("bias") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(b)) if b == "none" => {}
        Some(b) => {
            bail!("bias = {b} is not supported (trained biases are not carried; only \"none\")")
        }
    }
    if flag("lora_bias") {
        bail!("lora_bias = true is not supported (LoRA B biases are not carried)");
    }
    for k in [
        "modules_to_save",
        "trainable_token_indices",
        "layer_replication",
    ] {
        if set(k) {
            bail!(
                "{k} = {} is not supported (only LoRA matrices are carried)",
                cfg[k]
            );
        }
    }
    let known: Vec<&str> = keys::LINEARS
        .iter()
        .map(|(_, hf)| hf.rsplit('.').next().unwrap_or(hf))
        .collect();
    match cfg.get("target_modules") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) if s == "all-linear" => {}
        Some(serde_json::Value::Array(a)) => {
            for m in a {
                let name = m.as_str().unwrap_or("");
                if !known.contains(&name) {
                    bail!(
                        "target_modules entry {m} is not supported (the engine adapts {})",
                        known.join(", ")
                    );
                }
            }
        }
        Some(v) => bail!(
            "target_modules = {v} is not supported (a list of {} or \"all-linear\")",
            known.join(", ")
        ),
    }
    if let Some(p) = cfg.get("lora_dropout").and_then(|v| v.as_f64()) {
        if p != 0.0 {
            eprintln!("note: adapter_config.json lora_dropout = {p} is ignored (training only)");
        }
    }
    Ok(())
}

/// PEFT's key for a LoRA matrix of a linear.
fn peft_key(layer: usize, hf_module: &str, ab: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{hf_module}.lora_{ab}.weight")
}

/// `all_f32`: `--quant f32`, every matrix stored as f32.
fn add_tah<'a>(plan: &mut Plan<'a>, c: &HfConfig, t: &'a TahParts, all_f32: bool) -> Result<()> {
    let s = &t.settings;
    if s.hidden_states_size != c.hidden_size {
        bail!(
            "decider hidden_states_size {} differs from the model's hidden_size {}",
            s.hidden_states_size,
            c.hidden_size
        );
    }
    plan.set(keys::TAH_VERSION, MetaValue::U32(1));
    plan.set(keys::MAX_ITER, MetaValue::U32(s.max_iter));
    plan.set(keys::INPUT_TOPK, crate::plan::uint(t.input_topk));
    plan.set(keys::LORA_RANK, crate::plan::uint(t.rank));
    plan.set(keys::LORA_ALPHA, MetaValue::F32(t.alpha as f32));

    // The adapted linears: those with LoRA matrices in layer 0; every layer must
    // then have the same set.
    let targets: Vec<(&str, &str)> = keys::LINEARS
        .iter()
        .copied()
        .filter(|(_, hf)| t.lora.get(&peft_key(0, hf, "A")).is_some())
        .collect();
    if targets.is_empty() {
        bail!("lora/adapter_model.safetensors: no LoRA matrices for layer 0");
    }
    plan.set(
        keys::LORA_TARGETS,
        MetaValue::Array(
            targets
                .iter()
                .map(|(g, _)| MetaValue::String(g.to_string()))
                .collect(),
        ),
    );
    let known: usize = c.num_hidden_layers * targets.len() * 2;
    let lora_count = t.lora.names().count();
    if lora_count != known {
        bail!("lora/adapter_model.safetensors: {lora_count} tensors, expected {known} ({} linears × 2 × {} layers)", targets.len(), c.num_hidden_layers);
    }
    for l in 0..c.num_hidden_layers {
        for (stem, hf_module) in &targets {
            let base = plan.tensor(&keys::blk(l, stem, "weight")).ok_or_else(|| {
                Error::new(format!(
                    "no base tensor for LoRA target {stem} in layer {l}"
                ))
            })?;
            let (n_in, n_out) = (base.dims[0], base.dims[1]);
            for (ab, name, shape) in [
                ("A", keys::lora_a(l, stem), [t.rank as u64, n_in]),
                ("B", keys::lora_b(l, stem), [n_out, t.rank as u64]),
            ] {
                let key = peft_key(l, hf_module, ab);
                let st = t
                    .lora
                    .get(&key)
                    .ok_or_else(|| Error::new(format!("lora: missing tensor '{key}'")))?;
                let got: Vec<u64> = st.shape.iter().map(|&d| d as u64).collect();
                if got != shape {
                    bail!("lora: tensor '{key}' has shape {got:?}, expected {shape:?}");
                }
                // llama: the converter stores q/k rows in ggml's adjacent-pair RoPE
                // order (hf::permute_rows_for_rope), so the output rows of the q/k
                // LoRA B matrices must be permuted the same way.
                let rope_heads = match (c.model_type.as_str(), *stem, ab) {
                    ("llama", "attn_q", "B") => Some(c.num_attention_heads),
                    ("llama", "attn_k", "B") => Some(c.n_kv_heads()),
                    _ => None,
                };
                let loader: crate::plan::Loader<'a> = match rope_heads {
                    Some(heads) => {
                        let cols = t.rank;
                        Box::new(move || {
                            Ok(Data::F32(hf::permute_rows_for_rope(
                                &t.lora.f32(&key)?,
                                heads,
                                cols,
                            )))
                        })
                    }
                    None => Box::new(move || t.lora.data(&key)),
                };
                // A 16-bit adapter keeps its type (lossless), f32 and f64 are f32.
                let ty = match st.dtype {
                    Dtype::BF16 if !all_f32 => GgmlType::Bf16,
                    Dtype::F16 if !all_f32 => GgmlType::F16,
                    _ => GgmlType::F32,
                };
                plan.push(name, vec![shape[1], shape[0]], ty, loader);
            }
        }
    }

    plan.set(
        keys::DECIDER_CLASS,
        MetaValue::String("MLPIterDecider".into()),
    );
    // The threshold as the checkpoint holds it (rounded to its dtype; exact in f32).
    plan.set(
        keys::DECIDER_THRESHOLD,
        MetaValue::F32(s.threshold_in_dtype as f32),
    );
    let dtype = match s.dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
    };
    plan.set(keys::DECIDER_DTYPE, MetaValue::String(dtype.into()));
    plan.set(keys::DECIDER_TOPK, crate::plan::uint(s.topk));
    let layers = &s.hidden_states_layer_nums;
    plan.set(
        keys::DECIDER_LAYERS,
        MetaValue::Array(layers.iter().map(|&l| crate::plan::uint(l)).collect()),
    );
    plan.set(
        keys::DECIDER_HIDDEN_DIMS,
        MetaValue::Array(
            s.hidden_dims
                .iter()
                .map(|&d| crate::plan::uint(d))
                .collect(),
        ),
    );
    plan.set(
        keys::DECIDER_EXPANSION,
        crate::plan::uint(s.expansion_factor),
    );
    plan.set(
        keys::DECIDER_NORMALIZE_INPUT,
        MetaValue::Bool(s.normalize_input),
    );
    if layers.iter().any(|&l| l > c.num_hidden_layers) {
        bail!(
            "decider hidden_states_layer_nums {layers:?} exceed the model's {} layers",
            c.num_hidden_layers
        );
    }
    if s.topk > c.vocab_size || t.input_topk > c.vocab_size || t.input_topk == 0 {
        bail!(
            "decider top-k {} / input top-k {} do not fit the vocabulary {}",
            s.topk,
            t.input_topk,
            c.vocab_size
        );
    }
    for tensor in &t.decider.state_dict {
        if tensor.name == "threshold" {
            continue; // carried as tah.decider.threshold
        }
        let dims: Vec<u64> = if tensor.shape.is_empty() {
            vec![1]
        } else {
            tensor.shape.iter().rev().map(|&d| d as u64).collect()
        };
        let values = &tensor.data;
        // Matrices keep a 16-bit checkpoint's type (lossless: the values came
        // from it; the plan rounds the f32 copy back), so the engine reads half
        // the bytes per token; vectors and f32 checkpoints stay f32.
        let ty = match tensor.dtype {
            DType::BF16 if tensor.shape.len() == 2 && !all_f32 => GgmlType::Bf16,
            DType::F16 if tensor.shape.len() == 2 && !all_f32 => GgmlType::F16,
            _ => GgmlType::F32,
        };
        plan.push(
            format!("{}{}", keys::DECIDER_PREFIX, tensor.name),
            dims,
            ty,
            Box::new(move || {
                Ok(Data::Encoded(
                    GgmlType::F32,
                    Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
                ))
            }),
        );
    }
    Ok(())
}
