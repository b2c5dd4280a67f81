//! Converters to `.tah`.

pub mod decider;
pub mod pickle;
pub mod tah_config;
pub mod torchzip;
pub mod gguf_tokenizer;
