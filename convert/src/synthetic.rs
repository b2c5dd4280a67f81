//! `--synthetic-tah`: random LoRA and decider of given shapes attached to a real
//! base model, for benchmarking TaH's cost on real weights. The file is marked
//! `tah.synthetic = true`; its depth-2 passes compute nothing meaningful.

use crate::bail;
use crate::error::Result;
use crate::plan::{Data, Plan};
use tah::format::{keys, MetaValue};
use tah::quant::GgmlType;

/// Shapes of the synthetic TaH parts. Defaults: the released 1.7B recipe.
#[derive(Clone, Debug)]
pub struct SyntheticTah {
    pub rank: usize,
    pub alpha: f32,
    /// Hidden-state indices for the decider; empty = four spread over the depth
    /// like the recipe's [2, 10, 18, 26] of 28.
    pub layers: Vec<usize>,
    pub hidden_dims: Vec<usize>,
    pub topk: usize,
    pub threshold: f32,
    pub seed: u64,
    /// Type of the decider's matrices (f32, f16 or bf16; vectors stay f32).
    /// Default f16: the engine's fastest one-row product.
    pub decider_type: GgmlType,
}

impl Default for SyntheticTah {
    fn default() -> Self {
        SyntheticTah {
            rank: 32,
            alpha: 64.0,
            layers: Vec::new(),
            hidden_dims: vec![512; 6],
            topk: 100,
            threshold: 0.9,
            seed: 1,
            decider_type: GgmlType::F16,
        }
    }
}

/// splitmix64 → approximately normal values (sum of uniforms), deterministic.
fn random(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| ((next() + next() + next() + next()) - 2.0) * 1.732 * scale)
        .collect()
}

fn name_seed(name: &str, seed: u64) -> u64 {
    name.bytes().fold(seed ^ 0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Adds the TaH keys and random tensors to a base model's plan.
pub fn attach(plan: &mut Plan<'_>, syn: &SyntheticTah) -> Result<()> {
    let arch = plan
        .get(keys::ARCHITECTURE)
        .and_then(MetaValue::as_str)
        .unwrap_or("")
        .to_string();
    let get = |k: &str| {
        plan.get(&keys::arch_key(&arch, k))
            .and_then(MetaValue::as_u64)
            .map(|v| v as usize)
    };
    let (Some(l_n), Some(h)) = (
        get(keys::arch::BLOCK_COUNT),
        get(keys::arch::EMBEDDING_LENGTH),
    ) else {
        bail!("--synthetic-tah: the base model has no block_count / embedding_length");
    };
    let dtype = match syn.decider_type {
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        GgmlType::Bf16 => "bf16",
        t => bail!("--synthetic-tah: decider type {t} is not f32, f16 or bf16"),
    };
    if syn.rank == 0 || syn.hidden_dims.is_empty() || syn.hidden_dims.contains(&0) || syn.topk == 0
    {
        bail!("--synthetic-tah: rank, widths and top-k must be positive");
    }
    let layers = if syn.layers.is_empty() {
        [2usize, 10, 18, 26]
            .iter()
            .map(|&i| (i * l_n / 28).clamp(1, l_n))
            .collect()
    } else {
        syn.layers.clone()
    };
    if layers.iter().any(|&l| l > l_n) {
        bail!("--synthetic-tah: decider layers {layers:?} exceed the model's {l_n} layers");
    }
    let u32s = |v: &[usize]| MetaValue::Array(v.iter().map(|&x| crate::plan::uint(x)).collect());
    plan.set(keys::TAH_VERSION, MetaValue::U32(1));
    plan.set(keys::SYNTHETIC, MetaValue::Bool(true));
    plan.set(keys::MAX_ITER, MetaValue::U32(2));
    plan.set(keys::INPUT_TOPK, crate::plan::uint(syn.topk));
    plan.set(keys::LORA_RANK, crate::plan::uint(syn.rank));
    plan.set(keys::LORA_ALPHA, MetaValue::F32(syn.alpha));
    plan.set(
        keys::LORA_TARGETS,
        MetaValue::Array(
            keys::LINEARS
                .iter()
                .map(|(s, _)| MetaValue::String(s.to_string()))
                .collect(),
        ),
    );
    plan.set(
        keys::DECIDER_CLASS,
        MetaValue::String("MLPIterDecider".into()),
    );
    // The threshold as a checkpoint of that dtype holds it.
    let threshold = match syn.decider_type {
        GgmlType::F16 => half::f16::from_f32(syn.threshold).to_f32(),
        GgmlType::Bf16 => half::bf16::from_f32(syn.threshold).to_f32(),
        _ => syn.threshold,
    };
    plan.set(keys::DECIDER_THRESHOLD, MetaValue::F32(threshold));
    plan.set(keys::DECIDER_DTYPE, MetaValue::String(dtype.into()));
    plan.set(keys::DECIDER_TOPK, crate::plan::uint(syn.topk));
    plan.set(keys::DECIDER_LAYERS, u32s(&layers));
    plan.set(keys::DECIDER_HIDDEN_DIMS, u32s(&syn.hidden_dims));
    plan.set(keys::DECIDER_EXPANSION, MetaValue::U32(4));
    plan.set(keys::DECIDER_NORMALIZE_INPUT, MetaValue::Bool(false));

    // `shape` row-major, as the reference's state dict has it.
    // Decider matrices in `syn.decider_type`, everything else f32.
    let add = |plan: &mut Plan<'_>, name: String, shape: &[usize], scale: f32| {
        let seed = name_seed(&name, syn.seed);
        let n: usize = shape.iter().product();
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        let ty = if name.starts_with(keys::DECIDER_PREFIX) && shape.len() == 2 {
            syn.decider_type
        } else {
            GgmlType::F32
        };
        plan.push(
            name,
            dims,
            ty,
            Box::new(move || Ok(Data::F32(random(n, scale, seed)))),
        );
    };
    for l in 0..l_n {
        for (stem, _) in keys::LINEARS {
            let base = plan
                .tensor(&keys::blk(l, stem, "weight"))
                .map(|t| (t.dims[0] as usize, t.dims[1] as usize));
            let Some((n_in, n_out)) = base else {
                bail!("--synthetic-tah: no {stem} weight in layer {l}")
            };
            add(
                plan,
                keys::lora_a(l, stem),
                &[syn.rank, n_in],
                1.0 / (n_in as f32).sqrt(),
            );
            add(plan, keys::lora_b(l, stem), &[n_out, syn.rank], 0.01);
        }
    }
    let d = &syn.hidden_dims;
    let p = |s: &str| format!("{}{s}", keys::DECIDER_PREFIX);
    add(plan, p("logits_projection.weight"), &[h, syn.topk], 0.05);
    add(plan, p("logits_projection.bias"), &[h], 0.05);
    add(
        plan,
        p("combined_projection.weight"),
        &[d[0], layers.len() * h + h],
        0.02,
    );
    add(plan, p("combined_projection.bias"), &[d[0]], 0.02);
    add(
        plan,
        p("backbone.input_projection.weight"),
        &[d[0], d[0]],
        0.05,
    );
    add(plan, p("backbone.input_projection.bias"), &[d[0]], 0.05);
    for i in 0..d.len() {
        let (din, dout) = (d[i], *d.get(i + 1).unwrap_or(&d[i]));
        let b = |s: &str| p(&format!("backbone.blocks.{i}.{s}"));
        add(plan, b("layer_norm.weight"), &[din], 0.1);
        add(plan, b("layer_norm.bias"), &[din], 0.1);
        add(plan, b("mlp.0.weight"), &[din * 4, din], 0.05);
        add(plan, b("mlp.0.bias"), &[din * 4], 0.05);
        add(plan, b("mlp.3.weight"), &[dout, din * 4], 0.05);
        add(plan, b("mlp.3.bias"), &[dout], 0.05);
        if din != dout {
            add(plan, b("dim_change.weight"), &[dout, din], 0.05);
            add(plan, b("dim_change.bias"), &[dout], 0.05);
        }
    }
    let last = *d.last().unwrap();
    add(plan, p("backbone.output_layer.0.weight"), &[last], 0.1);
    add(plan, p("backbone.output_layer.0.bias"), &[last], 0.1);
    add(plan, p("backbone.output_layer.1.weight"), &[1, last], 0.5);
    add(plan, p("backbone.output_layer.1.bias"), &[1], 0.5);
    Ok(())
}
