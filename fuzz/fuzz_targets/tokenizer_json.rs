//! A hostile tokenizer.json with a text: the input is `JSON \0 TEXT` (JSON cannot
//! hold a raw NUL). The JSON must load or be refused with an error; when it loads:
//! - encoding the text succeeds or fails with an error, never panics, hangs or
//!   exhausts memory;
//! - the normalized, pre-tokenized text stays within the growth factor the load-time
//!   checks computed (`Tokenizer::growth`);
//! - decoding ids cut from the text stays within ids × 1 KiB × the decoder's factor,
//!   and the streaming decoder runs over them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tah::text::tokenizer_limits::MAX_TOKEN_BYTES;
use tah::text::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let (json, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    let Ok(tok) = Tokenizer::from_json(json) else {
        return;
    };
    let growth = tok.growth();
    if let Ok(s) = std::str::from_utf8(text) {
        let _ = tok.encode(s, true);
        if let Ok(n) = tok.pre_tokenized_len(s) {
            assert!(
                n as u64 <= growth.encode * s.len() as u64,
                "{n} bytes from {} (growth {growth:?})",
                s.len()
            );
        }
    }
    // Ids from the text, in and out of the vocabulary.
    let limit = tok.vocab_size() as u32 + 16;
    let ids: Vec<u32> = text
        .chunks(3)
        .map(|c| c.iter().fold(0u32, |a, &b| a << 8 | b as u32) % limit)
        .collect();
    let whole = tok.decode(&ids);
    let bound = (ids.len() * MAX_TOKEN_BYTES) as u64 * growth.decode;
    assert!(
        whole.len() as u64 <= bound,
        "decode gave {} bytes for {} ids (growth {growth:?})",
        whole.len(),
        ids.len()
    );
    let mut d = tok.stream_decoder();
    let mut pieces = 0usize;
    for &id in &ids {
        pieces += d.push(id).len();
    }
    pieces += d.flush().len();
    assert!(pieces as u64 <= bound + 3 * ids.len() as u64);
});
