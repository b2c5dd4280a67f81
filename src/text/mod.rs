//! Text in and out: the tokenizer and the chat template a `.tah` file carries.
//!
//! The whole Hugging Face `tokenizer.json` travels in the file
//! (`tokenizer.huggingface.json`) and is run by the `tokenizers` crate, so there is
//! one tokenizer path for every model ([`tokenizer`]). The chat template
//! (`tokenizer.chat_template`) is rendered with `minijinja` the way Hugging Face's
//! `apply_chat_template` renders it ([`chat`]).

pub mod chat;
pub mod template_sandbox;
pub mod tokenizer;
pub mod tokenizer_limits;

#[cfg(test)]
mod tests;

pub use chat::{ChatMessage, ChatTemplate};
pub use tokenizer::{StreamDecoder, Tokenizer};

use std::fmt;

/// What went wrong reading, running or rendering the text side of a model.
#[derive(Debug)]
pub enum TextError {
    /// A metadata key is present but unusable.
    Metadata { key: String, reason: String },
    /// The embedded tokenizer.json could not be loaded.
    TokenizerJson(String),
    /// Tokenizing a text failed.
    Encode(String),
    /// The chat template does not parse.
    TemplateSyntax(String),
    /// The chat template failed while rendering (including `raise_exception`).
    TemplateRender(String),
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Metadata { key, reason } => write!(f, "metadata key {key}: {reason}"),
            TextError::TokenizerJson(e) => {
                write!(f, "cannot load the embedded tokenizer.json: {e}")
            }
            TextError::Encode(e) => write!(f, "cannot tokenize the text: {e}"),
            TextError::TemplateSyntax(e) => write!(f, "the chat template does not parse: {e}"),
            TextError::TemplateRender(e) => write!(f, "the chat template failed: {e}"),
        }
    }
}

impl std::error::Error for TextError {}

pub type Result<T, E = TextError> = std::result::Result<T, E>;

fn metadata_error(key: &str, reason: impl Into<String>) -> TextError {
    TextError::Metadata {
        key: key.to_string(),
        reason: reason.into(),
    }
}
