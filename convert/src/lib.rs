//! Converters to `.tah`.

pub mod gguf_tokenizer;
