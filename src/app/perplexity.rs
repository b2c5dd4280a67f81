//! Perplexity the way llama.cpp's `llama-perplexity` computes it: the text is
//! tokenized once (BOS first when the model adds one), cut into chunks of `ctx`
//! tokens (BOS replacing each chunk's first token when the model adds BOS), each
//! chunk evaluated from an empty cache, and only the predictions of each chunk's
//! second half scored.

use crate::session::{Session, SessionError};
use serde::Serialize;

#[derive(Serialize, Debug, Clone)]
pub struct Perplexity {
    pub ppl: f64,
    /// Standard error of the estimate (llama.cpp's ±), from the per-token NLL.
    pub ppl_stderr: f64,
    pub chunks: usize,
    /// Tokens in the whole text.
    pub tokens: usize,
    /// Predictions scored.
    pub scored: usize,
}

/// `-log softmax(logits)[target]`, accumulated in f64.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    -(logits[target as usize] as f64 - max - sum.ln())
}

/// Scores `tokens` in chunks of `ctx`. `bos` is the BOS id when the model adds one.
/// `progress(done, total, ppl_so_far)` is called after each chunk.
pub fn perplexity(
    session: &mut Session,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<Perplexity, SessionError> {
    if ctx < 3 {
        // The second half of a chunk of 1 or 2 tokens predicts nothing: the
        // result would be 0/0.
        return Err(SessionError::BadOption(format!(
            "a perplexity context of {ctx} tokens scores no prediction: give at least 3"
        )));
    }
    let n_chunks = tokens.len() / ctx;
    if n_chunks == 0 {
        return Err(SessionError::ContextFull {
            ctx,
            used: 0,
            need: tokens.len().max(2 * ctx),
        });
    }
    let first = ctx / 2;
    let (mut sum, mut sum2, mut count) = (0f64, 0f64, 0usize);
    let mut chunk = vec![0u32; ctx];
    for c in 0..n_chunks {
        chunk.copy_from_slice(&tokens[c * ctx..(c + 1) * ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.reset();
        let mut on_row = |i: usize, row: &[f32], _: crate::tah::TokenInfo| {
            if i >= first && i + 1 < ctx {
                let v = nll(row, chunk[i + 1]);
                sum += v;
                sum2 += v * v;
                count += 1;
            }
        };
        session.feed(&chunk, Some(&mut on_row))?;
        progress(c + 1, n_chunks, (sum / count as f64).exp());
    }
    let mean = sum / count as f64;
    let var = (sum2 / count as f64 - mean * mean).max(0.0);
    let ppl = mean.exp();
    Ok(Perplexity {
        ppl,
        ppl_stderr: ppl * (var / (count as f64 - 1.0).max(1.0)).sqrt(),
        chunks: n_chunks,
        tokens: tokens.len(),
        scored: count,
    })
}
