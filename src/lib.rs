//! `tah`: an on-device inference engine for Think-at-Hard (TaH) language models.
//!
//! A `.tah` file is a GGUF v3 file (see [`format`]); weights are read in place
//! from a memory mapping, in the block formats of [`quant`].

pub mod embed;
pub mod eval;
pub mod ffi;
pub mod format;
pub mod generate;
pub mod html;
pub mod info;
pub mod kernels;
pub mod model;
pub mod perplexity;
pub mod quant;
pub mod sample;
pub mod session;
pub mod tah;
pub mod text;
pub mod threads;
pub mod tutor;
