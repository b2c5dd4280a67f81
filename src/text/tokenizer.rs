//! The tokenizer: the file's Hugging Face tokenizer.json run by the `tokenizers`
//! crate, plus the special ids the GGUF metadata names.
//!
//! Behaviour follows llama.cpp's `llama_tokenize(add_special, parse_special)`
//! and `llama_detokenize`:
//! - with `parse_special` (what [`Tokenizer::encode`] does), special tokens
//!   written in the text (`<|im_start|>`, `<think>`, ...) become their ids —
//!   every added token of tokenizer.json is matched in the text;
//! - without it ([`Tokenizer::encode_with`]), the added tokens marked `special`
//!   in tokenizer.json (the control tokens: role markers, end of turn) are
//!   plain text like any other, as with Hugging Face's `split_special_tokens`;
//!   added tokens not marked special (Qwen3's `<think>`) still match, as they do
//!   in llama.cpp (user-defined tokens). This is the safe choice for text a
//!   user typed;
//! - `add_special` puts BOS first only when the file says
//!   `tokenizer.ggml.add_bos_token = true` (the tokenizer.json post-processor is
//!   not used, so a file means the same thing here as in llama.cpp);
//! - decoding keeps special tokens' text (`"Paris.<|im_end|>"`).
//!
//! The file is untrusted: [`super::tokenizer_limits`] inspects the JSON before
//! `tokenizers` loads it, `encode` takes at most [`MAX_ENCODE_BYTES`] and no more than
//! [`MAX_NORMALIZED_BYTES`] after the worst-case growth of the normalizers and
//! pre-tokenizers, and every call into `tokenizers` is guarded against panics.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use tokenizers::decoders::DecoderWrapper;

use super::tokenizer_limits::{self, Growth};
use super::{metadata_error, Result, TextError};
use crate::format::{keys, GgufFile};

/// A token's `(start, end)` bytes in the text it came from.
pub(crate) type ByteRange = (usize, usize);

/// Token texts that end generation when a file lists no `tah.eog_token_ids`
/// (besides its eos id).
const FALLBACK_EOG_TEXTS: [&str; 6] = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|end|>",
];

/// Longest text `encode` takes: 16 MiB, about 4 million tokens, far beyond any
/// context.
pub const MAX_ENCODE_BYTES: usize = 16 << 20;

/// Most bytes the normalized, pre-tokenized text may reach in the worst case
/// (text length × the chain's growth factor): the `tokenizers` pipeline keeps about
/// 17 bytes per byte (text plus alignments), so this caps it near 2 GiB. Qwen3
/// (factor 6) reaches it only past 21 MiB, i.e. never, given [`MAX_ENCODE_BYTES`].
pub const MAX_NORMALIZED_BYTES: u64 = 128 << 20;

/// The streaming fallback holds back at most this many ids waiting for a complete
/// character, so each push decodes a short window.
const MAX_PENDING_IDS: usize = 32;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// A copy of `inner`'s added vocabulary (a few dozen entries and their
    /// matchers, not the model) that leaves control tokens in the text: the
    /// `parse_special = false` path.
    plain_added: tokenizers::AddedVocabulary,
    /// Ids of the added tokens marked `special` (control tokens), sorted.
    control: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    /// Sorted, deduplicated.
    eog: Vec<u32>,
    vocab_size: usize,
    growth: Growth,
    /// Each token's bytes, for streaming; built on first use.
    bytes: OnceLock<Option<TokenBytes>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("eog", &self.eog)
            .finish()
    }
}

impl Tokenizer {
    /// The file's tokenizer, or `None` when it carries no
    /// `tokenizer.huggingface.json` (such a model is driven by token ids only).
    pub fn from_gguf(file: &GgufFile) -> Result<Option<Tokenizer>> {
        let Some(json) = file.get(keys::TOKENIZER_HF_JSON) else {
            return Ok(None);
        };
        let json = json
            .as_str()
            .ok_or_else(|| metadata_error(keys::TOKENIZER_HF_JSON, "is not a string"))?;
        let mut tok = Tokenizer::from_json(json)?;
        let id = |key: &str| -> Result<Option<u32>> {
            match file.get(key) {
                None => Ok(None),
                Some(v) => {
                    let id = v
                        .as_u64()
                        .ok_or_else(|| metadata_error(key, "is not a token id"))?;
                    tok.check_id(key, id).map(Some)
                }
            }
        };
        let bos = id(keys::BOS_ID)?;
        let eos = id(keys::EOS_ID)?;
        let add_bos = match file.get(keys::ADD_BOS) {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| metadata_error(keys::ADD_BOS, "is not a bool"))?,
        };
        if add_bos && bos.is_none() {
            return Err(metadata_error(
                keys::ADD_BOS,
                format!("is true but {} is missing", keys::BOS_ID),
            ));
        }
        let eog = match file.get(keys::EOG_IDS) {
            Some(v) => {
                let arr = v
                    .as_array()
                    .ok_or_else(|| metadata_error(keys::EOG_IDS, "is not an array"))?;
                // Each id is checked against the vocabulary: more ids than that
                // would repeat one, and would let the file size our allocation.
                if arr.len() > tok.vocab_size {
                    return Err(metadata_error(
                        keys::EOG_IDS,
                        format!("{} ids for {} tokens", arr.len(), tok.vocab_size),
                    ));
                }
                let mut ids = Vec::new();
                ids.try_reserve_exact(arr.len())
                    .map_err(|_| metadata_error(keys::EOG_IDS, "out of memory"))?;
                for x in arr {
                    let id = x
                        .as_u64()
                        .ok_or_else(|| metadata_error(keys::EOG_IDS, "holds a non-integer"))?;
                    ids.push(tok.check_id(keys::EOG_IDS, id)?);
                }
                ids
            }
            None => tok.fallback_eog(eos),
        };
        tok.bos = bos;
        tok.eos = eos;
        tok.add_bos = add_bos;
        tok.set_eog(eog);
        Ok(Some(tok))
    }

    /// A tokenizer from a tokenizer.json text alone: no BOS is ever added, and
    /// generation ends on the well-known end tokens it contains (`<|im_end|>`,
    /// `<|endoftext|>`, `<|eot_id|>`, ...).
    pub fn from_json(json: &str) -> Result<Tokenizer> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| TextError::TokenizerJson(format!("{e}")))?;
        let growth = tokenizer_limits::check(&value).map_err(TextError::TokenizerJson)?;
        drop(value);
        let mut inner: tokenizers::Tokenizer = guard(|| json.parse())
            .map_err(TextError::TokenizerJson)?
            .map_err(|e| TextError::TokenizerJson(format!("{e}")))?;
        // Never used (see the module doc), and a hostile padding length is an
        // unbounded allocation: drop them.
        inner
            .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
            .with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| TextError::TokenizerJson(format!("{e}")))?;
        let max_added = inner
            .get_added_tokens_decoder()
            .keys()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        let vocab_size = inner.get_vocab_size(true).max(max_added);
        let mut plain_added = inner.get_added_vocabulary().clone();
        plain_added.set_encode_special_tokens(true);
        let mut control: Vec<u32> = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&id, _)| id)
            .collect();
        control.sort_unstable();
        let mut tok = Tokenizer {
            inner,
            plain_added,
            control,
            bos: None,
            eos: None,
            add_bos: false,
            eog: Vec::new(),
            vocab_size,
            growth,
            bytes: OnceLock::new(),
        };
        let eog = tok.fallback_eog(None);
        tok.set_eog(eog);
        Ok(tok)
    }

    fn check_id(&self, key: &str, id: u64) -> Result<u32> {
        if id < self.vocab_size as u64 {
            Ok(id as u32)
        } else {
            Err(metadata_error(
                key,
                format!(
                    "token id {id} is outside the tokenizer's {} tokens",
                    self.vocab_size
                ),
            ))
        }
    }

    fn fallback_eog(&self, eos: Option<u32>) -> Vec<u32> {
        let mut ids: Vec<u32> = eos.into_iter().collect();
        ids.extend(
            FALLBACK_EOG_TEXTS
                .iter()
                .filter_map(|t| self.inner.token_to_id(t)),
        );
        ids
    }

    fn set_eog(&mut self, mut ids: Vec<u32>) {
        ids.sort_unstable();
        ids.dedup();
        self.eog = ids;
    }

    /// Token ids of `text`. Special tokens written in the text are parsed as
    /// special tokens. With `add_special`, BOS comes first when the file's
    /// `tokenizer.ggml.add_bos_token` is true.
    ///
    /// A text over [`MAX_ENCODE_BYTES`], or whose worst-case normalized size
    /// (length × [`Tokenizer::growth`]) is over [`MAX_NORMALIZED_BYTES`], is an error.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.encode_with(text, add_special, true)
    }

    /// [`Tokenizer::encode`], choosing whether control tokens written in the
    /// text are parsed (`parse_special`) or stay plain text (see the module doc).
    pub fn encode_with(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        self.check_len(text)?;
        let bos = self.bos.filter(|_| add_special && self.add_bos);
        let mut out = Vec::new();
        out.extend(bos);
        if parse_special {
            let enc = guard(|| self.inner.encode_fast(text, false))
                .map_err(TextError::Encode)?
                .map_err(|e| TextError::Encode(format!("{e}")))?;
            out.extend_from_slice(enc.get_ids());
        } else {
            self.encode_plain_into(text, &mut out)?;
        }
        Ok(out)
    }

    /// The ids of `text` with control tokens left as text, appended to `out`:
    /// `tokenizers`' own pipeline (added tokens, normalizer, pre-tokenizer,
    /// model: what `encode_fast` runs, minus the post-processor we never use),
    /// with [`Tokenizer::plain_added`] as the added vocabulary.
    pub(crate) fn encode_plain_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        use tokenizers::{Model, OffsetType, PreTokenizer};
        let enc = guard(|| -> tokenizers::Result<tokenizers::Encoding> {
            let mut pre = self
                .plain_added
                .extract_and_normalize(self.inner.get_normalizer(), text);
            if let Some(p) = self.inner.get_pre_tokenizer() {
                p.pre_tokenize(&mut pre)?;
            }
            self.inner
                .get_model()
                .tokenize_in_pretokenized(&mut pre, None)?;
            pre.into_encoding(None, 0, OffsetType::None)
        })
        .map_err(TextError::Encode)?
        .map_err(|e| TextError::Encode(format!("{e}")))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }

    /// Ids of `text` (special tokens parsed, no BOS) with the byte range of
    /// `text` each one came from: the chat path uses it to tell the template's
    /// control tokens from text a message wrote.
    pub(crate) fn encode_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<ByteRange>)> {
        self.check_len(text)?;
        let enc = guard(|| self.inner.encode(text, false))
            .map_err(TextError::Encode)?
            .map_err(|e| TextError::Encode(format!("{e}")))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// The same limits for every encode path (see [`Tokenizer::encode`]).
    fn check_len(&self, text: &str) -> Result<()> {
        if text.len() > MAX_ENCODE_BYTES {
            return Err(TextError::Encode(format!(
                "the text is {} bytes long (limit {MAX_ENCODE_BYTES})",
                text.len()
            )));
        }
        let worst = (text.len() as u64).saturating_mul(self.growth.encode);
        if worst > MAX_NORMALIZED_BYTES {
            return Err(TextError::Encode(format!(
                "the text is {} bytes long and this tokenizer's normalizers can grow it \
                 {}-fold, to {worst} bytes (limit {MAX_NORMALIZED_BYTES})",
                text.len(),
                self.growth.encode
            )));
        }
        Ok(())
    }

    /// True when `id` is a control token (an added token marked `special`:
    /// role markers, end of turn, BOS/EOS).
    pub fn is_control(&self, id: u32) -> bool {
        self.control.binary_search(&id).is_ok()
    }

    /// The text of a control token, if `id` is one.
    pub(crate) fn control_text(&self, id: u32) -> Option<String> {
        if self.is_control(id) {
            self.inner.id_to_token(id)
        } else {
            None
        }
    }

    /// The texts of every control token (what a message must not write when its
    /// control tokens are to stay text).
    pub(crate) fn control_texts(&self) -> impl Iterator<Item = String> + '_ {
        self.control
            .iter()
            .filter_map(|&id| self.inner.id_to_token(id))
    }

    /// The bytes token `id` stands for, as a streaming decoder emits them
    /// (possibly part of a UTF-8 character; a control token's own text); `None`
    /// outside the vocabulary.
    pub fn token_piece(&self, id: u32) -> Option<Vec<u8>> {
        self.token_text(id)?;
        Some(match self.token_bytes() {
            Some(table) => table.get(id).to_vec(),
            None => self.decode(&[id]).into_bytes(),
        })
    }

    /// The text of `ids`, special tokens included. Ids outside the vocabulary
    /// are skipped; byte sequences that are not UTF-8 become U+FFFD.
    ///
    /// The output is at most `ids.len()` × 1 KiB (the longest vocabulary entry) ×
    /// [`Growth::decode`] bytes.
    pub fn decode(&self, ids: &[u32]) -> String {
        match guard(|| self.inner.decode(ids, false)) {
            Ok(Ok(s)) => s,
            // The decoders of tokenizer.json files do not fail on token strings;
            // should one, fall back to the raw token texts.
            _ => ids.iter().filter_map(|&id| self.token_text(id)).collect(),
        }
    }

    /// Worst-case growth factors of the normalizer/pre-tokenizer chain and of the
    /// decoder chain (see [`super::tokenizer_limits`]).
    pub fn growth(&self) -> Growth {
        self.growth
    }

    /// Bytes of `text` after the normalizers and pre-tokenizers (added tokens are
    /// not split out): what [`Tokenizer::growth`] bounds. For tests and fuzzing.
    #[doc(hidden)]
    pub fn pre_tokenized_len(&self, text: &str) -> Result<usize> {
        use tokenizers::{
            Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
        };
        guard(|| -> tokenizers::Result<usize> {
            let mut n = tokenizers::NormalizedString::from(text);
            if let Some(norm) = self.inner.get_normalizer() {
                norm.normalize(&mut n)?;
            }
            let mut p = PreTokenizedString::from(n);
            if let Some(pre) = self.inner.get_pre_tokenizer() {
                pre.pre_tokenize(&mut p)?;
            }
            Ok(
                p.get_splits(OffsetReferential::Normalized, OffsetType::Byte)
                    .iter()
                    .map(|(s, _, _)| s.len())
                    .sum(),
            )
        })
        .map_err(TextError::Encode)?
        .map_err(|e| TextError::Encode(format!("{e}")))
    }

    /// True when `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// Every id that ends generation (`tah.eog_token_ids`), sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `encode(_, true)` puts BOS first.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Number of token ids the tokenizer knows (base vocabulary plus added
    /// tokens). The model's embedding may have more rows (padding).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The vocabulary entry of `id` as tokenizer.json stores it (byte-level
    /// tokens in their printable form, e.g. `"Ġis"`; added tokens as written).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary entry or added token.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// A streaming detokenizer over this tokenizer.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    fn token_bytes(&self) -> Option<&TokenBytes> {
        self.bytes
            .get_or_init(|| TokenBytes::build(&self.inner, self.vocab_size))
            .as_ref()
    }
}

/// The bytes each token stands for, when the decoder is byte-level (GPT-2 style:
/// each byte is written as one printable character). Flat storage: token `i` is
/// `data[offsets[i]..offsets[i + 1]]`.
struct TokenBytes {
    data: Vec<u8>,
    offsets: Vec<u32>,
}

impl TokenBytes {
    fn build(tok: &tokenizers::Tokenizer, vocab_size: usize) -> Option<TokenBytes> {
        if !matches!(tok.get_decoder(), Some(DecoderWrapper::ByteLevel(_))) {
            return None;
        }
        let table = byte_level_table();
        let mut data = Vec::new();
        let mut offsets = Vec::with_capacity(vocab_size + 1);
        offsets.push(0u32);
        for id in 0..vocab_size as u32 {
            if let Some(t) = tok.id_to_token(id) {
                // Like the byte-level decoder: map every character back to its
                // byte; a token with a character outside the map (an added token
                // written in plain text) stands for its own UTF-8 bytes.
                let start = data.len();
                let mut mapped = true;
                for c in t.chars() {
                    match table.get(c as usize).copied().flatten() {
                        Some(b) => data.push(b),
                        None => {
                            mapped = false;
                            break;
                        }
                    }
                }
                if !mapped {
                    data.truncate(start);
                    data.extend_from_slice(t.as_bytes());
                }
            }
            offsets.push(u32::try_from(data.len()).ok()?);
        }
        Some(TokenBytes { data, offsets })
    }

    fn get(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i + 1 >= self.offsets.len() {
            return &[];
        }
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// GPT-2's byte-level alphabet, inverted: indexed by character code point, the
/// byte it stands for. Bytes that are printable Latin-1 (`!`..`~`, `¡`..`¬`,
/// `®`..`ÿ`) stand for themselves; the other 68 bytes are written as
/// U+0100, U+0101, ... in increasing byte order.
pub(super) fn byte_level_table() -> Vec<Option<u8>> {
    let mut table = vec![None; 0x100 + 68];
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut next = 0x100usize;
    for b in 0u32..256 {
        if printable(b) {
            table[b as usize] = Some(b as u8);
        } else {
            table[next] = Some(b as u8);
            next += 1;
        }
    }
    table
}

/// Turns generated ids into text as they come: `push` returns the text that the
/// new id completes, holding back the bytes of a character split across tokens.
/// The pieces concatenated equal [`Tokenizer::decode`] of all the ids (after
/// [`StreamDecoder::flush`]), and every piece is valid UTF-8.
///
/// With a byte-level tokenizer (Qwen, SmolLM, Llama 3, ...) it works on each
/// token's bytes and reuses its two buffers; with any other decoder it re-decodes
/// a short window of recent ids.
pub struct StreamDecoder<'t> {
    tok: &'t Tokenizer,
    /// Bytes not yet emitted (an incomplete UTF-8 sequence).
    pending: Vec<u8>,
    /// The last piece returned.
    out: String,
    /// Fallback path: recent ids and the window offsets.
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl<'t> StreamDecoder<'t> {
    pub fn new(tok: &'t Tokenizer) -> StreamDecoder<'t> {
        StreamDecoder {
            tok,
            pending: Vec::with_capacity(16),
            out: String::with_capacity(64),
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Feed one id; returns the newly completed text (possibly empty).
    pub fn push(&mut self, id: u32) -> &str {
        self.out.clear();
        match self.tok.token_bytes() {
            Some(table) => {
                self.pending.extend_from_slice(table.get(id));
                drain_utf8(&mut self.pending, &mut self.out, false);
            }
            None => self.push_window(id),
        }
        &self.out
    }

    /// End of the stream: returns whatever is held back (an incomplete sequence
    /// becomes U+FFFD, as in [`Tokenizer::decode`]) and resets the decoder.
    pub fn flush(&mut self) -> &str {
        self.out.clear();
        drain_utf8(&mut self.pending, &mut self.out, true);
        if self.read < self.ids.len() {
            let prev = self.tok.decode(&self.ids[self.prefix..self.read]);
            let all = self.tok.decode(&self.ids[self.prefix..]);
            if let Some(rest) = all.get(prev.len()..) {
                self.out.push_str(rest);
            }
        }
        self.ids.clear();
        self.prefix = 0;
        self.read = 0;
        &self.out
    }

    /// Fallback for decoders that are not byte-level: decode the window
    /// `ids[prefix..]` and emit what it adds to `ids[prefix..read]`, unless it
    /// ends in U+FFFD (a character still incomplete).
    ///
    /// Ids outside the vocabulary decode to nothing and are skipped; after
    /// [`MAX_PENDING_IDS`] ids without a complete character the window's text is
    /// emitted as it is, so the window (and each push's work) stays short.
    fn push_window(&mut self, id: u32) {
        if self.tok.token_text(id).is_none() {
            return;
        }
        self.ids.push(id);
        let prev = self.tok.decode(&self.ids[self.prefix..self.read]);
        let all = self.tok.decode(&self.ids[self.prefix..]);
        let stuck = self.ids.len() - self.read > MAX_PENDING_IDS;
        let extends = all.starts_with(&prev);
        let complete = extends && all.len() > prev.len() && !all.ends_with('\u{FFFD}');
        if complete || stuck {
            // When stuck and the decoder rewrote earlier text, that text is lost.
            if extends {
                self.out.push_str(&all[prev.len()..]);
            }
            self.prefix = self.read;
            self.read = self.ids.len();
            // Keep the window short: the ids before `prefix` are never read again.
            if self.prefix > 64 {
                self.ids.drain(..self.prefix);
                self.read -= self.prefix;
                self.prefix = 0;
            }
        }
    }
}

/// Run `f`, turning a panic inside `tokenizers` into an error (the last line of
/// defence: [`super::tokenizer_limits`] refuses the pipelines known to panic).
fn guard<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("the tokenizer panicked: {msg}")
    })
}

/// Move the complete UTF-8 text at the front of `bytes` to `out`, replacing each
/// invalid sequence with U+FFFD exactly as `String::from_utf8_lossy` does. An
/// incomplete sequence at the end stays in `bytes` unless `at_end`.
pub(super) fn drain_utf8(bytes: &mut Vec<u8>, out: &mut String, at_end: bool) {
    let mut start = 0;
    loop {
        match std::str::from_utf8(&bytes[start..]) {
            Ok(s) => {
                out.push_str(s);
                start = bytes.len();
                break;
            }
            Err(e) => {
                let valid = start + e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[start..valid]).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        start = valid + n;
                    }
                    None => {
                        if at_end {
                            out.push('\u{FFFD}');
                            start = bytes.len();
                        } else {
                            start = valid;
                        }
                        break;
                    }
                }
            }
        }
    }
    bytes.drain(..start);
}
