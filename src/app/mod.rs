//! Applications built on the engine, used by the CLI (and its tests) but not
//! by the C ABI: the HTML depth map, the math tutor's prompt and thinking
//! filter, the evaluation harness, `tah info`'s description of a file,
//! perplexity, and the safe writing of output files.
//!
//! They live in the library, not in `src/bin/tah/`, so integration tests can
//! call them directly; they sit under `app` so that the crate root lists only
//! the engine (as llama.cpp keeps `tools/` apart from its library). Nothing in
//! the engine depends on them.

pub mod eval;
pub mod html;
pub mod info;
pub mod output;
pub mod perplexity;
pub mod tutor;
