//! Sessions share one `Arc<Model>` across threads: N sessions decoding at once
//! must produce exactly the tokens (and depths) that the same sessions produce
//! one after another. The model is immutable and every buffer is the session's
//! own, so any difference is a data race or shared scratch state.

mod common;
use common::*;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use tah::model::kv_cache::KvType;
use tah::model::Model;
use tah::session::{Session, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};

const THREADS: usize = 6;
const STEPS: usize = 40;

/// A distinct prompt per session (ids within the fixture's 512-token vocabulary).
fn prompt(i: usize) -> Vec<u32> {
    (0..5 + 3 * i)
        .map(|j| ((j * 37 + i * 101 + 7) % 512) as u32)
        .collect()
}

/// A mix of settings, so concurrent sessions run different code paths at once.
fn options(i: usize) -> SessionOptions {
    let mode = [ThinkMode::Auto, ThinkMode::Always, ThinkMode::Never][i % 3];
    SessionOptions {
        ctx: 128,
        kv_type: if i.is_multiple_of(2) {
            KvType::F16
        } else {
            KvType::F32
        },
        batch: [64, 4, 1][i % 3],
        tah: TahOptions {
            mode,
            ..Default::default()
        },
    }
}

/// Greedy decoding: the prompt, then `STEPS` argmax tokens; returns the tokens
/// generated and every token's depth.
fn run(model: Arc<Model>, i: usize, start: Option<&Barrier>) -> (Vec<u32>, Vec<u8>) {
    let mut s = Session::new(model, &options(i)).unwrap();
    if let Some(b) = start {
        b.wait();
    }
    let mut next = tah::sample::argmax(s.feed(&prompt(i), None).unwrap());
    let mut out = Vec::new();
    for _ in 0..STEPS {
        out.push(next);
        next = tah::sample::argmax(s.decode(next).unwrap());
    }
    out.push(next);
    let depths = s.token_info().iter().map(|t| t.depth).collect();
    (out, depths)
}

fn check_parallel_equals_sequential(path: PathBuf) {
    let model = load(&path);
    let sequential: Vec<_> = (0..THREADS)
        .map(|i| run(Arc::clone(&model), i, None))
        .collect();
    // Guard against a vacuous pass: the sessions must not all say the same thing.
    assert!(
        sequential.iter().any(|r| r.0 != sequential[0].0),
        "all sessions generated the same tokens"
    );
    assert!(
        sequential.iter().flat_map(|r| &r.1).any(|&d| d > 1),
        "no token went deeper than depth 1"
    );
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(THREADS));
        let parallel: Vec<_> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..THREADS)
                .map(|i| {
                    let (m, b) = (Arc::clone(&model), Arc::clone(&barrier));
                    sc.spawn(move || run(m, i, Some(&b)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (p, s)) in parallel.iter().zip(&sequential).enumerate() {
            assert_eq!(
                p.0, s.0,
                "round {round}: session {i} tokens differ between threads and sequential"
            );
            assert_eq!(
                p.1, s.1,
                "round {round}: session {i} depths differ between threads and sequential"
            );
        }
    }
    assert_eq!(
        Arc::strong_count(&model),
        1,
        "a session outlived its thread"
    );
}

#[test]
fn threads_decode_like_sequential_runs_f32() {
    check_parallel_equals_sequential(fixture_tah());
}

#[test]
fn threads_decode_like_sequential_runs_q8_0() {
    let out = scratch("concurrency").join("tah-tiny-q8_0.tah");
    convert(&fixture_dir(), &out, Some(tah::quant::GgmlType::Q8_0));
    check_parallel_equals_sequential(out);
}
