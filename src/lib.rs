//! `tah`: an on-device inference engine for Think-at-Hard (TaH) language models.
//!
//! A `.tah` file is a GGUF v3 file (see [`format`](mod@format)); weights are read in place
//! from a memory mapping, in the block formats of [`quant`]. A token's path
//! through these modules, in order, is `docs/ARCHITECTURE.md`.
//!
//! The engine, bottom up:
//! - [`format`](mod@format): the GGUF reader (validated, zero-copy) and writer; `.tah` keys.
//! - [`quant`]: block formats, byte-identical to ggml.
//! - [`kernels`]: matrix products and attention behind one run-time dispatch.
//! - [`threads`]: the pools the kernels' parallel sections run on.
//! - [`model`]: configuration and validation, weights as views, the forward
//!   pass, the multi-depth KV cache.
//! - [`tah`]: the Think-at-Hard step (decider, soft input, the depth loop).
//! - [`session`]: one conversation's state; feeding tokens.
//! - [`session_state`]: saving and restoring a session's state (bytes, files).
//! - [`sample`], [`generate`]: sampling, and generation with statistics.
//! - [`text`]: tokenizer and chat template.
//!
//! For apps: [`api`] (safe Rust), [`ffi`] (the C ABI over it, `include/tah.h`),
//! [`log`] (where the library's messages go).
//! Tools on top of the engine, used by the CLI: [`app`].

#![deny(unsafe_op_in_unsafe_fn)]

pub mod api;
pub mod app;
pub mod ffi;
pub mod format;
pub mod generate;
pub mod kernels;
pub mod log;
pub mod model;
pub mod quant;
pub mod sample;
pub mod session;
pub mod session_state;
pub mod tah;
pub mod text;
pub mod threads;
