//! Batched decoding ([`tah::session::Batch`]) gives each session exactly what
//! feeding it alone gives: the same greedy tokens, depths and logits. Sessions
//! join (their prompt in a pass of its own, between decode passes) and leave
//! at different steps, and think in different modes, as a server's requests do.

mod common;
use common::*;
use std::sync::Arc;
use tah::model::kv_cache::KvType;
use tah::model::Model;
use tah::sample::argmax;
use tah::session::{Batch, CancelFlag, Session, SessionError, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};

struct Stream {
    prompt: Vec<u32>,
    mode: ThinkMode,
    /// The pass in which its prompt is fed.
    joins: usize,
    n_gen: usize,
}

struct Out {
    tokens: Vec<u32>,
    depths: Vec<u8>,
    /// Logits before each generated token.
    logits: Vec<Vec<f32>>,
}

fn options(kv: KvType, mode: ThinkMode) -> SessionOptions {
    SessionOptions {
        ctx: 256,
        kv_type: kv,
        batch: 64,
        tah: TahOptions {
            mode,
            ..Default::default()
        },
    }
}

fn solo(model: &Arc<Model>, kv: KvType, st: &Stream) -> Out {
    let mut s = Session::new(Arc::clone(model), &options(kv, st.mode)).unwrap();
    let mut out = Out {
        tokens: vec![],
        depths: vec![],
        logits: vec![],
    };
    let mut logits = s.feed(&st.prompt, None).unwrap().to_vec();
    for _ in 0..st.n_gen {
        let t = argmax(&logits);
        out.logits.push(logits);
        out.tokens.push(t);
        logits = s.decode(t).unwrap().to_vec();
        out.depths.push(s.token_info().last().unwrap().depth);
    }
    out
}

fn batched(model: &Arc<Model>, kv: KvType, streams: &[Stream]) -> Vec<Out> {
    let mut sessions: Vec<Session> = streams
        .iter()
        .map(|st| Session::new(Arc::clone(model), &options(kv, st.mode)).unwrap())
        .collect();
    let mut batch = Batch::new(Arc::clone(model), 128, 256, kv).unwrap();
    let mut outs: Vec<Out> = streams
        .iter()
        .map(|_| Out {
            tokens: vec![],
            depths: vec![],
            logits: vec![],
        })
        .collect();
    let cancel = CancelFlag::default();
    // As a server runs them: each pass decodes every stream that has its
    // prompt in; a joining stream's prompt goes in a pass of its own.
    for pass in 0.. {
        let mut parts = vec![0; streams.len()];
        let mut tokens = vec![];
        for (k, st) in streams.iter().enumerate() {
            if pass > st.joins && outs[k].tokens.len() < st.n_gen {
                let t = argmax(sessions[k].logits());
                outs[k].logits.push(sessions[k].logits().to_vec());
                outs[k].tokens.push(t);
                parts[k] = 1;
                tokens.push(t);
            }
        }
        let joining: Vec<usize> = (0..streams.len())
            .filter(|&k| streams[k].joins == pass)
            .collect();
        if tokens.is_empty()
            && joining.is_empty()
            && pass > streams.iter().map(|s| s.joins).max().unwrap()
        {
            break;
        }
        if !tokens.is_empty() {
            batch.feed(&mut sessions, &parts, &tokens, &cancel).unwrap();
            for (k, &m) in parts.iter().enumerate() {
                if m == 1 {
                    outs[k]
                        .depths
                        .push(sessions[k].token_info().last().unwrap().depth);
                }
            }
        }
        for k in joining {
            let mut parts = vec![0; streams.len()];
            parts[k] = streams[k].prompt.len();
            batch
                .feed(&mut sessions, &parts, &streams[k].prompt, &cancel)
                .unwrap();
        }
    }
    outs
}

fn check(model: Arc<Model>, kv: KvType, streams: &[Stream], tol: f32) {
    let together = batched(&model, kv, streams);
    for (k, st) in streams.iter().enumerate() {
        let alone = solo(&model, kv, st);
        let diffs: Vec<f32> = (together[k].logits.iter().zip(&alone.logits))
            .map(|(a, b)| max_abs_diff(a, b))
            .collect();
        eprintln!("{kv:?} stream {k}: {diffs:?}");
        assert_eq!(together[k].tokens, alone.tokens, "stream {k}: tokens");
        assert_eq!(together[k].depths, alone.depths, "stream {k}: depths");
        let worst = (together[k].logits.iter().zip(&alone.logits))
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0.0, f32::max);
        eprintln!("stream {k} ({:?}): max |Δ logit| {worst:e}", st.mode);
        assert!(worst <= tol, "stream {k}: logits differ by {worst}");
    }
}

#[test]
fn fixture_streams_in_every_think_mode_match_their_solo_runs() {
    let p = fixture_prompt();
    let streams = [
        Stream {
            prompt: p.clone(),
            mode: ThinkMode::Auto,
            joins: 0,
            n_gen: 40,
        },
        Stream {
            prompt: p[5..].to_vec(),
            mode: ThinkMode::Always,
            joins: 0,
            n_gen: 25,
        },
        Stream {
            prompt: p[..10].to_vec(),
            mode: ThinkMode::Never,
            joins: 3,
            n_gen: 30,
        },
        Stream {
            prompt: p.iter().rev().copied().collect(),
            mode: ThinkMode::Budget(0.3),
            joins: 7,
            n_gen: 20,
        },
    ];
    for kv in [KvType::F32, KvType::F16] {
        check(load(&fixture_tah()), kv, &streams, 0.0);
    }
}

/// Four greedy streams of a real model, with f16 and q8_0 caches (Qwen2's
/// q8_0 cache splits the key bias out: its angle table is the batch's).
fn real_model_streams(file: &str) {
    let Some(path) = real_tah(file, None) else {
        return;
    };
    let model = load(&path);
    let tok = model.tokenizer.as_ref().unwrap();
    let questions = [
        "What is 12 times 7?",
        "Name three colours of the rainbow.",
        "Write a haiku about the sea.",
        "If a train travels 60 km in one hour, how far does it go in 3 hours?",
    ];
    let streams: Vec<Stream> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| Stream {
            prompt: tok.encode(q, true).unwrap(),
            mode: ThinkMode::Never,
            joins: i * 2,
            n_gen: 40,
        })
        .collect();
    for kv in [KvType::F16, KvType::Q8_0] {
        check(Arc::clone(&model), kv, &streams, 0.0);
    }
}

#[test]
fn smollm2_four_greedy_streams_match_their_solo_runs() {
    real_model_streams("SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn qwen25_four_greedy_streams_match_their_solo_runs() {
    real_model_streams("Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf");
}

#[test]
fn a_failed_pass_changes_no_session() {
    let model = load(&fixture_tah());
    let p = fixture_prompt();
    let mut sessions: Vec<Session> = (0..2)
        .map(|_| Session::new(Arc::clone(&model), &options(KvType::F32, ThinkMode::Auto)).unwrap())
        .collect();
    let mut batch = Batch::new(Arc::clone(&model), 64, 256, KvType::F32).unwrap();
    let cancel = CancelFlag::default();
    batch
        .feed(
            &mut sessions,
            &[4, 4],
            &[&p[..4], &p[..4]].concat(),
            &cancel,
        )
        .unwrap();
    let before: Vec<(Vec<u32>, Vec<f32>)> = sessions
        .iter()
        .map(|s| (s.tokens().to_vec(), s.logits().to_vec()))
        .collect();
    // A bad token in the second session: refused before anything runs.
    let vocab = model.cfg.vocab as u32;
    let r = batch.feed(&mut sessions, &[1, 1], &[p[4], vocab], &cancel);
    assert!(matches!(r, Err(SessionError::BadToken { .. })), "{r:?}");
    // A cancel while running: every cache cut back.
    cancel.cancel();
    let r = batch.feed(&mut sessions, &[1, 1], &[p[4], p[5]], &cancel);
    assert_eq!(r, Err(SessionError::Cancelled));
    for (s, (t, l)) in sessions.iter().zip(&before) {
        assert_eq!(s.tokens(), &t[..]);
        assert_eq!(s.logits(), &l[..]);
        assert_eq!(s.cache.len(1), 4);
    }
    // Counts that do not add up, and too many rows, are errors.
    cancel.clear();
    assert!(batch
        .feed(&mut sessions, &[1, 1], &[p[4]], &cancel)
        .is_err());
    let many = vec![p[0]; 65];
    assert!(batch.feed(&mut sessions, &[65, 0], &many, &cancel).is_err());
    // After all that, the sessions go on as if nothing happened.
    batch
        .feed(&mut sessions, &[1, 1], &[p[4], p[4]], &cancel)
        .unwrap();
    assert_eq!(sessions[0].logits(), sessions[1].logits());
}

/// Exact mode: a prompt's logits do not depend on how it was cut into passes
/// (a server's reused prefix is such a cut), nor on who shared the pass.
#[test]
fn exact_mode_logits_do_not_depend_on_chunking() {
    let Some(path) = real_tah("Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf", None) else {
        return;
    };
    let model = load(&path);
    let tok = model.tokenizer.as_ref().unwrap();
    let p = tok
        .encode(
            "A shop sells pencils at 35 cents each. How much do 12 pencils cost?",
            true,
        )
        .unwrap();
    let other = tok.encode("Write a haiku about the sea.", true).unwrap();
    let cuts: [&[usize]; 4] = [
        &[p.len()],
        &[13, p.len() - 13],
        &[p.len() - 1, 1],
        &[1, 5, 9, p.len() - 15],
    ];
    let mut batch = Batch::new(Arc::clone(&model), 64, 256, KvType::F16).unwrap();
    batch.set_exact(true);
    let cancel = CancelFlag::default();
    let mut results = vec![];
    for (ci, cut) in cuts.iter().enumerate() {
        let mut sessions: Vec<Session> = (0..2)
            .map(|_| {
                Session::new(Arc::clone(&model), &options(KvType::F16, ThinkMode::Never)).unwrap()
            })
            .collect();
        let mut at = 0;
        for &n in cut.iter() {
            // The second cut shares its passes with another session's prompt.
            let (parts, toks) = if ci == 1 && at == 0 {
                (vec![n, other.len()], [&p[..n], &other[..]].concat())
            } else {
                (vec![n, 0], p[at..at + n].to_vec())
            };
            batch.feed(&mut sessions, &parts, &toks, &cancel).unwrap();
            at += n;
        }
        results.push(sessions[0].logits().to_vec());
    }
    for (ci, r) in results.iter().enumerate().skip(1) {
        assert_eq!(
            max_abs_diff(r, &results[0]),
            0.0,
            "cut {:?} differs from one pass",
            cuts[ci]
        );
    }
}
