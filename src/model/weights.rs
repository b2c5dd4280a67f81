//! The model's weights as views into the mapped `.tah` file. Norm vectors and
//! biases (a few KB each) are copied out as f32; every matrix stays in the file.

use super::config::{Config, ModelError};
use crate::format::{keys, GgufFile, TensorInfo};
use crate::kernels::Matrix;
use crate::quant::GgmlType;
use crate::text::{ChatTemplate, Tokenizer};
use std::path::Path;

/// Where a matrix lives in the file.
#[derive(Clone, Copy, Debug)]
pub struct MatRef {
    pub ty: GgmlType,
    start: usize,
    len: usize,
    pub rows: usize,
    pub cols: usize,
}

/// LoRA pair of one linear: `A` (r × in) and `B` (out × r).
pub struct Lora {
    pub a: MatRef,
    pub b: MatRef,
}

/// One decoder layer. Shapes are (rows, cols) = (out features, in features).
pub struct Layer {
    pub attn_norm: Vec<f32>,      // (dim)
    pub wq: MatRef,               // (n_heads·hd, dim)
    pub wk: MatRef,               // (n_kv·hd, dim)
    pub wv: MatRef,               // (n_kv·hd, dim)
    pub bq: Option<Vec<f32>>,     // (n_heads·hd) qwen2
    pub bk: Option<Vec<f32>>,     // (n_kv·hd) qwen2
    pub bv: Option<Vec<f32>>,     // (n_kv·hd) qwen2
    pub q_norm: Option<Vec<f32>>, // (hd) qwen3
    pub k_norm: Option<Vec<f32>>, // (hd) qwen3
    pub wo: MatRef,               // (dim, n_heads·hd)
    pub ffn_norm: Vec<f32>,       // (dim)
    pub w_gate: MatRef,           // (ffn, dim)
    pub w_up: MatRef,             // (ffn, dim)
    pub w_down: MatRef,           // (dim, ffn)
    /// LoRA of each [`Linear`] (depth ≥ 2 only), indexed by `Linear as usize`;
    /// `None` where not adapted.
    pub lora: [Option<Lora>; 7],
}

/// The seven linears of a layer that TaH's depth-2 LoRA may adapt, in the
/// order of [`keys::LINEARS`] (the file's tensor stems).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linear {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Layer {
    /// The base matrix, bias and LoRA pair of one linear.
    pub fn linear(&self, which: Linear) -> (&MatRef, Option<&[f32]>, Option<&Lora>) {
        let (w, b) = match which {
            Linear::Q => (&self.wq, self.bq.as_deref()),
            Linear::K => (&self.wk, self.bk.as_deref()),
            Linear::V => (&self.wv, self.bv.as_deref()),
            Linear::O => (&self.wo, None),
            Linear::Gate => (&self.w_gate, None),
            Linear::Up => (&self.w_up, None),
            Linear::Down => (&self.w_down, None),
        };
        (w, b, self.lora[which as usize].as_ref())
    }
}

/// A decider matrix. Stored in the file in a type the matmul kernels take
/// (f32, f16, bf16, or a block type whose blocks tile its rows), it stays there
/// and is multiplied in place; otherwise it is dequantized to f32 at load.
pub enum DeciderMat {
    File(MatRef),
    /// Little-endian f32 bytes, `rows × cols`.
    Owned {
        f32le: Vec<u8>,
        rows: usize,
        cols: usize,
    },
}

impl DeciderMat {
    /// Input features.
    pub fn cols(&self) -> usize {
        match self {
            DeciderMat::File(r) => r.cols,
            DeciderMat::Owned { cols, .. } => *cols,
        }
    }
}

/// The decider MLP's parameters: matrices as [`DeciderMat`], vectors (norms,
/// biases: a few KB) copied out as f32.
pub struct DeciderWeights {
    pub logits_proj_w: DeciderMat,                 // (H, topk)
    pub logits_proj_b: Vec<f32>,                   // (H)
    pub combined_w: DeciderMat,                    // (d0, n·H + H)
    pub combined_b: Vec<f32>,                      // (d0)
    pub input_proj_w: DeciderMat,                  // (d0, d0)
    pub input_proj_b: Vec<f32>,                    // (d0)
    pub hidden_norm: Option<(Vec<f32>, Vec<f32>)>, // (n·H) weight, bias (normalize_input)
    pub blocks: Vec<DeciderBlock>,
    pub out_norm_w: Vec<f32>, // (last)
    pub out_norm_b: Vec<f32>, // (last)
    pub out_w: Vec<f32>,      // (1, last)
    pub out_b: f32,
}

/// A model's decider: its weights and the mapped file bytes their matrices
/// live in (all [`crate::tah::decider::probability`] needs).
#[derive(Clone, Copy)]
pub struct Decider<'a> {
    pub w: &'a DeciderWeights,
    file: &'a [u8],
}

impl<'a> Decider<'a> {
    /// The values of one of the decider's matrices.
    pub fn mat<'m>(&self, m: &'m DeciderMat) -> Matrix<'m>
    where
        'a: 'm,
    {
        resolve_decider_mat(self.file, m)
    }
}

fn resolve_decider_mat<'a>(file: &'a [u8], m: &'a DeciderMat) -> Matrix<'a> {
    match m {
        DeciderMat::File(r) => Matrix {
            ty: r.ty,
            data: &file[r.start..r.start + r.len],
            rows: r.rows,
            cols: r.cols,
        },
        DeciderMat::Owned { f32le, rows, cols } => Matrix {
            ty: GgmlType::F32,
            data: f32le,
            rows: *rows,
            cols: *cols,
        },
    }
}

pub struct DeciderBlock {
    pub d_in: usize,
    pub d_out: usize,
    pub norm_w: Vec<f32>,                           // (d_in)
    pub norm_b: Vec<f32>,                           // (d_in)
    pub up_w: DeciderMat,                           // (d_in·e, d_in)
    pub up_b: Vec<f32>,                             // (d_in·e)
    pub down_w: DeciderMat,                         // (d_out, d_in·e)
    pub down_b: Vec<f32>,                           // (d_out)
    pub dim_change: Option<(DeciderMat, Vec<f32>)>, // (d_out, d_in), (d_out)
}

/// An immutable model, shareable between sessions (and threads).
pub struct Model {
    pub cfg: Config,
    file: GgufFile,
    pub token_embd: MatRef, // (vocab, dim)
    pub output: MatRef,     // (vocab, dim): token_embd when tied
    pub output_norm: Vec<f32>,
    pub layers: Vec<Layer>,
    pub decider: Option<DeciderWeights>,
    /// From the embedded tokenizer.json; `None` for id-only models.
    pub tokenizer: Option<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
}

impl Model {
    /// Maps and validates a `.tah` / GGUF file.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        let file = GgufFile::open(path)?;
        Self::from_file(file)
    }

    pub fn from_file(file: GgufFile) -> Result<Model, ModelError> {
        let cfg = Config::from_gguf(&file)?; // checks presence and shape of every tensor
        let t = |name: &str| file.tensor(name).expect("checked by Config::from_gguf");
        let mat = |name: &str| mat_ref(&file, t(name));
        let vec = |name: &str| file.tensor_f32(t(name));
        let opt_vec = |name: &str| file.tensor(name).map(|ti| file.tensor_f32(ti));
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let w = |s: &str| keys::blk(l, s, "weight");
            let b = |s: &str| keys::blk(l, s, "bias");
            let lora = keys::LINEARS.map(|(stem, _)| {
                let a = file.tensor(&keys::lora_a(l, stem))?;
                let b = file.tensor(&keys::lora_b(l, stem))?;
                Some(Lora {
                    a: mat_ref(&file, a),
                    b: mat_ref(&file, b),
                })
            });
            layers.push(Layer {
                attn_norm: vec(&w("attn_norm")),
                wq: mat(&w("attn_q")),
                wk: mat(&w("attn_k")),
                wv: mat(&w("attn_v")),
                bq: opt_vec(&b("attn_q")),
                bk: opt_vec(&b("attn_k")),
                bv: opt_vec(&b("attn_v")),
                q_norm: if cfg.qk_norm {
                    Some(vec(&w("attn_q_norm")))
                } else {
                    None
                },
                k_norm: if cfg.qk_norm {
                    Some(vec(&w("attn_k_norm")))
                } else {
                    None
                },
                wo: mat(&w("attn_output")),
                ffn_norm: vec(&w("ffn_norm")),
                w_gate: mat(&w("ffn_gate")),
                w_up: mat(&w("ffn_up")),
                w_down: mat(&w("ffn_down")),
                lora,
            });
        }
        let token_embd = mat(keys::TOKEN_EMBD);
        let output = if cfg.tied {
            token_embd
        } else {
            mat(keys::OUTPUT)
        };
        let decider = cfg.tah.as_ref().map(|tah| {
            let p = |s: &str| vec(&format!("{}{s}", keys::DECIDER_PREFIX));
            let pm = |s: &str| decider_mat(&file, t(&format!("{}{s}", keys::DECIDER_PREFIX)));
            let dims = &tah.decider_hidden_dims;
            let blocks = (0..dims.len())
                .map(|i| {
                    let (d_in, d_out) = (dims[i], *dims.get(i + 1).unwrap_or(&dims[i]));
                    let bp = |s: &str| p(&format!("backbone.blocks.{i}.{s}"));
                    let bm = |s: &str| pm(&format!("backbone.blocks.{i}.{s}"));
                    DeciderBlock {
                        d_in,
                        d_out,
                        norm_w: bp("layer_norm.weight"),
                        norm_b: bp("layer_norm.bias"),
                        up_w: bm("mlp.0.weight"),
                        up_b: bp("mlp.0.bias"),
                        down_w: bm("mlp.3.weight"),
                        down_b: bp("mlp.3.bias"),
                        dim_change: (d_in != d_out)
                            .then(|| (bm("dim_change.weight"), bp("dim_change.bias"))),
                    }
                })
                .collect();
            DeciderWeights {
                logits_proj_w: pm("logits_projection.weight"),
                logits_proj_b: p("logits_projection.bias"),
                combined_w: pm("combined_projection.weight"),
                combined_b: p("combined_projection.bias"),
                input_proj_w: pm("backbone.input_projection.weight"),
                input_proj_b: p("backbone.input_projection.bias"),
                hidden_norm: tah.normalize_input.then(|| {
                    (
                        p("layer_norm_hidden_states.weight"),
                        p("layer_norm_hidden_states.bias"),
                    )
                }),
                blocks,
                out_norm_w: p("backbone.output_layer.0.weight"),
                out_norm_b: p("backbone.output_layer.0.bias"),
                out_w: p("backbone.output_layer.1.weight"),
                out_b: p("backbone.output_layer.1.bias")[0],
            }
        });
        let tokenizer = Tokenizer::from_gguf(&file)
            .map_err(|e| text_error(&file, keys::TOKENIZER_HF_JSON, e))?;
        let chat_template = ChatTemplate::from_gguf(&file)
            .map_err(|e| text_error(&file, keys::CHAT_TEMPLATE, e))?;
        Ok(Model {
            output_norm: vec(keys::OUTPUT_NORM),
            cfg,
            token_embd,
            output,
            layers,
            decider,
            tokenizer,
            chat_template,
            file,
        })
    }

    /// The decider's weights with the file they point into; `None` for a
    /// model without TaH.
    pub fn decider(&self) -> Option<Decider<'_>> {
        self.decider.as_ref().map(|w| Decider {
            w,
            file: self.file.raw(),
        })
    }

    /// The values of a decider matrix.
    pub fn decider_mat<'a>(&'a self, m: &'a DeciderMat) -> Matrix<'a> {
        resolve_decider_mat(self.file.raw(), m)
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The bytes behind a matrix reference.
    pub fn mat(&self, m: &MatRef) -> Matrix<'_> {
        Matrix {
            ty: m.ty,
            data: &self.file.raw()[m.start..m.start + m.len],
            rows: m.rows,
            cols: m.cols,
        }
    }
}

/// A text-side error as a [`ModelError`] naming the metadata key at fault: the
/// error's own key, or `key`, the one the failing reader was reading.
fn text_error(f: &GgufFile, key: &str, e: crate::text::TextError) -> ModelError {
    use crate::text::TextError;
    let (key, why) = match e {
        TextError::Metadata { key, reason } => (key, reason),
        other => (key.to_string(), other.to_string()),
    };
    ModelError::BadKey {
        file: f.path().display().to_string(),
        key,
        why,
    }
}

fn decider_mat(f: &GgufFile, t: &TensorInfo) -> DeciderMat {
    let r = mat_ref(f, t);
    if t.ty.row_bytes(r.cols as u64) == Some((r.len / r.rows.max(1)) as u64) {
        return DeciderMat::File(r);
    }
    DeciderMat::Owned {
        f32le: f
            .tensor_f32(t)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        rows: r.rows,
        cols: r.cols,
    }
}

fn mat_ref(f: &GgufFile, t: &TensorInfo) -> MatRef {
    MatRef {
        ty: t.ty,
        start: (f.data_start + t.offset) as usize,
        len: t.size as usize,
        rows: t.n_rows(),
        cols: t.row_len(),
    }
}
