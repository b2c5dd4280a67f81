//! The model: hyper-parameters and validation ([`config`]), weights as views into
//! the file ([`weights`]), the multi-depth KV cache ([`kv_cache`]) and the decoder
//! forward pass ([`forward`]).

pub mod config;
pub mod forward;
pub mod kv_cache;
pub mod weights;

pub use config::{Arch, Config, ModelError, ModelSource, TahConfig};
pub use weights::Model;
