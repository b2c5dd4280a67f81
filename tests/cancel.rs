//! Cancelling a running feed from another thread: it stops within one layer's
//! work, forgets the chunk it was in (at every depth) and keeps the completed
//! ones, so feeding the rest afterwards gives what an uninterrupted feed gives.

mod common;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tah::model::kv_cache::KvType;
use tah::model::Model;
use tah::session::{Session, SessionError, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};

/// Feeds `prompt` on another thread and cancels it after `after`; returns the
/// feed's result and the time from `cancel()` to the feed's return (`None`
/// when the feed ended before the cancel).
fn feed_and_cancel(
    s: &mut Session,
    prompt: &[u32],
    after: Duration,
) -> (Result<(), SessionError>, Option<Duration>) {
    let flag = s.cancel_flag();
    std::thread::scope(|scope| {
        let feeder = scope.spawn(|| {
            let r = s.feed(prompt, None).map(|_| ());
            (r, Instant::now())
        });
        std::thread::sleep(after);
        let cancelled_at = Instant::now();
        flag.cancel();
        let (r, returned_at) = feeder.join().unwrap();
        let latency = returned_at.checked_duration_since(cancelled_at);
        (r, latency)
    })
}

/// Qwen2.5-Coder-0.5B, a 2,000-token prompt cancelled after about a second
/// (later if one chunk takes longer than 0.4 s here, so that some chunks
/// complete): `Cancelled`, a whole number of chunks kept, and after feeding
/// the rest the final logits are bit-exact those of an uninterrupted feed
/// (same chunks, same arithmetic: the resumed feed starts at a chunk boundary).
#[test]
fn cancel_mid_prompt_keeps_whole_chunks_and_resumes_exactly() {
    // Converted (a GGUF loads without its tokenizer).
    let Some(path) = real_tah("Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf", None) else {
        return;
    };
    let model: Arc<Model> = load(&path);
    let text = std::fs::read_to_string(shared().join("anchors/gpl-3.txt")).unwrap();
    let all = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(&text, true)
        .unwrap();
    let prompt = &all[..2000];
    let opts = SessionOptions {
        ctx: 2048,
        batch: 64,
        ..Default::default()
    };
    let mut s = Session::new(Arc::clone(&model), &opts).unwrap();
    let t = Instant::now();
    s.feed(&prompt[..64], None).unwrap();
    let after = Duration::from_secs(1).max(t.elapsed() * 5 / 2);
    s.reset();
    let (r, latency) = feed_and_cancel(&mut s, prompt, after);
    assert_eq!(r, Err(SessionError::Cancelled));
    let latency = latency.expect("the feed returned before the cancel");
    let n = s.n_past();
    eprintln!(
        "cancel after {after:?} → return: {:.1} ms; kept {n} of {} tokens ({} chunks)",
        latency.as_secs_f64() * 1e3,
        prompt.len(),
        n / 64
    );
    assert!(latency < Duration::from_secs(2), "latency {latency:?}");
    assert_eq!(n % 64, 0, "a whole number of chunks");
    assert!(n > 0 && n < prompt.len(), "{n} tokens kept");
    assert_eq!(s.tokens(), &prompt[..n]);
    assert_eq!(s.cache.len(1), n);
    assert_eq!(s.token_info().len(), n);

    // The flag stays set until cleared: the next feed stops at once.
    assert_eq!(
        s.feed(&prompt[n..], None).map(|_| ()),
        Err(SessionError::Cancelled)
    );
    assert_eq!(s.n_past(), n);
    s.cancel_flag().clear();
    let resumed = s.feed(&prompt[n..], None).unwrap().to_vec();

    let mut whole = Session::new(Arc::clone(&model), &opts).unwrap();
    let want = whole.feed(prompt, None).unwrap().to_vec();
    assert_eq!(s.n_past(), prompt.len());
    let diff = max_abs_diff(&resumed, &want);
    eprintln!("resumed vs uninterrupted final logits: max |Δ| = {diff:e}");
    assert!(resumed == want, "max |Δ| = {diff}");
}

fn tah_session(ctx: usize, batch: usize) -> Session {
    let opts = SessionOptions {
        ctx,
        kv_type: KvType::F32,
        batch,
        tah: TahOptions {
            mode: ThinkMode::Auto,
            ..Default::default()
        },
    };
    Session::new(load(&fixture_tah()), &opts).unwrap()
}

/// The TaH fixture (depth 2 on): cancels at 40 moments spread over the time of
/// a 480-token prompt (chunks of 16: depth 1, the decider, depth 2 of the
/// hard rows). Whatever moment it lands on, the session holds whole chunks at both
/// depths (depth-2 slots only for kept positions, one per hard token), and
/// resuming gives the uninterrupted run's depths and final logits exactly.
#[test]
fn tah_cancel_mid_prompt_stays_consistent_at_depth_2() {
    let prompt: Vec<u32> = (0..480u32).map(|i| (i * 37 + 11) % 512).collect();
    let mut whole = tah_session(512, 16);
    let t = Instant::now();
    let want = whole.feed(&prompt, None).unwrap().to_vec();
    let took = t.elapsed();
    let want_info: Vec<u8> = whole.token_info().iter().map(|i| i.depth).collect();
    let hard = want_info.iter().filter(|&&d| d == 2).count();
    eprintln!(
        "uninterrupted: {hard} of {} tokens at depth 2",
        prompt.len()
    );
    assert!(hard > 0 && hard < prompt.len());

    let (mut cancelled, mut partial) = (0, 0);
    for after in (0..40).map(|i| took * i / 40) {
        let us = after.as_micros();
        let mut s = tah_session(512, 16);
        let (r, _) = feed_and_cancel(&mut s, &prompt, after);
        let n = s.n_past();
        match r {
            Err(SessionError::Cancelled) => cancelled += 1,
            Ok(()) => assert_eq!(n, prompt.len()),
            Err(e) => panic!("{e}"),
        }
        assert_eq!(n % 16, 0, "whole chunks ({us} µs)");
        partial += usize::from(n > 0 && n < prompt.len());
        // Both depths hold exactly the kept positions.
        assert_eq!(s.cache.len(1), n);
        let depths: Vec<u8> = s.token_info().iter().map(|i| i.depth).collect();
        assert_eq!(depths, want_info[..n], "depths of the kept tokens");
        let pos2 = s.cache.positions(2);
        assert_eq!(s.cache.len(2), pos2.len());
        let hard_kept: Vec<usize> = (0..n).filter(|&i| want_info[i] == 2).collect();
        assert_eq!(pos2, &hard_kept[..], "depth-2 positions ({us} µs)");
        if n < prompt.len() {
            s.cancel_flag().clear();
            let got = s.feed(&prompt[n..], None).unwrap().to_vec();
            assert!(
                got == want,
                "resumed at {n}: max |Δ| = {}",
                max_abs_diff(&got, &want)
            );
            let depths: Vec<u8> = s.token_info().iter().map(|i| i.depth).collect();
            assert_eq!(depths, want_info);
        }
    }
    eprintln!("{cancelled} of 40 runs cancelled, {partial} mid-prompt");
    assert!(partial > 0, "no run was cancelled mid-prompt");
}
