//! The `tah` command line. Every subcommand is a thin layer over the library.

mod bench;
mod chat;
mod common;
mod eval;
mod perplexity;
mod report;
mod run;
#[cfg(feature = "serve")]
mod serve;

use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "tah",
    version,
    about = "Run Think-at-Hard language models on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate from one prompt, streaming the answer.
    Run(run::RunArgs),
    /// Chat interactively (multi-turn; the cache is kept between turns).
    Chat(chat::ChatArgs),
    /// Answer a set of word problems (JSON lines) and grade them: accuracy,
    /// speed, hard-token rate.
    Eval(eval::EvalArgs),
    /// Perplexity of a text file, computed as llama.cpp's llama-perplexity does.
    Perplexity(perplexity::PerplexityArgs),
    /// Prompt-processing and generation speed (llama-bench style).
    Bench(bench::BenchArgs),
    /// Serve an OpenAI-compatible HTTP API and a tutor page.
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    /// Show what a .tah / GGUF file holds: architecture, dimensions, quant types,
    /// TaH settings, tokenizer and the tensor table.
    Info {
        /// The .tah or .gguf file.
        file: PathBuf,
        /// One JSON object instead of the text report.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C during an output's write leaves no temporary file behind. Not
    // for `serve`: it writes no files and shuts down gracefully on signals,
    // which these handlers (chained behind tokio's) would cut short.
    #[cfg(feature = "serve")]
    let serving = matches!(cli.command, Command::Serve(_));
    #[cfg(not(feature = "serve"))]
    let serving = false;
    if !serving {
        tah::app::output::remove_temporaries_on_signals();
    }
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::chat(a),
        Command::Eval(a) => eval::eval(a),
        Command::Perplexity(a) => perplexity::perplexity(a),
        Command::Bench(a) => bench::bench(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => serve::serve(a),
        Command::Info { file, json } => info(&file, json),
    };
    // Whatever stdout still buffers must reach it: a full disk or a closed
    // pipe is a failure, not a silent success.
    let result = result.and_then(|()| {
        std::io::stdout()
            .flush()
            .map_err(|e| format!("cannot write to stdout: {e}").into())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tah: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info(file: &std::path::Path, json: bool) -> Result<(), common::Error> {
    let f = tah::format::GgufFile::open(file)?;
    let info = tah::app::info::describe(&f);
    if json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&info)?
        )?;
    } else {
        write!(std::io::stdout(), "{}", tah::app::info::render(&info))?;
    }
    Ok(())
}
