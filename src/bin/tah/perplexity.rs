//! `tah perplexity -m FILE -f TEXT [--ctx N] [--json]`.

use crate::common::{Error, ModelArgs};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to score.
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Print {"ppl", "chunks", "tokens", ...} as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn perplexity(mut a: PerplexityArgs) -> Result<(), Error> {
    if a.model.ctx == 0 {
        a.model.ctx = 512;
    }
    let ctx = a.model.ctx;
    let (model, mut session) = a.model.open()?;
    let tok = model
        .tokenizer
        .as_ref()
        .ok_or("this model has no tokenizer")?;
    let text =
        std::fs::read_to_string(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
    // Tokenized once, BOS first only when the model adds one (as llama.cpp).
    let tokens = tok.encode(&text, true)?;
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    let n_chunks = tokens.len() / ctx;
    if n_chunks == 0 {
        return Err(format!("{} tokens: fewer than one chunk of {ctx}", tokens.len()).into());
    }
    let json = a.json;
    let mut progress = |done: usize, total: usize, ppl: f64| {
        if !json {
            eprint!("\r[{done}/{total}] ppl {ppl:.4}");
            let _ = std::io::stderr().flush();
        }
    };
    let p = tah::app::perplexity::perplexity(&mut session, &tokens, ctx, bos, &mut progress)?;
    if json {
        writeln!(std::io::stdout(), "{}", serde_json::to_string(&p)?)?;
    } else {
        eprintln!();
        writeln!(
            std::io::stdout(),
            "perplexity: {:.4} ± {:.4} ({} chunks of {ctx}, {} tokens)",
            p.ppl,
            p.ppl_stderr,
            p.chunks,
            p.tokens
        )?;
    }
    Ok(())
}
