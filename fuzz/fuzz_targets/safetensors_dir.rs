//! Arbitrary bytes as a `model.safetensors` and as a
//! `model.safetensors.index.json`: headers and index must be accepted or
//! refused with an error; every tensor of a file that parses must read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tah_convert::safetensors_in::{parse_shard_index, Safetensors};

fuzz_target!(|data: &[u8]| {
    let _ = parse_shard_index(Path::new("model.safetensors.index.json"), data);
    let Ok(st) = Safetensors::from_bytes("model.safetensors", data.to_vec()) else {
        return;
    };
    let names: Vec<String> = st.names().map(str::to_string).collect();
    for name in &names {
        let t = st.get(name).expect("listed");
        let _ = t.dims();
        let _ = st.bytes(t);
        if let Ok(v) = st.f32(name) {
            assert_eq!(v.len(), t.numel(), "tensor '{name}': f32 length != numel");
        }
    }
});
