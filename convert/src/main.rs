//! `tah-convert INPUT -o OUT.tah [--quant TYPE] [--embd-type TYPE]`

use clap::Parser;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use tah::quant::GgmlType;

#[derive(Parser)]
#[command(
    name = "tah-convert",
    version,
    about = "Convert a TaH checkpoint, a Hugging Face model directory or a GGUF file to .tah",
    long_about = "Convert a TaH checkpoint (reference layout: config.json, model.safetensors, lora/, \
iter_decider.bin, tah_config.json, tokenizer files), a plain Hugging Face model directory, or a \
.gguf file into one .tah file (GGUF v3). The output is written to a temporary file and renamed \
into place at the end, so a failed or killed conversion leaves nothing at OUT."
)]
struct Args {
    /// A TaH / Hugging Face checkpoint directory, or a .gguf file.
    input: PathBuf,
    /// The .tah file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Store the decoder's linear weights as this type
    /// (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k). Default: keep the source types.
    /// The token embedding (token_embd) and the output matrix (output, the LM head) are
    /// not quantized: they keep their source type, or become f16 when the source is
    /// f32/bf16, unless --embd-type is given. `--quant f32` is f32 for every tensor:
    /// token_embd, output, and the LoRA and decider matrices too. Norms and biases are
    /// always f32.
    #[arg(long, value_parser = parse_type)]
    quant: Option<GgmlType>,
    /// Store token_embd / output as this type. Default: the source type (f16 when the
    /// source is f32/bf16 and --quant is given; f32 with --quant f32).
    #[arg(long, value_parser = parse_type)]
    embd_type: Option<GgmlType>,
    /// Attach random LoRA and decider weights (benchmarking only; the file is
    /// marked tah.synthetic). Shapes: the released 1.7B recipe unless overridden.
    #[arg(long)]
    synthetic_tah: bool,
    /// --synthetic-tah: LoRA rank.
    #[arg(long, default_value_t = 32)]
    synthetic_rank: usize,
    /// --synthetic-tah: decider block widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "512,512,512,512,512,512")]
    synthetic_dims: Vec<usize>,
    /// --synthetic-tah: decider hidden-state indices (default: four spread over the depth).
    #[arg(long, value_delimiter = ',')]
    synthetic_layers: Vec<usize>,
    /// --synthetic-tah: type of the decider's matrices (f32, f16 or bf16). f16
    /// has the engine's fastest one-row product; the recipe's checkpoint is bf16.
    #[arg(long, value_parser = parse_type, default_value = "f16")]
    synthetic_decider_type: GgmlType,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn parse_type(s: &str) -> Result<GgmlType, String> {
    let t = GgmlType::from_name(s).ok_or_else(|| {
        let all: Vec<&str> = tah::quant::ALL_TYPES.iter().map(|t| t.name()).collect();
        format!("unknown type '{s}' (one of {})", all.join(", "))
    })?;
    if !t.can_quantize() {
        return Err(format!("cannot quantize to {t} (it is read-only here)"));
    }
    Ok(t)
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Ctrl-C or a kill leaves no hidden temporary beside the output.
    tah::app::output::remove_temporaries_on_signals();
    let policy = tah_convert::TypePolicy {
        quant: args.quant,
        embd: args.embd_type,
    };
    let synthetic = args
        .synthetic_tah
        .then(|| tah_convert::synthetic::SyntheticTah {
            rank: args.synthetic_rank,
            hidden_dims: args.synthetic_dims.clone(),
            layers: args.synthetic_layers.clone(),
            decider_type: args.synthetic_decider_type,
            ..Default::default()
        });
    let opts = tah_convert::Options { policy, synthetic };
    let start = Instant::now();
    let show = !args.quiet && std::io::stderr().is_terminal();
    let mut last_draw = Instant::now();
    let mut progress = |done: usize, total: usize, name: &str| {
        if !show || (done != total && last_draw.elapsed().as_millis() < 100) {
            return;
        }
        last_draw = Instant::now();
        let width = 30;
        let filled = (done * width).checked_div(total).unwrap_or(width);
        let _ = write!(
            std::io::stderr(),
            "\r[{}{}] {done}/{total} {:<48.48}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            name
        );
        if done == total {
            let _ = writeln!(std::io::stderr());
        }
    };
    match tah_convert::convert_with(&args.input, &args.output, &opts, &mut progress) {
        Ok(s) => {
            eprintln!(
                "wrote {} ({} tensors, {:.2} MiB) in {:.1} s",
                args.output.display(),
                s.tensors,
                s.bytes as f64 / (1024.0 * 1024.0),
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tah-convert: error: {e}");
            ExitCode::FAILURE
        }
    }
}
