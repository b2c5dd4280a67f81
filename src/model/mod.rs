//! The model: hyper-parameters and validation ([`config`]).

pub mod config;

pub use config::{Arch, Config, ModelError, TahConfig};
