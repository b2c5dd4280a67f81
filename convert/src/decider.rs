//! `iter_decider.bin`: the pickled `MLPIterDecider`
//! (`torch.save({"class", "state_dict", "init_args"})`), and the merge of its
//! settings with `tah_config.json`.

use crate::pickle::{self, DType, PickleError, TensorRef, Value};
use crate::tah_config::TahConfig;
use crate::torchzip::{TorchZip, ZipError};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The only decider class the engine implements.
pub const DECIDER_CLASS: &str = "MLPIterDecider";

/// `MLPIterDecider` defaults, used for kwargs absent from `tah_config.json`
/// (the reference constructs the class with the config's kwargs only).
pub const DEFAULT_EXPANSION_FACTOR: usize = 4;
pub const DEFAULT_NORMALIZE_INPUT: bool = false;

#[derive(Debug)]
pub enum DeciderError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Zip(ZipError),
    Pickle(PickleError),
    /// The archive or pickle is well-formed but not a decider we accept.
    Invalid(String),
}

impl fmt::Display for DeciderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeciderError::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            DeciderError::Zip(e) => write!(f, "iter_decider.bin: {e}"),
            DeciderError::Pickle(e) => write!(f, "iter_decider.bin: {e}"),
            DeciderError::Invalid(why) => write!(f, "iter_decider.bin: {why}"),
        }
    }
}

impl std::error::Error for DeciderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeciderError::Io { source, .. } => Some(source),
            DeciderError::Zip(e) => Some(e),
            DeciderError::Pickle(e) => Some(e),
            DeciderError::Invalid(_) => None,
        }
    }
}

impl From<ZipError> for DeciderError {
    fn from(e: ZipError) -> Self {
        DeciderError::Zip(e)
    }
}

impl From<PickleError> for DeciderError {
    fn from(e: PickleError) -> Self {
        DeciderError::Pickle(e)
    }
}

fn invalid(why: impl Into<String>) -> DeciderError {
    DeciderError::Invalid(why.into())
}

/// The constructor kwargs pickled in `init_args`. A key absent from the
/// pickle is `None`. Informational: the reference ignores them in favour of
/// `tah_config.json` (see [`merge_settings`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InitArgs {
    pub topk: Option<usize>,
    pub hidden_states_size: Option<usize>,
    pub hidden_states_layer_nums: Option<Vec<usize>>,
    pub hidden_dims: Option<Vec<usize>>,
    pub expansion_factor: Option<usize>,
    pub dropout_rate: Option<f64>,
    pub normalize_input: Option<bool>,
    pub threshold: Option<f64>,
    /// `None` both when absent and when pickled as `None`.
    pub max_iter: Option<u32>,
    pub dtype: Option<DType>,
    /// Every pair as pickled, in order, including keys not listed above.
    pub raw: Vec<(String, Value)>,
}

/// One state_dict tensor, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct DeciderTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// The storage's element type as saved.
    pub dtype: DType,
    /// Row-major values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PickledDecider {
    /// The archive root, e.g. `iter_decider/`.
    pub archive_prefix: String,
    /// Always [`DECIDER_CLASS`]; anything else is rejected.
    pub class_name: String,
    pub init_args: InitArgs,
    /// In pickled (state_dict) order.
    pub state_dict: Vec<DeciderTensor>,
}

impl PickledDecider {
    pub fn tensor(&self, name: &str) -> Option<&DeciderTensor> {
        self.state_dict.iter().find(|t| t.name == name)
    }
}

/// Reads `iter_decider.bin` from a file.
pub fn load_iter_decider(path: &Path) -> Result<PickledDecider, DeciderError> {
    let bytes = std::fs::read(path).map_err(|source| DeciderError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_iter_decider(&bytes)
}

/// Reads `iter_decider.bin` from its bytes.
pub fn parse_iter_decider(bytes: &[u8]) -> Result<PickledDecider, DeciderError> {
    let zip = TorchZip::parse(bytes)?;
    // Older torch versions write no `byteorder` entry and are little-endian.
    if let Some(order) = zip.entry(&format!("{}byteorder", zip.prefix())) {
        if order != b"little" {
            return Err(invalid(format!(
                "byteorder is '{}'; only little-endian archives are supported",
                String::from_utf8_lossy(order)
            )));
        }
    }
    let root = pickle::unpickle(zip.get("data.pkl")?)?;
    if !matches!(root, Value::Dict(_)) {
        return Err(invalid(format!(
            "data.pkl holds a {}, expected a dict",
            root.kind()
        )));
    }
    let class_name = match root.get("class") {
        Some(Value::Str(s)) => s.clone(),
        Some(v) => {
            return Err(invalid(format!(
                "'class' is a {}, expected a str",
                v.kind()
            )))
        }
        None => return Err(invalid("no 'class' key")),
    };
    if class_name != DECIDER_CLASS {
        return Err(invalid(format!(
            "decider class is '{class_name}'; only {DECIDER_CLASS} is supported"
        )));
    }
    let init_args = match root.get("init_args") {
        Some(v) => parse_init_args(v)?,
        None => InitArgs::default(),
    };
    let state_dict = match root.get("state_dict") {
        Some(Value::Dict(pairs)) => read_state_dict(&zip, pairs)?,
        Some(v) => {
            return Err(invalid(format!(
                "'state_dict' is a {}, expected a dict",
                v.kind()
            )))
        }
        None => return Err(invalid("no 'state_dict' key")),
    };
    Ok(PickledDecider {
        archive_prefix: zip.prefix().to_string(),
        class_name,
        init_args,
        state_dict,
    })
}

fn parse_init_args(v: &Value) -> Result<InitArgs, DeciderError> {
    let pairs = match v {
        Value::Dict(p) => p,
        other => {
            return Err(invalid(format!(
                "'init_args' is a {}, expected a dict",
                other.kind()
            )))
        }
    };
    let mut a = InitArgs::default();
    let mut seen = HashSet::new();
    for (k, v) in pairs {
        let key = k
            .as_str()
            .ok_or_else(|| invalid(format!("init_args has a {} key", k.kind())))?;
        if !seen.insert(key) {
            return Err(invalid(format!("init_args key '{key}' appears twice")));
        }
        let bad = |want: &str| {
            invalid(format!(
                "init_args '{key}' is a {}, expected {want}",
                v.kind()
            ))
        };
        let uint = |v: &Value| v.as_int().and_then(|i| usize::try_from(i).ok());
        let uints = |v: &Value| match v {
            Value::List(xs) | Value::Tuple(xs) => xs.iter().map(uint).collect::<Option<Vec<_>>>(),
            _ => None,
        };
        let float = |v: &Value| match v {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        };
        match key {
            "topk" => a.topk = Some(uint(v).ok_or_else(|| bad("a non-negative int"))?),
            "hidden_states_size" => {
                a.hidden_states_size = Some(uint(v).ok_or_else(|| bad("a non-negative int"))?)
            }
            "hidden_states_layer_nums" => {
                a.hidden_states_layer_nums =
                    Some(uints(v).ok_or_else(|| bad("a list of non-negative ints"))?)
            }
            "hidden_dims" => {
                a.hidden_dims = Some(uints(v).ok_or_else(|| bad("a list of non-negative ints"))?)
            }
            "expansion_factor" => {
                a.expansion_factor = Some(uint(v).ok_or_else(|| bad("a non-negative int"))?)
            }
            "dropout_rate" => a.dropout_rate = Some(float(v).ok_or_else(|| bad("a float"))?),
            "normalize_input" => match v {
                Value::Bool(b) => a.normalize_input = Some(*b),
                _ => return Err(bad("a bool")),
            },
            "threshold" => a.threshold = Some(float(v).ok_or_else(|| bad("a float"))?),
            "max_iter" => {
                a.max_iter = match v {
                    Value::None => None,
                    _ => Some(
                        v.as_int()
                            .and_then(|i| u32::try_from(i).ok())
                            .ok_or_else(|| bad("an int"))?,
                    ),
                }
            }
            "dtype" => {
                a.dtype = match v {
                    Value::DType(d) => Some(*d),
                    Value::Str(s) => {
                        Some(DType::from_torch_name(s).ok_or_else(|| bad("a torch dtype"))?)
                    }
                    Value::None => None,
                    _ => return Err(bad("a torch dtype")),
                }
            }
            _ => {}
        }
        a.raw.push((key.to_string(), v.clone()));
    }
    Ok(a)
}

fn read_state_dict(
    zip: &TorchZip,
    pairs: &[(Value, Value)],
) -> Result<Vec<DeciderTensor>, DeciderError> {
    let mut names = HashSet::new();
    // Storages shared by several tensors must agree on type and size.
    let mut storages: HashMap<&str, (DType, usize)> = HashMap::new();
    let mut out = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let name = k
            .as_str()
            .ok_or_else(|| invalid(format!("state_dict has a {} key", k.kind())))?;
        if !names.insert(name) {
            return Err(invalid(format!("state_dict key '{name}' appears twice")));
        }
        let t = match v {
            Value::Tensor(t) => t,
            other => {
                return Err(invalid(format!(
                    "state_dict '{name}' is a {}, expected a tensor",
                    other.kind()
                )))
            }
        };
        let s = &t.storage;
        if let Some(&(dtype, numel)) = storages.get(s.key.as_str()) {
            if (dtype, numel) != (s.dtype, s.numel) {
                return Err(invalid(format!(
                    "storage '{}' is described twice, differently",
                    s.key
                )));
            }
        }
        storages.insert(&s.key, (s.dtype, s.numel));
        out.push(read_tensor(zip, name, t)?);
    }
    Ok(out)
}

fn read_tensor(zip: &TorchZip, name: &str, t: &TensorRef) -> Result<DeciderTensor, DeciderError> {
    let s = &t.storage;
    let entry_name = format!("data/{}", s.key);
    let bytes = zip.get(&entry_name)?;
    let es = s.dtype.elem_size();
    // `numel * es` cannot overflow: checked when the pickle was read.
    if s.numel * es > bytes.len() {
        return Err(invalid(format!(
            "tensor '{name}': storage '{}' claims {} {} elements ({} bytes) but entry {entry_name} has {} bytes",
            s.key,
            s.numel,
            s.dtype.name(),
            s.numel * es,
            bytes.len()
        )));
    }
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| invalid(format!("tensor '{name}': size {:?} overflows", t.size)))?;
    // Row-major contiguity; the stride of a size-1 dim does not matter.
    let mut expect = 1usize;
    for (&d, &st) in t.size.iter().zip(&t.stride).rev() {
        if d != 1 && st != expect && numel != 0 {
            return Err(invalid(format!(
                "tensor '{name}' is not contiguous (size {:?}, stride {:?}); only row-major tensors are supported",
                t.size, t.stride
            )));
        }
        expect = expect.saturating_mul(d);
    }
    let end = t
        .storage_offset
        .checked_add(numel)
        .filter(|&e| e <= s.numel)
        .ok_or_else(|| {
            invalid(format!(
                "tensor '{name}': offset {} + {numel} elements exceeds storage '{}' of {} elements",
                t.storage_offset, s.key, s.numel
            ))
        })?;
    let raw = &bytes[t.storage_offset * es..end * es];
    let data = match s.dtype {
        DType::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        DType::BF16 => raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        DType::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
    };
    Ok(DeciderTensor {
        name: name.to_string(),
        shape: t.size.clone(),
        dtype: s.dtype,
        data,
    })
}

/// Where the effective threshold came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdSource {
    /// `tah_config.json` `iter_decider_kwargs.threshold`.
    ConfigKwargs,
    /// The state_dict `threshold` tensor (the kwarg was absent).
    StateDict,
}

/// The decider settings the engine runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct DeciderSettings {
    pub topk: usize,
    pub hidden_states_size: usize,
    pub hidden_states_layer_nums: Vec<usize>,
    pub hidden_dims: Vec<usize>,
    pub expansion_factor: usize,
    pub normalize_input: bool,
    /// The decider dtype: the kwarg, else the state_dict threshold's storage.
    pub dtype: DType,
    /// The threshold as the checkpoint states it (config float, or the
    /// state_dict tensor value widened to f64).
    pub threshold: f64,
    /// `threshold` rounded to `dtype`, as the reference holds and compares it
    /// (f32: 0.6865 → 0.6865000128746033; bf16: 0.9 → 0.8984375).
    pub threshold_in_dtype: f64,
    pub threshold_source: ThresholdSource,
    /// `tah_config.max_iter`: the decider is never consulted at depth ==
    /// max_iter, where every token stops.
    pub max_iter: u32,
    /// `iter_decider_kwargs.max_iter` as written; when it is absent the
    /// reference decider defaults to 3 (a known bug), which we do not copy.
    pub kwargs_max_iter: Option<u32>,
}

/// Rounds like `torch.tensor(x, dtype=d)`: double → float → dtype.
pub fn round_to_dtype(x: f64, dtype: DType) -> f64 {
    let f = x as f32;
    match dtype {
        DType::F32 => f as f64,
        DType::BF16 => half::bf16::from_f32(f).to_f64(),
        DType::F16 => half::f16::from_f32(f).to_f64(),
    }
}

/// Applies the reference loading precedence: `tah_config.json`'s
/// `iter_decider_kwargs` replace the pickled `init_args` entirely; the
/// threshold is the kwarg when present, else the state_dict tensor; the
/// effective `max_iter` is `tah_config.max_iter`. Also checks that the
/// state_dict has exactly the tensors these settings need.
pub fn merge_settings(
    decider: &PickledDecider,
    config: &TahConfig,
) -> Result<DeciderSettings, DeciderError> {
    if let Some(class) = &config.iter_decider {
        if class != DECIDER_CLASS {
            return Err(invalid(format!(
                "tah_config.json names decider class '{class}'; only {DECIDER_CLASS} is supported"
            )));
        }
    }
    let kw = &config.iter_decider_kwargs;
    let sd_threshold = decider.tensor("threshold");
    let dtype = kw
        .dtype
        .or(sd_threshold.map(|t| t.dtype))
        .unwrap_or(DType::F32);
    let (threshold, threshold_source) =
        match (kw.threshold, sd_threshold) {
            (Some(t), _) => (t, ThresholdSource::ConfigKwargs),
            (None, Some(t)) if t.shape.is_empty() && t.data.len() == 1 => {
                (t.data[0] as f64, ThresholdSource::StateDict)
            }
            (None, Some(t)) => {
                return Err(invalid(format!(
                    "state_dict 'threshold' has shape {:?}, expected a scalar",
                    t.shape
                )))
            }
            (None, None) => return Err(invalid(
                "no threshold: neither iter_decider_kwargs.threshold nor a state_dict 'threshold'",
            )),
        };
    let settings = DeciderSettings {
        topk: kw.topk,
        hidden_states_size: kw.hidden_states_size,
        hidden_states_layer_nums: kw.hidden_states_layer_nums.clone(),
        hidden_dims: kw.hidden_dims.clone(),
        expansion_factor: kw.expansion_factor.unwrap_or(DEFAULT_EXPANSION_FACTOR),
        normalize_input: kw.normalize_input.unwrap_or(DEFAULT_NORMALIZE_INPUT),
        dtype,
        threshold,
        threshold_in_dtype: round_to_dtype(threshold, dtype),
        threshold_source,
        max_iter: config.max_iter,
        kwargs_max_iter: kw.max_iter,
    };
    check_state_dict(&settings, decider)?;
    Ok(settings)
}

/// The state_dict names and shapes an `MLPIterDecider` with these settings
/// has, in module registration order.
pub fn expected_state_dict(s: &DeciderSettings) -> Vec<(String, Vec<usize>)> {
    let h = s.hidden_states_size;
    let n = s.hidden_states_layer_nums.len().max(1);
    let d0 = s.hidden_dims.first().copied().unwrap_or(0);
    let mut v: Vec<(String, Vec<usize>)> = vec![("threshold".into(), vec![])];
    let linear = |v: &mut Vec<(String, Vec<usize>)>, name: &str, out: usize, inp: usize| {
        v.push((format!("{name}.weight"), vec![out, inp]));
        v.push((format!("{name}.bias"), vec![out]));
    };
    if s.normalize_input {
        v.push((
            "layer_norm_hidden_states.weight".into(),
            vec![h.saturating_mul(n)],
        ));
        v.push((
            "layer_norm_hidden_states.bias".into(),
            vec![h.saturating_mul(n)],
        ));
    }
    linear(&mut v, "logits_projection", h, s.topk);
    linear(
        &mut v,
        "combined_projection",
        d0,
        n.saturating_mul(h).saturating_add(h),
    );
    linear(&mut v, "backbone.input_projection", d0, d0);
    // Block i maps hidden_dims[i] → hidden_dims[i + 1] (the last keeps its width).
    for (i, &din) in s.hidden_dims.iter().enumerate() {
        let dout = s.hidden_dims.get(i + 1).copied().unwrap_or(din);
        let b = format!("backbone.blocks.{i}");
        v.push((format!("{b}.layer_norm.weight"), vec![din]));
        v.push((format!("{b}.layer_norm.bias"), vec![din]));
        linear(
            &mut v,
            &format!("{b}.mlp.0"),
            din.saturating_mul(s.expansion_factor),
            din,
        );
        linear(
            &mut v,
            &format!("{b}.mlp.3"),
            dout,
            din.saturating_mul(s.expansion_factor),
        );
        if din != dout {
            linear(&mut v, &format!("{b}.dim_change"), dout, din);
        }
    }
    let dl = s.hidden_dims.last().copied().unwrap_or(0);
    v.push(("backbone.output_layer.0.weight".into(), vec![dl]));
    v.push(("backbone.output_layer.0.bias".into(), vec![dl]));
    linear(&mut v, "backbone.output_layer.1", 1, dl);
    v
}

/// Every expected tensor must be present with its shape, and nothing else
/// may be (order is not checked: it varies between reference versions).
pub fn check_state_dict(s: &DeciderSettings, decider: &PickledDecider) -> Result<(), DeciderError> {
    if s.hidden_dims.is_empty() {
        return Err(invalid("iter_decider_kwargs.hidden_dims is empty"));
    }
    let expected = expected_state_dict(s);
    let have: HashMap<&str, &[usize]> = decider
        .state_dict
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    for (name, shape) in &expected {
        match have.get(name.as_str()) {
            // The reference drops a state_dict key named like a kwarg, so the
            // tensor is not needed when the config gives the threshold.
            None if name == "threshold" && s.threshold_source == ThresholdSource::ConfigKwargs => {}
            None => {
                return Err(invalid(format!(
                    "state_dict lacks '{name}' (shape {shape:?})"
                )))
            }
            Some(got) if got != shape => {
                return Err(invalid(format!(
                    "state_dict '{name}' has shape {got:?} but the decider settings need {shape:?}"
                )))
            }
            Some(_) => {}
        }
    }
    let known: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(t) = decider
        .state_dict
        .iter()
        .find(|t| !known.contains(t.name.as_str()))
    {
        return Err(invalid(format!(
            "state_dict has unexpected tensor '{}' for these decider settings",
            t.name
        )));
    }
    Ok(())
}
