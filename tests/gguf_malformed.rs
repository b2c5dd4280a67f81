//! One test per class of malformed file: each must give its own clear error, never
//! a panic. The files are a small valid model, damaged in one place.

use tah::format::{keys, GgufErrorKind, GgufFile, GgufWriter, MetaValue};
use tah::model::{Config, ModelError};
use tah::quant::GgmlType;

/// A valid tiny qwen3 model (2 layers, dim 32) with f32 weights.
fn tiny_model(skip: Option<&str>, reshape: Option<(&str, Vec<u64>)>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    let a = |s: &str| keys::arch_key("qwen3", s);
    w.set(keys::ARCHITECTURE, MetaValue::String("qwen3".into()));
    w.set(&a(keys::arch::EMBEDDING_LENGTH), MetaValue::U32(32));
    w.set(&a(keys::arch::BLOCK_COUNT), MetaValue::U32(2));
    w.set(&a(keys::arch::FEED_FORWARD_LENGTH), MetaValue::U32(64));
    w.set(&a(keys::arch::HEAD_COUNT), MetaValue::U32(4));
    w.set(&a(keys::arch::HEAD_COUNT_KV), MetaValue::U32(2));
    w.set(&a(keys::arch::KEY_LENGTH), MetaValue::U32(8));
    w.set(&a(keys::arch::RMS_EPS), MetaValue::F32(1e-6));
    w.set(&a(keys::arch::ROPE_FREQ_BASE), MetaValue::F32(1e6));
    let mut shapes: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![32, 100])];
    for l in 0..2 {
        for (s, d) in [
            ("attn_norm", vec![32]),
            ("attn_q", vec![32, 32]),
            ("attn_k", vec![32, 16]),
            ("attn_v", vec![32, 16]),
            ("attn_output", vec![32, 32]),
            ("attn_q_norm", vec![8]),
            ("attn_k_norm", vec![8]),
            ("ffn_norm", vec![32]),
            ("ffn_gate", vec![32, 64]),
            ("ffn_up", vec![32, 64]),
            ("ffn_down", vec![64, 32]),
        ] {
            shapes.push((keys::blk(l, s, "weight"), d));
        }
    }
    shapes.push(("output_norm.weight".into(), vec![32]));
    let mut data = Vec::new();
    for (name, dims) in &shapes {
        if Some(name.as_str()) == skip {
            continue;
        }
        let dims = match &reshape {
            Some((n, d)) if n == name => d.clone(),
            _ => dims.clone(),
        };
        w.add_tensor(name, &dims, GgmlType::F32).unwrap();
        let n: u64 = dims.iter().product();
        data.push(vec![0u8; n as usize * 4]);
    }
    let mut sink = w.begin(Vec::new()).unwrap();
    for d in &data {
        sink.write_tensor(d).unwrap();
    }
    sink.finish().unwrap()
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, tah::format::GgufError> {
    GgufFile::from_bytes("test.tah", bytes)
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

/// Offset just past the (length-prefixed) string `name` in the header: a tensor
/// entry's or metadata entry's fields follow there.
fn name_field_end(bytes: &[u8], name: &str) -> usize {
    // The tensor table holds: len u64 | name | n_dims u32 | dims | type u32 | offset u64
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    find(bytes, &needle) + needle.len()
}

#[test]
fn the_valid_model_loads() {
    let f = parse(tiny_model(None, None)).unwrap();
    let c = Config::from_gguf(&f).unwrap();
    assert_eq!(
        (
            c.n_layers,
            c.dim,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.vocab
        ),
        (2, 32, 4, 2, 8, 100)
    );
    assert!(c.tied && c.qk_norm && !c.qkv_bias && c.tah.is_none());
}

#[test]
fn truncated_header() {
    let b = tiny_model(None, None);
    let e = parse(b[..100].to_vec()).err().expect("must fail");
    assert!(matches!(e.kind, GgufErrorKind::Truncated { .. }), "{e}");
    assert!(e.to_string().starts_with("test.tah: truncated"), "{e}");
}

#[test]
fn truncated_data() {
    let b = tiny_model(None, None);
    let e = parse(b[..b.len() - 1].to_vec()).err().expect("must fail");
    match &e.kind {
        GgufErrorKind::TensorPastEof { tensor, .. } => assert_eq!(tensor, "output_norm.weight"),
        _ => panic!("wrong error: {e}"),
    }
}

#[test]
fn bad_magic() {
    let mut b = tiny_model(None, None);
    b[..4].copy_from_slice(b"GGML");
    let e = parse(b).err().expect("must fail");
    assert!(matches!(e.kind, GgufErrorKind::BadMagic(_)), "{e}");
    assert!(e.to_string().contains("not a GGUF file"));
}

#[test]
fn unsupported_version() {
    let mut b = tiny_model(None, None);
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    let e = parse(b).err().expect("must fail");
    assert!(
        matches!(e.kind, GgufErrorKind::UnsupportedVersion(1)),
        "{e}"
    );
}

#[test]
fn string_length_past_eof() {
    let mut b = tiny_model(None, None);
    // The first key's length field sits right after the 24-byte header.
    b[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let e = parse(b).err().expect("must fail");
    match &e.kind {
        GgufErrorKind::Truncated { what, .. } => {
            assert!(what.contains("key of metadata entry 0"), "{e}")
        }
        _ => panic!("wrong error: {e}"),
    }
}

#[test]
fn tensor_offset_past_eof() {
    let mut b = tiny_model(None, None);
    let at = name_field_end(&b, "output_norm.weight") + 4 + 8 + 4; // n_dims, 1 dim, type
    b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = parse(b).err().expect("must fail");
    assert!(
        matches!(&e.kind, GgufErrorKind::TensorPastEof { tensor, .. } if tensor == "output_norm.weight"),
        "{e}"
    );
}

#[test]
fn tensor_offset_misaligned() {
    let mut b = tiny_model(None, None);
    let at = name_field_end(&b, "output_norm.weight") + 4 + 8 + 4;
    let off = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    b[at..at + 8].copy_from_slice(&(off + 4).to_le_bytes());
    let e = parse(b).err().expect("must fail");
    assert!(
        matches!(e.kind, GgufErrorKind::MisalignedTensor { .. }),
        "{e}"
    );
}

#[test]
fn dimensions_whose_product_overflows() {
    let mut b = tiny_model(None, None);
    let at = name_field_end(&b, "token_embd.weight") + 4; // after n_dims (2)
    b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    b[at + 8..at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = parse(b).err().expect("must fail");
    match &e.kind {
        GgufErrorKind::BadDims { tensor, why, .. } => {
            assert_eq!(tensor, "token_embd.weight");
            assert_eq!(*why, "overflow");
        }
        _ => panic!("wrong error: {e}"),
    }
}

#[test]
fn unknown_type_id() {
    let mut b = tiny_model(None, None);
    let at = name_field_end(&b, "output_norm.weight") + 4 + 8;
    b[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = parse(b).err().expect("must fail");
    assert!(
        matches!(e.kind, GgufErrorKind::UnknownTensorType { type_id: 99, .. }),
        "{e}"
    );
}

#[test]
fn duplicate_tensor_name() {
    let mut b = tiny_model(None, None);
    // Rename blk.1.attn_norm.weight to blk.0.attn_norm.weight (same length).
    let at = name_field_end(&b, "blk.1.attn_norm.weight") - "blk.1.attn_norm.weight".len();
    b[at..at + 5].copy_from_slice(b"blk.0");
    let e = parse(b).err().expect("must fail");
    assert!(
        matches!(&e.kind, GgufErrorKind::DuplicateTensor(t) if t == "blk.0.attn_norm.weight"),
        "{e}"
    );
}

#[test]
fn missing_required_tensor() {
    let f = parse(tiny_model(Some("blk.1.ffn_up.weight"), None)).unwrap();
    let e = Config::from_gguf(&f).expect_err("must fail");
    assert!(
        matches!(&e, ModelError::MissingTensor { tensor, .. } if tensor == "blk.1.ffn_up.weight"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "test.tah: missing required tensor 'blk.1.ffn_up.weight'"
    );
}

#[test]
fn wrong_tensor_shape() {
    let f = parse(tiny_model(
        None,
        Some(("blk.0.attn_k.weight", vec![32, 32])),
    ))
    .unwrap();
    let e = Config::from_gguf(&f).expect_err("must fail");
    match &e {
        ModelError::WrongShape {
            tensor, got, want, ..
        } => {
            assert_eq!(tensor, "blk.0.attn_k.weight");
            assert_eq!((got.clone(), want.clone()), (vec![32, 32], vec![16, 32]));
        }
        _ => panic!("wrong error: {e}"),
    }
}

#[test]
fn head_count_that_does_not_divide() {
    // Rewrite head_count_kv = 3 in place.
    let key = keys::arch_key("qwen3", keys::arch::HEAD_COUNT_KV);
    let mut b = tiny_model(None, None);
    let at = name_field_end(&b, &key) + 4; // type u32, then the u32 value
    b[at..at + 4].copy_from_slice(&3u32.to_le_bytes());
    let f = parse(b).unwrap();
    let e = Config::from_gguf(&f).expect_err("must fail");
    assert!(e.to_string().contains("does not divide"), "{e}");
}

#[test]
fn every_prefix_of_a_valid_file_is_an_error_not_a_panic() {
    let b = tiny_model(None, None);
    for n in (0..b.len()).step_by(7) {
        assert!(
            parse(b[..n].to_vec()).is_err(),
            "prefix of {n} bytes parsed"
        );
    }
}

#[test]
fn huge_array_count_is_refused_before_allocating() {
    let mut w = GgufWriter::new();
    w.set(
        "x.list",
        MetaValue::Array(vec![MetaValue::U32(1), MetaValue::U32(2)].into()),
    );
    let mut b = w.begin(Vec::new()).unwrap().finish().unwrap();
    let at = name_field_end(&b, "x.list") + 4 + 4; // value type, elem type
    b[at..at + 8].copy_from_slice(&(u64::MAX / 4).to_le_bytes());
    let e = parse(b).err().expect("must fail");
    assert!(matches!(e.kind, GgufErrorKind::Truncated { .. }), "{e}");
}

#[test]
fn writer_round_trip_keeps_every_value_type() {
    let mut w = GgufWriter::new();
    let values = vec![
        ("a.u8", MetaValue::U8(7)),
        ("a.i8", MetaValue::I8(-7)),
        ("a.u16", MetaValue::U16(700)),
        ("a.i16", MetaValue::I16(-700)),
        ("a.u32", MetaValue::U32(70000)),
        ("a.i32", MetaValue::I32(-70000)),
        ("a.f32", MetaValue::F32(0.6865)),
        ("a.bool", MetaValue::Bool(true)),
        ("a.str", MetaValue::String("héllo".into())),
        (
            "a.arr",
            MetaValue::Array(
                vec![MetaValue::String("x".into()), MetaValue::String("".into())].into(),
            ),
        ),
        (
            "a.nested",
            MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::I64(-1)].into())].into()),
        ),
        ("a.u64", MetaValue::U64(u64::MAX)),
        ("a.i64", MetaValue::I64(i64::MIN)),
        ("a.f64", MetaValue::F64(0.1)),
    ];
    for (k, v) in &values {
        w.set(k, v.clone());
    }
    w.add_tensor("t", &[3, 2], GgmlType::F32).unwrap();
    let mut sink = w.begin(Vec::new()).unwrap();
    let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    sink.write_tensor(&data).unwrap();
    let f = parse(sink.finish().unwrap()).unwrap();
    for (k, v) in &values {
        assert_eq!(f.get(k), Some(v), "{k}");
    }
    assert_eq!(f.get_u64(keys::ALIGNMENT), Some(32));
    let t = f.tensor("t").unwrap();
    assert_eq!(t.shape(), vec![2, 3]);
    assert_eq!(f.tensor_data(t), &data[..]);
    assert_eq!(f.data_start % 32, 0);
}
