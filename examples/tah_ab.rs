//! TaH-mode vs base-mode decode cost, measured in one process: a base-mode
//! session and a TaH session with `--hard-rate` on the same model decode the
//! same tokens alternately, token by token (who goes first alternates too), on
//! one worker, so load from other processes hits both alike. Prints the median
//! over repetitions of base time / TaH time and the realized hard fraction.
//!
//! `cargo run --release --example tah_ab -- MODEL.tah RATE TOKENS REPS`
use std::sync::Arc;
use std::time::Instant;
use tah::session::{Session, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let model = Arc::new(tah::model::Model::load(&a[1]).unwrap());
    let rate: f32 = a[2].parse().unwrap();
    let n: usize = a[3].parse().unwrap();
    let reps: usize = a[4].parse().unwrap();
    let opts = |mode, hard| SessionOptions {
        ctx: n + 8,
        tah: TahOptions {
            mode,
            hard_rate: hard,
            ..Default::default()
        },
        ..Default::default()
    };
    let pool = tah::threads::Threads::new(1).unwrap();
    pool.install(|| {
        let mut base = Session::new(model.clone(), &opts(ThinkMode::Never, None)).unwrap();
        let mut tah = Session::new(model.clone(), &opts(ThinkMode::Auto, Some(rate))).unwrap();
        let vocab = model.cfg.vocab as u64;
        let toks: Vec<u32> = (0..n as u64)
            .map(|i| ((i * 2654435761) % vocab) as u32)
            .collect();
        let mut ratios = Vec::new();
        let (mut hard, mut total) = (0, 0);
        for rep in 0..=reps {
            base.reset();
            tah.reset();
            let (mut tb, mut tt) = (0f64, 0f64);
            let timed = |s: &mut Session, t: u32, acc: &mut f64| {
                let start = Instant::now();
                s.decode(t).unwrap();
                *acc += start.elapsed().as_secs_f64();
            };
            for (i, &t) in toks.iter().enumerate() {
                // alternate who goes first
                if i % 2 == 0 {
                    timed(&mut base, t, &mut tb);
                    timed(&mut tah, t, &mut tt);
                } else {
                    timed(&mut tah, t, &mut tt);
                    timed(&mut base, t, &mut tb);
                }
            }
            if rep > 0 {
                ratios.push(tb / tt);
                hard += tah.token_info().iter().filter(|i| i.depth >= 2).count();
                total += n;
                eprintln!(
                    "rep {rep}: base {:.1} t/s, tah {:.1} t/s, ratio {:.4}",
                    n as f64 / tb,
                    n as f64 / tt,
                    tb / tt
                );
            }
        }
        ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "median ratio {:.4}  (min {:.4} max {:.4})  hard {:.4}",
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
            hard as f64 / total as f64
        );
    });
}
