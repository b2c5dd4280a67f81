//! Arbitrary bytes as a `.tah` / GGUF file: the reader must accept or refuse
//! them with an error, and a file that parses must load as a model or give a
//! `ModelError`. No panic, no allocation beyond what the bytes justify
//! (libFuzzer's -malloc_limit_mb catches a huge one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tah::format::GgufFile;
use tah::model::Model;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes("fuzz.tah", data.to_vec()) else {
        return;
    };
    // The text side reads the same metadata (chat template, tokenizer ids).
    let _ = tah::text::ChatTemplate::from_gguf(&file);
    let _ = Model::from_file(file);
});
