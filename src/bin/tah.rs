//! The `tah` command line. Every subcommand is a thin layer over the library.

use clap::{Parser, Subcommand};
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
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tah: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Info { file, json } => {
            let f = tah::format::GgufFile::open(&file)?;
            let info = tah::info::describe(&f);
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", tah::info::render(&info));
            }
        }
    }
    Ok(())
}
