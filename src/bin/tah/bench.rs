//! `tah bench`: prompt processing (pp) and generation (tg) speed, in the spirit
//! of llama-bench: each test repeated, median/min/max tokens per second.

use crate::common::{Error, ModelArgs};
use clap::Args;
use serde::Serialize;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;
use tah::model::Model;
use tah::sample::Rng;
use tah::session::{Session, SessionOptions, MAX_BATCH, MAX_CTX};

/// The most repetitions of a test (`-r`).
const MAX_REPS: usize = 1000;
use tah::tah::TahOptions;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens for the pp test (0 = skip).
    #[arg(short = 'p', long, default_value_t = 128)]
    pub n_prompt: usize,
    /// Generated tokens for the tg test (0 = skip).
    #[arg(short = 'n', long, default_value_t = 64)]
    pub n_gen: usize,
    /// Repetitions of each test (after one warm-up).
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: usize,
    /// Thread counts to test, comma-separated (default: all cores).
    #[arg(long = "threads-list", value_delimiter = ',')]
    pub threads_list: Option<Vec<usize>>,
    /// One JSON object per line per test.
    #[arg(long, conflicts_with = "report")]
    pub json: bool,
    /// One JSON object for posting results: this machine (CPU model and
    /// features, kernel table), the file (architecture, tensor types), the
    /// settings and every test's figures.
    #[arg(long)]
    pub report: bool,
}

/// `--report`'s object.
#[derive(Serialize)]
struct Report {
    machine: crate::report::Machine,
    model: ReportModel,
    kv_type: &'static str,
    results: Vec<Row>,
}

#[derive(Serialize)]
struct ReportModel {
    file: String,
    bytes: u64,
    architecture: Option<String>,
    name: Option<String>,
    /// Tensors and bytes per weight type.
    types: std::collections::BTreeMap<String, tah::app::info::TypeCount>,
    /// A TaH file (decider and depth-2 LoRA), not a plain model.
    tah: bool,
}

#[derive(Serialize)]
struct Speed {
    median: f64,
    min: f64,
    max: f64,
}

#[derive(Serialize)]
struct Row {
    test: String,
    threads: usize,
    tokens_per_s: Speed,
    think: String,
    /// Achieved share of tokens that went deeper than depth 1.
    hard_rate: f64,
    model: String,
    model_bytes: u64,
    /// Peak resident memory of the process so far.
    peak_rss_bytes: u64,
}

/// Peak resident set size (Linux: VmHWM), 0 where unknown.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn speed(mut v: Vec<f64>) -> Speed {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Speed {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

pub fn bench(a: BenchArgs) -> Result<(), Error> {
    if a.reps == 0 || a.reps > MAX_REPS {
        return Err(format!("-r must be from 1 to {MAX_REPS}").into());
    }
    for (flag, n) in [("-p", a.n_prompt), ("-n", a.n_gen)] {
        if n > MAX_CTX - 8 {
            return Err(
                format!("{flag} {n} is more than a context holds ({MAX_CTX} tokens)").into(),
            );
        }
    }
    let mut args = a.model.clone();
    args.threads = None; // each test gets its own pool below
    if args.ctx == 0 {
        args.ctx = a.n_prompt.max(a.n_gen) + 8;
    }
    let (model, _) = args.open()?;
    let threads = a
        .threads_list
        .clone()
        .or(a.model.threads.map(|t| vec![t]))
        .unwrap_or_else(|| vec![tah::threads::cores()]);
    let opts = SessionOptions {
        ctx: args.ctx,
        kv_type: args.kv_type,
        batch: args.batch.max(a.n_prompt.min(MAX_BATCH)),
        tah: TahOptions {
            mode: args.think,
            threshold: args.threshold,
            max_depth: args.max_depth,
            hard_rate: a.model.hard_rate,
        },
    };
    let mut rng = Rng::new(42);
    let vocab = model.cfg.vocab as u64;
    let tokens: Vec<u32> = (0..a.n_prompt.max(a.n_gen))
        .map(|_| (rng.next_u64() % vocab) as u32)
        .collect();
    let mut rows = Vec::new();
    for &t in &threads {
        let pool = tah::threads::Threads::new(t)?;
        for (test, n) in [("pp", a.n_prompt), ("tg", a.n_gen)] {
            if n == 0 {
                continue;
            }
            let (speeds, hard) =
                pool.install(|| run_test(&model, &opts, &tokens[..n], test == "pp", a.reps))?;
            let row = Row {
                test: format!("{test}{n}"),
                threads: t,
                tokens_per_s: speed(speeds),
                think: match a.model.hard_rate {
                    Some(r) => format!("hard-rate:{r}"),
                    None => args.think.to_string(),
                },
                hard_rate: hard,
                model: a.model.model.display().to_string(),
                model_bytes: model.file().file_size(),
                peak_rss_bytes: peak_rss(),
            };
            if a.report {
                rows.push(row);
            } else if a.json {
                writeln!(std::io::stdout(), "{}", serde_json::to_string(&row)?)?;
            } else {
                writeln!(std::io::stdout(),
                    "{:<8} threads {t:>2}  {:>9.2} t/s  [{:.2} – {:.2}]  think {}  hard {:.1}%  peak RSS {:.1} MiB",
                    row.test,
                    row.tokens_per_s.median,
                    row.tokens_per_s.min,
                    row.tokens_per_s.max,
                    row.think,
                    100.0 * hard,
                    row.peak_rss_bytes as f64 / 1048576.0
                )?;
            }
        }
    }
    if a.report {
        let info = tah::app::info::describe(model.file());
        let report = Report {
            machine: crate::report::Machine::detect(),
            model: ReportModel {
                file: a.model.model.display().to_string(),
                bytes: info.file_size,
                architecture: info.architecture,
                name: info.name,
                types: info.types,
                tah: info.tah.is_some(),
            },
            kv_type: args.kv_type.name(),
            results: rows,
        };
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&report)?
        )?;
    }
    Ok(())
}

/// Tokens per second of each repetition (after one warm-up) and the achieved
/// share of tokens that went deeper than depth 1.
fn run_test(
    model: &Arc<Model>,
    opts: &SessionOptions,
    tokens: &[u32],
    prompt: bool,
    reps: usize,
) -> Result<(Vec<f64>, f64), tah::session::SessionError> {
    let mut s = Session::new(Arc::clone(model), opts)?;
    let mut speeds = Vec::with_capacity(reps);
    let (mut hard, mut total) = (0usize, 0usize);
    for rep in 0..=reps {
        s.reset();
        let t0 = Instant::now();
        if prompt {
            s.feed(tokens, None)?;
        } else {
            for &t in tokens {
                s.decode(t)?;
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        if rep > 0 {
            speeds.push(tokens.len() as f64 / dt);
            hard += s.token_info().iter().filter(|i| i.depth >= 2).count();
            total += tokens.len();
        }
    }
    Ok((speeds, hard as f64 / total.max(1) as f64))
}
