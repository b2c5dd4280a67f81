//! iter_decider.bin: the torch zip reader, the restricted unpickler, the
//! decider loader and the tah_config.json merge.
//!
//! Expected values come from `tests/data/*_expect.json`, written by
//! `tests/data/gen_decider_expect.py` (stdlib pickle/zipfile and torch.load).

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tah_convert::decider::{
    load_iter_decider, merge_settings, parse_iter_decider, round_to_dtype, DeciderError,
    PickledDecider, ThresholdSource,
};
use tah_convert::pickle::{unpickle, DType, PickleErrorKind, Value};
use tah_convert::tah_config::{TahConfig, TargetModules};
use tah_convert::torchzip::{crc32, TorchZip, ZipError};

// ---------------------------------------------------------------- helpers

fn fixture_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tah-tiny");
    assert!(
        dir.is_dir(),
        "fixture directory {} is missing (shared/ beside the repo)",
        dir.display()
    );
    dir
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(fixture_dir().join("iter_decider.bin")).unwrap()
}

fn fixture_config() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("tah_config.json")).unwrap())
        .unwrap()
}

fn config_from(v: &serde_json::Value) -> TahConfig {
    TahConfig::from_json(&v.to_string()).unwrap()
}

fn expect_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data_dir().join(name)).unwrap()).unwrap()
}

fn sha256_f32(data: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in data {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks every tensor against the generator's record.
fn check_against_expect(d: &PickledDecider, expect: &serde_json::Value, archive: &[u8]) {
    let tensors = expect["tensors"].as_array().unwrap();
    assert_eq!(d.state_dict.len(), tensors.len());
    // One data entry per tensor (no shared storages in these files).
    let zip = TorchZip::parse(archive).unwrap();
    let data_prefix = format!("{}data/", zip.prefix());
    let n_data = zip
        .entries()
        .iter()
        .filter(|e| e.name.starts_with(&data_prefix))
        .count();
    assert_eq!(n_data as u64, expect["data_entries"].as_u64().unwrap());
    assert_eq!(n_data, d.state_dict.len());
    for (t, e) in d.state_dict.iter().zip(tensors) {
        assert_eq!(t.name, e["name"].as_str().unwrap());
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{}", t.name);
        assert_eq!(t.data.len(), shape.iter().product::<usize>(), "{}", t.name);
        let dtype = match e["dtype"].as_str().unwrap() {
            "f32" => DType::F32,
            "bf16" => DType::BF16,
            "f16" => DType::F16,
            other => panic!("{other}"),
        };
        assert_eq!(t.dtype, dtype, "{}", t.name);
        assert_eq!(
            sha256_f32(&t.data),
            e["sha256_f32"].as_str().unwrap(),
            "{}",
            t.name
        );
        for (i, v) in e["first"].as_array().unwrap().iter().enumerate() {
            assert_eq!(t.data[i], v.as_f64().unwrap() as f32, "{}[{i}]", t.name);
        }
    }
}

/// Builds a torch-style zip archive by hand: STORED entries (unless a
/// method is given), a central directory, and an end record.
struct ZipBuilder {
    entries: Vec<(String, Vec<u8>, u16)>,
    /// Write zip64 end records (as torch does).
    zip64_eocd: bool,
    /// Put the local header offsets in zip64 extra fields.
    zip64_offsets: bool,
}

impl ZipBuilder {
    fn new() -> Self {
        ZipBuilder {
            entries: Vec::new(),
            zip64_eocd: false,
            zip64_offsets: false,
        }
    }
    fn add(mut self, name: &str, data: &[u8]) -> Self {
        self.entries.push((name.to_string(), data.to_vec(), 0));
        self
    }
    fn add_method(mut self, name: &str, data: &[u8], method: u16) -> Self {
        self.entries.push((name.to_string(), data.to_vec(), method));
        self
    }
    fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for (name, data, method) in &self.entries {
            offsets.push(out.len() as u64);
            out.extend(0x0403_4b50u32.to_le_bytes());
            out.extend(20u16.to_le_bytes()); // version needed
            out.extend(0u16.to_le_bytes()); // flags
            out.extend(method.to_le_bytes());
            out.extend([0u8; 4]); // time, date
            out.extend(crc32(data).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(name.as_bytes());
            out.extend(data);
        }
        let cd_start = out.len() as u64;
        for ((name, data, method), off) in self.entries.iter().zip(&offsets) {
            let extra: Vec<u8> = if self.zip64_offsets {
                let mut x = Vec::new();
                x.extend(1u16.to_le_bytes());
                x.extend(8u16.to_le_bytes());
                x.extend(off.to_le_bytes());
                x
            } else {
                Vec::new()
            };
            out.extend(0x0201_4b50u32.to_le_bytes());
            out.extend(45u16.to_le_bytes());
            out.extend(45u16.to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(method.to_le_bytes());
            out.extend([0u8; 4]);
            out.extend(crc32(data).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend((extra.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes()); // comment
            out.extend(0u16.to_le_bytes()); // disk
            out.extend(0u16.to_le_bytes()); // internal attrs
            out.extend(0u32.to_le_bytes()); // external attrs
            let off32 = if self.zip64_offsets {
                0xFFFF_FFFF
            } else {
                *off as u32
            };
            out.extend(off32.to_le_bytes());
            out.extend(name.as_bytes());
            out.extend(&extra);
        }
        let cd_size = out.len() as u64 - cd_start;
        let n = self.entries.len() as u64;
        if self.zip64_eocd {
            let z64 = out.len() as u64;
            out.extend(0x0606_4b50u32.to_le_bytes());
            out.extend(44u64.to_le_bytes());
            out.extend(45u16.to_le_bytes());
            out.extend(45u16.to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.extend(n.to_le_bytes());
            out.extend(n.to_le_bytes());
            out.extend(cd_size.to_le_bytes());
            out.extend(cd_start.to_le_bytes());
            out.extend(0x0706_4b50u32.to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.extend(z64.to_le_bytes());
            out.extend(1u32.to_le_bytes());
        }
        out.extend(0x0605_4b50u32.to_le_bytes());
        out.extend([0u8; 4]);
        let (n16, size32, off32) = if self.zip64_eocd {
            (0xFFFFu16, 0xFFFF_FFFFu32, 0xFFFF_FFFFu32)
        } else {
            (n as u16, cd_size as u32, cd_start as u32)
        };
        out.extend(n16.to_le_bytes());
        out.extend(n16.to_le_bytes());
        out.extend(size32.to_le_bytes());
        out.extend(off32.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }
}

/// Emits pickle opcodes by name.
#[derive(Default)]
struct P(Vec<u8>);

impl P {
    fn proto() -> P {
        P(vec![0x80, 2])
    }
    fn op(mut self, b: u8) -> P {
        self.0.push(b);
        self
    }
    fn raw(mut self, b: &[u8]) -> P {
        self.0.extend(b);
        self
    }
    fn s(self, s: &str) -> P {
        self.op(b'X')
            .raw(&(s.len() as u32).to_le_bytes())
            .raw(s.as_bytes())
    }
    fn int(self, i: i64) -> P {
        match i {
            0..=255 => self.op(b'K').raw(&[i as u8]),
            256..=65535 => self.op(b'M').raw(&(i as u16).to_le_bytes()),
            _ if i32::try_from(i).is_ok() => self.op(b'J').raw(&(i as i32).to_le_bytes()),
            _ => self.op(0x8a).raw(&[8]).raw(&i.to_le_bytes()),
        }
    }
    fn global(self, module: &str, name: &str) -> P {
        self.op(b'c').raw(format!("{module}\n{name}\n").as_bytes())
    }
    fn put(self, i: u32) -> P {
        if i < 256 {
            self.op(b'q').raw(&[i as u8])
        } else {
            self.op(b'r').raw(&i.to_le_bytes())
        }
    }
    fn get(self, i: u32) -> P {
        if i < 256 {
            self.op(b'h').raw(&[i as u8])
        } else {
            self.op(b'j').raw(&i.to_le_bytes())
        }
    }
    fn ints(self, xs: &[i64]) -> P {
        xs.iter().fold(self.op(b'('), |p, &x| p.int(x)).op(b't')
    }
    /// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`.
    fn tensor(self, key: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> P {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b'(')
            .op(b'(')
            .s("storage")
            .global("torch", "FloatStorage")
            .s(key)
            .s("cpu")
            .int(numel)
            .op(b't')
            .op(b'Q')
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(0x89)
            .global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b't')
            .op(b'R')
    }
    fn stop(self) -> Vec<u8> {
        self.op(b'.').0
    }
}

/// `{"class": class, "state_dict": {name: tensor...}, "init_args": {}}`.
/// (name, storage key, storage numel, offset, size, stride)
type TensorSpec<'a> = (&'a str, &'a str, i64, i64, &'a [i64], &'a [i64]);

fn decider_pickle(class: &str, tensors: &[TensorSpec]) -> Vec<u8> {
    let mut p = P::proto()
        .op(b'}')
        .op(b'(')
        .s("class")
        .s(class)
        .s("state_dict")
        .op(b'}')
        .op(b'(');
    for &(name, key, numel, offset, size, stride) in tensors {
        p = p.s(name).tensor(key, numel, offset, size, stride);
    }
    p.op(b'u').s("init_args").op(b'}').op(b'u').stop()
}

fn archive(pkl: &[u8], data: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut z = ZipBuilder::new()
        .add("dec/data.pkl", pkl)
        .add("dec/byteorder", b"little");
    for (key, bytes) in data {
        z = z.add(&format!("dec/data/{key}"), bytes);
    }
    z.zip64_eocd = true;
    z.build()
}

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn pickle_err(bytes: &[u8]) -> PickleErrorKind {
    match unpickle(bytes) {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            // Every error must print something readable.
            assert!(e.to_string().starts_with("pickle: at byte "), "{e}");
            e.kind
        }
    }
}

fn decider_err(bytes: &[u8]) -> String {
    match parse_iter_decider(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

// ------------------------------------------------------- fixture: parsing

#[test]
fn fixture_archive_layout() {
    let bytes = fixture_bytes();
    let zip = TorchZip::parse(&bytes).unwrap();
    assert_eq!(zip.prefix(), "iter_decider/");
    assert_eq!(zip.get("byteorder").unwrap(), b"little");
    assert_eq!(zip.get("version").unwrap(), b"3\n");
    assert_eq!(zip.entries().len(), 33);
    assert!(zip.get("data.pkl").unwrap().ends_with(b"."));
    assert!(matches!(zip.get("nope"), Err(ZipError::MissingEntry(n)) if n == "iter_decider/nope"));
}

#[test]
fn fixture_decider_parses() {
    let d = load_iter_decider(&fixture_dir().join("iter_decider.bin")).unwrap();
    assert_eq!(d.class_name, "MLPIterDecider");
    assert_eq!(d.archive_prefix, "iter_decider/");
    let a = &d.init_args;
    assert_eq!(a.topk, Some(16));
    assert_eq!(a.hidden_states_size, Some(64));
    assert_eq!(
        a.hidden_states_layer_nums.as_deref(),
        Some(&[1, 2, 3, 4][..])
    );
    assert_eq!(a.hidden_dims.as_deref(), Some(&[32, 32, 32][..]));
    assert_eq!(a.expansion_factor, Some(2));
    assert_eq!(a.dropout_rate, Some(0.0));
    assert_eq!(a.normalize_input, Some(false));
    assert_eq!(a.threshold, Some(0.6865));
    assert_eq!(a.dtype, Some(DType::F32));
    assert_eq!(a.max_iter, Some(2));
    let keys: Vec<&str> = a.raw.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "topk",
            "hidden_states_size",
            "hidden_states_layer_nums",
            "hidden_dims",
            "expansion_factor",
            "dropout_rate",
            "normalize_input",
            "threshold",
            "dtype",
            "max_iter"
        ]
    );

    // Names and shapes from the reference notes' table, in order.
    let mut want: Vec<(String, Vec<usize>)> = vec![
        ("threshold".into(), vec![]),
        ("logits_projection.weight".into(), vec![64, 16]),
        ("logits_projection.bias".into(), vec![64]),
        ("combined_projection.weight".into(), vec![32, 320]),
        ("combined_projection.bias".into(), vec![32]),
        ("backbone.input_projection.weight".into(), vec![32, 32]),
        ("backbone.input_projection.bias".into(), vec![32]),
    ];
    for i in 0..3 {
        let b = format!("backbone.blocks.{i}");
        want.push((format!("{b}.layer_norm.weight"), vec![32]));
        want.push((format!("{b}.layer_norm.bias"), vec![32]));
        want.push((format!("{b}.mlp.0.weight"), vec![64, 32]));
        want.push((format!("{b}.mlp.0.bias"), vec![64]));
        want.push((format!("{b}.mlp.3.weight"), vec![32, 64]));
        want.push((format!("{b}.mlp.3.bias"), vec![32]));
    }
    want.push(("backbone.output_layer.0.weight".into(), vec![32]));
    want.push(("backbone.output_layer.0.bias".into(), vec![32]));
    want.push(("backbone.output_layer.1.weight".into(), vec![1, 32]));
    want.push(("backbone.output_layer.1.bias".into(), vec![1]));
    let got: Vec<(String, Vec<usize>)> = d
        .state_dict
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    assert_eq!(got, want);
    assert!(d.state_dict.iter().all(|t| t.dtype == DType::F32));
    assert_eq!(d.tensor("threshold").unwrap().data, vec![0.6865f32]);
}

#[test]
fn fixture_decider_values_match_independent_reader() {
    let bytes = fixture_bytes();
    let d = parse_iter_decider(&bytes).unwrap();
    let expect = expect_json("fixture_decider_expect.json");
    assert!(expect["verified_with"].to_string().contains("torch.load"));
    check_against_expect(&d, &expect, &bytes);
}

#[test]
fn fixture_pickle_value_tree() {
    let bytes = fixture_bytes();
    let zip = TorchZip::parse(&bytes).unwrap();
    let root = unpickle(zip.get("data.pkl").unwrap()).unwrap();
    assert_eq!(
        root.get("class"),
        Some(&Value::Str("MLPIterDecider".into()))
    );
    assert_eq!(
        root.get("init_args").unwrap().get("dtype"),
        Some(&Value::DType(DType::F32))
    );
    match root
        .get("state_dict")
        .unwrap()
        .get("combined_projection.weight")
    {
        Some(Value::Tensor(t)) => {
            assert_eq!(t.storage.key, "3");
            assert_eq!(t.storage.location, "cpu");
            assert_eq!(t.storage.numel, 10240);
            assert_eq!(
                (t.storage_offset, t.size.as_slice(), t.stride.as_slice()),
                (0, &[32, 320][..], &[320, 1][..])
            );
            assert!(!t.requires_grad);
        }
        other => panic!("{other:?}"),
    }
}

// ----------------------------------------- generated bf16/f16 decider (torch)

#[test]
fn bf16_decider_parses() {
    let bytes = std::fs::read(data_dir().join("bf16_decider.bin")).unwrap();
    let zip = TorchZip::parse(&bytes).unwrap();
    assert_eq!(zip.prefix(), "bf16_decider/");
    // The generator's pickle needs >256 memo slots and a numel > 65535.
    let pkl = zip.get("data.pkl").unwrap();
    assert!(pkl.contains(&b'r') && pkl.contains(&b'j') && pkl.contains(&b'J'));

    let d = parse_iter_decider(&bytes).unwrap();
    check_against_expect(&d, &expect_json("bf16_decider_expect.json"), &bytes);
    assert_eq!(d.init_args.dtype, Some(DType::BF16));
    assert_eq!(d.init_args.threshold, Some(0.9));
    assert_eq!(d.init_args.max_iter, None);
    assert_eq!(d.tensor("threshold").unwrap().data, vec![0.8984375]);
    assert_eq!(
        d.tensor("logits_projection.weight").unwrap().shape,
        vec![16, 4097]
    );
    assert_eq!(
        d.tensor("backbone.output_layer.1.weight").unwrap().dtype,
        DType::F16
    );
    assert_eq!(
        d.tensor("backbone.blocks.6.dim_change.weight")
            .unwrap()
            .shape,
        vec![8, 12]
    );
}

#[test]
fn bf16_threshold_rounds_as_bf16() {
    let bytes = std::fs::read(data_dir().join("bf16_decider.bin")).unwrap();
    let d = parse_iter_decider(&bytes).unwrap();
    let cfg = serde_json::json!({
        "max_iter": 2,
        "iter_decider": "MLPIterDecider",
        "iter_decider_kwargs": {
            "topk": 4097, "hidden_states_size": 16, "hidden_states_layer_nums": [1, 3],
            "hidden_dims": [8, 8, 8, 8, 8, 8, 12, 8], "expansion_factor": 2,
            "threshold": 0.9, "dtype": {"__dtype__": true, "__str__": "torch.bfloat16"}
        },
        "adapter_kwargs": {"r": 4, "lora_alpha": 8}
    });
    let s = merge_settings(&d, &config_from(&cfg)).unwrap();
    assert_eq!(s.dtype, DType::BF16);
    assert_eq!(s.threshold, 0.9);
    assert_eq!(s.threshold_in_dtype, 0.8984375);
    assert_eq!(s.threshold_source, ThresholdSource::ConfigKwargs);
    assert_eq!((s.max_iter, s.kwargs_max_iter), (2, None));

    // Without the kwarg the state_dict value applies; without a dtype kwarg,
    // the threshold storage's dtype.
    let mut cfg2 = cfg.clone();
    let kw = cfg2["iter_decider_kwargs"].as_object_mut().unwrap();
    kw.remove("threshold");
    kw.remove("dtype");
    let s = merge_settings(&d, &config_from(&cfg2)).unwrap();
    assert_eq!(s.threshold_source, ThresholdSource::StateDict);
    assert_eq!(
        (s.threshold, s.threshold_in_dtype, s.dtype),
        (0.8984375, 0.8984375, DType::BF16)
    );
}

#[test]
fn dtype_rounding() {
    assert_eq!(round_to_dtype(0.6865, DType::F32), 0.6865000128746033);
    assert_eq!(round_to_dtype(0.1976, DType::F32), 0.19760000705718994);
    assert_eq!(round_to_dtype(0.9, DType::BF16), 0.8984375);
    assert_eq!(round_to_dtype(0.8, DType::BF16), 0.80078125);
    assert_eq!(round_to_dtype(0.9, DType::F16), 0.89990234375);
}

// ------------------------------------------------- tah_config precedence

#[test]
fn fixture_config_settings() {
    let d = parse_iter_decider(&fixture_bytes()).unwrap();
    let cfg = TahConfig::load(&fixture_dir().join("tah_config.json")).unwrap();
    assert_eq!(cfg.max_iter, 2);
    assert_eq!(cfg.iter_decider.as_deref(), Some("MLPIterDecider"));
    assert_eq!(cfg.iter_decider_kwargs.dtype, Some(DType::F32));
    assert_eq!(cfg.input_updater_topk(), 16);
    assert_eq!(
        (cfg.adapter_kwargs.r, cfg.adapter_kwargs.lora_alpha),
        (4, 8.0)
    );
    assert_eq!(
        cfg.adapter_kwargs.target_modules,
        Some(TargetModules::Name("all-linear".into()))
    );

    let s = merge_settings(&d, &cfg).unwrap();
    assert_eq!(s.topk, 16);
    assert_eq!(s.hidden_states_size, 64);
    assert_eq!(s.hidden_states_layer_nums, vec![1, 2, 3, 4]);
    assert_eq!(s.hidden_dims, vec![32, 32, 32]);
    assert_eq!(s.expansion_factor, 2);
    assert!(!s.normalize_input);
    assert_eq!(s.dtype, DType::F32);
    assert_eq!(s.threshold, 0.6865);
    assert_eq!(s.threshold_in_dtype, 0.6865000128746033);
    assert_eq!(s.threshold_source, ThresholdSource::ConfigKwargs);
    assert_eq!((s.max_iter, s.kwargs_max_iter), (2, Some(2)));
}

#[test]
fn config_kwargs_override_pickled_init_args() {
    let d = parse_iter_decider(&fixture_bytes()).unwrap();
    let mut cfg = fixture_config();
    let kw = cfg["iter_decider_kwargs"].as_object_mut().unwrap();
    kw.insert("threshold".into(), serde_json::json!(0.25));
    kw.remove("max_iter");
    cfg["max_iter"] = serde_json::json!(3);
    let s = merge_settings(&d, &config_from(&cfg)).unwrap();
    // The config wins over init_args (0.6865) and the state_dict tensor.
    assert_eq!(s.threshold, 0.25);
    assert_eq!(s.threshold_in_dtype, 0.25);
    assert_eq!(s.threshold_source, ThresholdSource::ConfigKwargs);
    // max_iter from the top level, not the decider's default of 3 or init_args.
    assert_eq!((s.max_iter, s.kwargs_max_iter), (3, None));

    // Threshold absent from the kwargs: the state_dict tensor's value.
    let mut cfg = fixture_config();
    cfg["iter_decider_kwargs"]
        .as_object_mut()
        .unwrap()
        .remove("threshold");
    let s = merge_settings(&d, &config_from(&cfg)).unwrap();
    assert_eq!(s.threshold_source, ThresholdSource::StateDict);
    assert_eq!(s.threshold, 0.6865000128746033);

    // A bf16 decider dtype in the config rounds the threshold to bf16.
    let mut cfg = fixture_config();
    cfg["iter_decider_kwargs"]["dtype"] = serde_json::json!("bfloat16");
    let s = merge_settings(&d, &config_from(&cfg)).unwrap();
    assert_eq!(s.threshold_in_dtype, round_to_dtype(0.6865, DType::BF16));
    assert_eq!(s.threshold_in_dtype, 0.6875);
}

#[test]
fn state_dict_threshold_is_optional_when_the_config_has_one() {
    let mut d = parse_iter_decider(&fixture_bytes()).unwrap();
    d.state_dict.retain(|t| t.name != "threshold");
    let s = merge_settings(&d, &config_from(&fixture_config())).unwrap();
    assert_eq!(s.threshold_in_dtype, 0.6865000128746033);
    let mut cfg = fixture_config();
    cfg["iter_decider_kwargs"]
        .as_object_mut()
        .unwrap()
        .remove("threshold");
    let e = merge_settings(&d, &config_from(&cfg))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no threshold"), "{e}");
}

#[test]
fn config_that_disagrees_with_state_dict_is_rejected() {
    let d = parse_iter_decider(&fixture_bytes()).unwrap();
    let mut cfg = fixture_config();
    cfg["iter_decider_kwargs"]["hidden_dims"] = serde_json::json!([32, 32]);
    let e = merge_settings(&d, &config_from(&cfg))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unexpected tensor 'backbone.blocks.2."), "{e}");

    let mut cfg = fixture_config();
    cfg["iter_decider_kwargs"]["topk"] = serde_json::json!(8);
    let e = merge_settings(&d, &config_from(&cfg))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'logits_projection.weight' has shape [64, 16]"),
        "{e}"
    );

    let mut cfg = fixture_config();
    cfg["iter_decider"] = serde_json::json!("AlwaysWrapperIterDecider");
    let e = merge_settings(&d, &config_from(&cfg))
        .unwrap_err()
        .to_string();
    assert!(e.contains("AlwaysWrapperIterDecider"), "{e}");
}

#[test]
fn config_parsing_errors_and_defaults() {
    let mut cfg = fixture_config();
    cfg["iter_decider_kwargs"]
        .as_object_mut()
        .unwrap()
        .remove("topk");
    let e = TahConfig::from_json(&cfg.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing field `topk`"), "{e}");

    let mut cfg = fixture_config();
    cfg.as_object_mut().unwrap().remove("max_iter");
    let e = TahConfig::from_json(&cfg.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing field `max_iter`"), "{e}");

    let mut cfg = fixture_config();
    cfg["iter_decider_kwargs"]["dtype"] =
        serde_json::json!({"__dtype__": true, "__str__": "torch.int8"});
    let e = TahConfig::from_json(&cfg.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported dtype 'torch.int8'"), "{e}");

    let mut cfg = fixture_config();
    cfg.as_object_mut().unwrap().remove("input_updater_kwargs");
    cfg["adapter_kwargs"]["target_modules"] = serde_json::json!(["q_proj", "v_proj"]);
    cfg["something_new"] = serde_json::json!({"x": 1});
    let c = TahConfig::from_json(&cfg.to_string()).unwrap();
    assert_eq!(c.input_updater_topk(), 100);
    assert_eq!(
        c.adapter_kwargs.target_modules,
        Some(TargetModules::List(vec!["q_proj".into(), "v_proj".into()]))
    );
}

// ------------------------------------------------------ hostile pickles

#[test]
fn forbidden_globals() {
    for (m, n) in [
        ("os", "system"),
        ("builtins", "eval"),
        ("posix", "system"),
        ("subprocess", "Popen"),
        ("torch", "load"),
    ] {
        let p = P::proto()
            .global(m, n)
            .s("echo pwned")
            .op(0x85)
            .op(b'R')
            .stop();
        match pickle_err(&p) {
            PickleErrorKind::ForbiddenGlobal { module, name } => {
                assert_eq!((module.as_str(), name.as_str()), (m, n))
            }
            other => panic!("{other:?}"),
        }
        let msg = unpickle(&p).unwrap_err().to_string();
        assert!(msg.contains(&format!("'{m}.{n}' is not allowed")), "{msg}");
    }
    // STACK_GLOBAL goes through the same allow-list.
    let p = P::proto().s("os").s("system").op(0x93).stop();
    assert!(matches!(
        pickle_err(&p),
        PickleErrorKind::ForbiddenGlobal { .. }
    ));
}

#[test]
fn unknown_and_disallowed_opcodes() {
    let e = unpickle(&P::proto().op(0xFF).stop()).unwrap_err();
    assert_eq!(
        (e.offset, e.kind.clone()),
        (2, PickleErrorKind::Opcode(0xFF))
    );
    assert_eq!(e.to_string(), "pickle: at byte 2: unknown opcode 0xff");
    let e = unpickle(&P::proto().op(b'(').raw(b"i__builtin__\neval\n").stop()).unwrap_err();
    assert_eq!(e.kind, PickleErrorKind::Opcode(b'i'));
    assert!(
        e.to_string().contains("opcode 0x69 (INST) is not allowed"),
        "{e}"
    );
    // BUILD would call __setstate__; OBJ/NEWOBJ construct objects.
    for op in [b'b', b'o', 0x81, b'S', b'P'] {
        assert_eq!(
            pickle_err(&P::proto().op(b'N').op(op).stop()),
            PickleErrorKind::Opcode(op)
        );
    }
}

#[test]
fn truncated_pickles() {
    assert_eq!(
        pickle_err(&P::proto().op(b'}').put(0).0),
        PickleErrorKind::NoStop
    );
    // The fixture's pickle without its final STOP.
    let bytes = fixture_bytes();
    let zip = TorchZip::parse(&bytes).unwrap();
    let pkl = zip.get("data.pkl").unwrap();
    assert_eq!(pickle_err(&pkl[..pkl.len() - 1]), PickleErrorKind::NoStop);
    // Cut inside an argument.
    for cut in [1, 7, 100, 1000] {
        assert!(matches!(
            pickle_err(&pkl[..cut]),
            PickleErrorKind::Truncated { .. } | PickleErrorKind::NoStop
        ));
    }
    assert!(matches!(pickle_err(&[]), PickleErrorKind::NoStop));
}

#[test]
fn missing_memo() {
    assert_eq!(
        pickle_err(&P::proto().get(7).stop()),
        PickleErrorKind::MissingMemo(7)
    );
    assert_eq!(
        pickle_err(&P::proto().get(70000).stop()),
        PickleErrorKind::MissingMemo(70000)
    );
}

#[test]
fn huge_string_lengths() {
    let p = P::proto()
        .op(b'X')
        .raw(&u32::MAX.to_le_bytes())
        .raw(b"abc")
        .stop();
    match pickle_err(&p) {
        PickleErrorKind::Truncated {
            opcode: "BINUNICODE",
            needed,
            available,
        } => {
            assert_eq!((needed, available), (u32::MAX as u64, 4))
        }
        other => panic!("{other:?}"),
    }
    let p = P::proto().op(0x8d).raw(&u64::MAX.to_le_bytes()).stop();
    assert!(matches!(
        pickle_err(&p),
        PickleErrorKind::Truncated {
            opcode: "BINUNICODE8",
            ..
        }
    ));
    let p = P::proto()
        .op(b'X')
        .raw(&2u32.to_le_bytes())
        .raw(&[0xff, 0xfe])
        .stop();
    assert_eq!(pickle_err(&p), PickleErrorKind::NotUtf8("BINUNICODE"));
}

#[test]
fn persistent_id_numel_overflow() {
    for numel in [i64::MAX, -1, (usize::MAX / 2) as i64] {
        let p = P::proto()
            .op(b'(')
            .s("storage")
            .global("torch", "FloatStorage")
            .s("0")
            .s("cpu")
            .int(numel)
            .op(b't')
            .op(b'Q')
            .stop();
        match pickle_err(&p) {
            PickleErrorKind::BadPersistentId(why) => {
                assert!(why.contains("negative or overflows"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }
    // LONG1 wider than 64 bits.
    let p = P::proto().op(0x8a).raw(&[9]).raw(&[1; 9]).stop();
    assert_eq!(pickle_err(&p), PickleErrorKind::IntTooLarge { bytes: 9 });
    // A persistent id that is not a storage tuple.
    let p = P::proto().s("storage").op(b'Q').stop();
    assert!(matches!(
        pickle_err(&p),
        PickleErrorKind::BadPersistentId(_)
    ));
}

#[test]
fn reduce_only_in_torch_shapes() {
    // OrderedDict with arguments.
    let p = P::proto()
        .global("collections", "OrderedDict")
        .int(1)
        .op(0x85)
        .op(b'R')
        .stop();
    assert!(matches!(pickle_err(&p), PickleErrorKind::BadReduce(_)));
    // Calling a dtype.
    let p = P::proto()
        .global("torch", "float32")
        .op(b')')
        .op(b'R')
        .stop();
    assert!(matches!(pickle_err(&p), PickleErrorKind::BadReduce(w) if w.contains("torch dtype")));
    // _rebuild_tensor_v2 with a non-storage argument.
    let p = P::proto()
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b'(')
        .s("x")
        .int(0)
        .ints(&[1])
        .ints(&[1])
        .op(0x89)
        .op(b'}')
        .op(b't')
        .op(b'R')
        .stop();
    assert!(matches!(pickle_err(&p), PickleErrorKind::BadReduce(w) if w.contains("storage")));
}

#[test]
fn memo_long_forms_and_ints() {
    // LONG_BINPUT/LONG_BINGET, BININT (negative too), LONG1, BINFLOAT,
    // SHORT_BINUNICODE, FRAME, TUPLE3, APPEND, SETITEM, NEWTRUE, NONE.
    let p = P(vec![0x80, 4])
        .op(0x95)
        .raw(&40u64.to_le_bytes())
        .op(b'}')
        .put(300)
        .op(0x8c)
        .raw(&[1])
        .raw(b"k")
        .op(b']')
        .int(-5)
        .op(b'a')
        .int(70000)
        .op(b'a')
        .op(0x8a)
        .raw(&[2, 0x00, 0x80])
        .op(b'a')
        .op(b'G')
        .raw(&0.5f64.to_be_bytes())
        .op(b'a')
        .op(b's')
        .s("t")
        .op(0x88)
        .op(b'N')
        .s("x")
        .put(1000)
        .op(0x87)
        .op(b's')
        .s("again")
        .get(1000)
        .op(b's')
        .stop();
    let v = unpickle(&p).unwrap();
    assert_eq!(
        v,
        Value::Dict(vec![
            (
                Value::Str("k".into()),
                Value::List(vec![
                    Value::Int(-5),
                    Value::Int(70000),
                    Value::Int(-32768),
                    Value::Float(0.5)
                ])
            ),
            (
                Value::Str("t".into()),
                Value::Tuple(vec![Value::Bool(true), Value::None, Value::Str("x".into())])
            ),
            (Value::Str("again".into()), Value::Str("x".into())),
        ])
    );
}

#[test]
fn protocol_4_memoize_and_stack_global() {
    let p = P(vec![0x80, 4])
        .op(0x8c)
        .raw(&[5])
        .raw(b"torch")
        .op(0x94)
        .op(0x8c)
        .raw(&[8])
        .raw(b"bfloat16")
        .op(0x94)
        .op(0x93)
        .op(0x94)
        .get(2)
        .get(0)
        .op(0x87)
        .stop();
    assert_eq!(
        unpickle(&p).unwrap(),
        Value::Tuple(vec![
            Value::DType(DType::BF16),
            Value::DType(DType::BF16),
            Value::Str("torch".into())
        ])
    );
}

#[test]
fn shared_mutable_memo_is_refused() {
    // Python would alias the list; a copy would silently miss the APPEND.
    let p = P::proto()
        .op(b']')
        .put(0)
        .get(0)
        .int(1)
        .op(b'a')
        .op(0x86)
        .stop();
    assert_eq!(pickle_err(&p), PickleErrorKind::SharedMutable(0));
}

#[test]
fn resource_limits() {
    // Memo doubling ("billion laughs"): each step is a tuple of two copies of
    // the previous one. The cell budget stops it long before memory runs out.
    let mut p = P::proto().s("xxxxxxxxxxxxxxxx").put(0);
    for i in 0..40u32 {
        p = p.get(i).get(i).op(0x86).put(i + 1);
    }
    assert!(matches!(
        pickle_err(&p.stop()),
        PickleErrorKind::TooLarge { .. }
    ));

    // Deep nesting: 100 000 nested lists.
    let mut p = P::proto();
    for _ in 0..100_000 {
        p = p.op(b']');
    }
    for _ in 0..99_999 {
        p = p.op(b'a');
    }
    assert_eq!(pickle_err(&p.stop()), PickleErrorKind::TooDeep);
    let mut p = P::proto().op(b'N');
    for _ in 0..100_000 {
        p = p.op(0x85);
    }
    assert_eq!(pickle_err(&p.stop()), PickleErrorKind::TooDeep);
    assert!(matches!(
        pickle_err(&P::proto().op(0x85).stop()),
        PickleErrorKind::StackUnderflow("TUPLE1")
    ));

    // Stack discipline.
    assert!(matches!(
        pickle_err(&P::proto().op(b't').stop()),
        PickleErrorKind::NoMark("TUPLE")
    ));
    assert!(matches!(
        pickle_err(&P::proto().op(b'a').stop()),
        PickleErrorKind::StackUnderflow("APPEND")
    ));
    assert!(matches!(
        pickle_err(&P::proto().op(b'N').op(b'N').op(b'a').stop()),
        PickleErrorKind::WrongType {
            opcode: "APPEND",
            expected: "list",
            found: "None"
        }
    ));
    assert!(matches!(
        pickle_err(&P::proto().op(b'N').op(b'N').stop()),
        PickleErrorKind::BadStop { stack: 2, marks: 0 }
    ));
    assert_eq!(
        pickle_err(&P(vec![0x80, 9]).stop()),
        PickleErrorKind::UnsupportedProtocol(9)
    );
}

// ---------------------------------------------------------- hostile zips

#[test]
fn zip_builder_round_trip() {
    for (z64e, z64o) in [(false, false), (true, false), (true, true)] {
        let mut z = ZipBuilder::new().add("r/a", b"hello").add("r/b", b"");
        z.zip64_eocd = z64e;
        z.zip64_offsets = z64o;
        let bytes = z.build();
        let zip = TorchZip::parse(&bytes).unwrap();
        assert_eq!(zip.prefix(), "r/");
        assert_eq!(zip.get("a").unwrap(), b"hello");
        assert_eq!(zip.get("b").unwrap(), b"");
    }
}

#[test]
fn zip_truncated_central_directory() {
    let bytes = fixture_bytes();
    // Shrink the central directory size in the zip64 record by 10 bytes: the
    // last header no longer fits.
    let z64 = bytes
        .windows(4)
        .rposition(|w| w == [0x50, 0x4b, 0x06, 0x06])
        .unwrap();
    let mut b = bytes.clone();
    let size = u64::from_le_bytes(b[z64 + 40..z64 + 48].try_into().unwrap());
    b[z64 + 40..z64 + 48].copy_from_slice(&(size - 10).to_le_bytes());
    assert!(matches!(
        TorchZip::parse(&b),
        Err(ZipError::TruncatedCentralDirectory {
            entry_index: 32,
            entries: 33
        })
    ));
    // Claim more entries than the directory can hold.
    let mut b = bytes.clone();
    b[z64 + 32..z64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        TorchZip::parse(&b),
        Err(ZipError::TooManyEntries { .. })
    ));
    // A directory offset past the end.
    let mut b = bytes.clone();
    b[z64 + 48..z64 + 56].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    let e = TorchZip::parse(&b).unwrap_err();
    assert!(
        matches!(e, ZipError::CentralDirectoryOutOfBounds { .. }),
        "{e}"
    );
    // Cut files: every prefix of the archive is an error, never a panic.
    for cut in (0..bytes.len())
        .step_by(997)
        .chain(bytes.len() - 30..bytes.len())
    {
        assert!(TorchZip::parse(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn zip_entry_offset_past_eof() {
    let mut z = ZipBuilder::new().add("r/a", b"hello");
    z.zip64_eocd = true;
    z.zip64_offsets = true;
    let mut bytes = z.build();
    // Point the zip64 extra's local header offset far past the end.
    let at = bytes
        .windows(4)
        .position(|w| w == [0x01, 0x00, 0x08, 0x00])
        .unwrap()
        + 4;
    bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = TorchZip::parse(&bytes).unwrap_err();
    assert!(
        matches!(&e, ZipError::EntryOutOfBounds { name, offset, .. } if name == "r/a" && *offset == 1 << 40),
        "{e}"
    );
    assert!(e.to_string().contains("'r/a'"), "{e}");

    // A size that runs past the end.
    let mut bytes = ZipBuilder::new().add("r/a", b"hello").build();
    let cd = bytes
        .windows(4)
        .position(|w| w == [0x50, 0x4b, 0x01, 0x02])
        .unwrap();
    for off in [cd + 20, cd + 24] {
        bytes[off..off + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
    }
    assert!(matches!(
        TorchZip::parse(&bytes),
        Err(ZipError::EntryOutOfBounds { .. })
    ));
}

#[test]
fn zip_compressed_entry() {
    let bytes = ZipBuilder::new()
        .add("r/a", b"x")
        .add_method("r/data.pkl", b"\x03\x00", 8)
        .build();
    let e = TorchZip::parse(&bytes).unwrap_err();
    assert_eq!(
        e,
        ZipError::Compressed {
            name: "r/data.pkl".into(),
            method: 8
        }
    );
    assert!(
        e.to_string()
            .contains("'r/data.pkl' is compressed (method 8)"),
        "{e}"
    );
}

#[test]
fn zip_other_defects() {
    // A flipped data byte fails the CRC.
    let mut b = fixture_bytes();
    let zip = TorchZip::parse(&b).unwrap();
    let e = zip
        .entries()
        .iter()
        .find(|e| e.name == "iter_decider/data/3")
        .unwrap()
        .clone();
    b[e.offset + 5] ^= 1;
    assert!(
        matches!(TorchZip::parse(&b), Err(ZipError::CrcMismatch { name, .. }) if name == "iter_decider/data/3")
    );
    // Duplicate names, names outside the root, no root at all, not a zip.
    let b = ZipBuilder::new().add("r/a", b"1").add("r/a", b"2").build();
    assert_eq!(
        TorchZip::parse(&b).unwrap_err(),
        ZipError::DuplicateEntry("r/a".into())
    );
    let b = ZipBuilder::new().add("r/a", b"1").add("s/a", b"2").build();
    assert!(matches!(
        TorchZip::parse(&b),
        Err(ZipError::OutsideRoot { .. })
    ));
    let b = ZipBuilder::new().add("a", b"1").build();
    assert!(matches!(
        TorchZip::parse(&b),
        Err(ZipError::NoRootPrefix(_))
    ));
    assert_eq!(
        TorchZip::parse(b"not a zip at all, clearly").unwrap_err(),
        ZipError::NoEndOfCentralDirectory
    );
    assert_eq!(
        TorchZip::parse(&ZipBuilder::new().build()).unwrap_err(),
        ZipError::Empty
    );
}

// ------------------------------------------------------ hostile deciders

#[test]
fn wrong_class() {
    let pkl = decider_pickle("TrivialIterDecider", &[]);
    let e = decider_err(&archive(&pkl, &[]));
    assert!(
        e.contains("decider class is 'TrivialIterDecider'; only MLPIterDecider"),
        "{e}"
    );
}

#[test]
fn storage_larger_than_its_entry() {
    let pkl = decider_pickle("MLPIterDecider", &[("w", "0", 10, 0, &[10], &[1])]);
    let e = decider_err(&archive(&pkl, &[("0", f32_bytes(&[1.0; 2]))]));
    assert!(
        e.contains(
            "storage '0' claims 10 float32 elements (40 bytes) but entry data/0 has 8 bytes"
        ),
        "{e}"
    );
    // A tensor past the end of its storage.
    let pkl = decider_pickle("MLPIterDecider", &[("w", "0", 4, 2, &[3], &[1])]);
    let e = decider_err(&archive(&pkl, &[("0", f32_bytes(&[1.0; 4]))]));
    assert!(
        e.contains("offset 2 + 3 elements exceeds storage '0' of 4 elements"),
        "{e}"
    );
    // A missing data entry.
    let pkl = decider_pickle("MLPIterDecider", &[("w", "7", 1, 0, &[], &[])]);
    let e = decider_err(&archive(&pkl, &[]));
    assert!(e.contains("no entry 'dec/data/7'"), "{e}");
}

#[test]
fn offsets_strides_and_sharing() {
    let storage = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    // Two tensors on one storage, one with an offset; size-1 dims may have
    // any stride.
    let pkl = decider_pickle(
        "MLPIterDecider",
        &[
            ("a", "0", 8, 0, &[2, 2], &[2, 1]),
            ("b", "0", 8, 5, &[1, 3], &[99, 1]),
        ],
    );
    let d = parse_iter_decider(&archive(&pkl, &[("0", storage.clone())])).unwrap();
    assert_eq!(d.state_dict[0].data, vec![0.0, 1.0, 2.0, 3.0]);
    assert_eq!(
        (d.state_dict[1].shape.clone(), d.state_dict[1].data.clone()),
        (vec![1, 3], vec![5.0, 6.0, 7.0])
    );
    // A transposed tensor is refused.
    let pkl = decider_pickle("MLPIterDecider", &[("t", "0", 8, 0, &[2, 4], &[1, 2])]);
    let e = decider_err(&archive(&pkl, &[("0", storage.clone())]));
    assert!(e.contains("'t' is not contiguous"), "{e}");
    // Duplicate state_dict keys.
    let pkl = decider_pickle(
        "MLPIterDecider",
        &[("a", "0", 8, 0, &[8], &[1]), ("a", "0", 8, 0, &[8], &[1])],
    );
    let e = decider_err(&archive(&pkl, &[("0", storage.clone())]));
    assert!(e.contains("'a' appears twice"), "{e}");
    // Size overflow.
    let big = i64::MAX / 4;
    let pkl = decider_pickle(
        "MLPIterDecider",
        &[("o", "0", 8, 0, &[big, big], &[big, 1])],
    );
    let e = decider_err(&archive(&pkl, &[("0", storage)]));
    assert!(e.contains("overflows"), "{e}");
}

#[test]
fn not_a_decider_payload() {
    let pkl = P::proto().ints(&[1, 2]).stop();
    let e = decider_err(&archive(&pkl, &[]));
    assert!(e.contains("data.pkl holds a tuple, expected a dict"), "{e}");
    let e = parse_iter_decider(b"garbage").unwrap_err();
    assert!(matches!(
        e,
        DeciderError::Zip(ZipError::NoEndOfCentralDirectory)
    ));
    let e = load_iter_decider(std::path::Path::new("/nonexistent/iter_decider.bin")).unwrap_err();
    assert!(matches!(e, DeciderError::Io { .. }));
}

// ------------------------------------------------------------ robustness

/// Deterministic single-byte mutations of the fixture's pickle and of the
/// archive's directory records: each must give Ok or Err, never panic.
#[test]
fn mutations_never_panic() {
    let bytes = fixture_bytes();
    let zip = TorchZip::parse(&bytes).unwrap();
    let pkl = zip.get("data.pkl").unwrap().to_vec();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..3000 {
        let mut p = pkl.clone();
        let at = next() as usize % p.len();
        p[at] = next() as u8;
        let _ = unpickle(&p);
    }
    // The central directory and end records: the last ~2.3 KB.
    let tail = bytes.len() - 2400;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        let at = tail + next() as usize % 2400;
        b[at] = next() as u8;
        let _ = parse_iter_decider(&b);
    }
}
