//! Parity with the reference TaH implementation on `shared/fixtures/tah-tiny`:
//! its own outputs (reference.safetensors) are the expected values.

mod common;
use common::*;
use tah::model::kv_cache::KvType;
use tah::session::{Session, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};

fn session(mode: ThinkMode, batch: usize) -> Session {
    let model = load(&fixture_tah());
    let opts = SessionOptions {
        ctx: 64,
        kv_type: KvType::F32,
        batch,
        tah: TahOptions {
            mode,
            ..Default::default()
        },
    };
    Session::new(model, &opts).unwrap()
}

fn prompt(r: &Reference) -> Vec<u32> {
    r.i64("prefill_input_ids")
        .iter()
        .map(|&t| t as u32)
        .collect()
}

/// Feeds the prompt; returns (logits rows, depths, depth-1 decider probabilities).
fn prefill(s: &mut Session, ids: &[u32]) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
    let (mut logits, mut depths, mut probs) = (Vec::new(), Vec::new(), Vec::new());
    let mut cb = |_: usize, row: &[f32], info: tah::tah::TokenInfo| {
        logits.extend_from_slice(row);
        depths.push(info.depth as i64);
        probs.push(info.prob);
    };
    s.feed(ids, Some(&mut cb)).unwrap();
    (logits, depths, probs)
}

#[test]
fn base_prefill_logits_match_with_think_never() {
    let r = Reference::load();
    let mut s = session(ThinkMode::Never, 64);
    let (logits, depths, _) = prefill(&mut s, &prompt(&r));
    let (_, want) = r.f32("base_prefill_logits");
    let err = max_abs_diff(&logits, &want);
    eprintln!("base prefill logits: max |Δ| = {err:e}");
    assert!(err < 5e-4, "max |Δ| = {err}");
    assert!(depths.iter().all(|&d| d == 1));
}

#[test]
fn tah_prefill_matches_reference() {
    let r = Reference::load();
    let mut s = session(ThinkMode::Auto, 64);
    let (logits, depths, probs) = prefill(&mut s, &prompt(&r));
    assert_eq!(depths, r.i64("prefill_iter_count"), "prefill depths");
    let (_, want_probs) = r.f32("prefill_decider_prob");
    let perr = max_abs_diff(&probs, &want_probs);
    let (_, want) = r.f32("prefill_logits");
    let err = max_abs_diff(&logits, &want);
    eprintln!("TaH prefill: logits max |Δ| = {err:e}, decider prob max |Δ| = {perr:e}");
    assert!(perr < 1e-5, "decider prob max |Δ| = {perr}");
    assert!(err < 5e-4, "logits max |Δ| = {err}");
}

#[test]
fn tah_greedy_decode_matches_reference() {
    let r = Reference::load();
    let mut s = session(ThinkMode::Auto, 64);
    s.feed(&prompt(&r), None).unwrap();
    let want_tokens: Vec<u32> = r
        .i64("decode_token_ids")
        .iter()
        .map(|&t| t as u32)
        .collect();
    let want_depths = r.i64("decode_iter_count");
    let (_, want_logits) = r.f32("decode_logits");
    let (_, want_probs) = r.f32("decode_decider_prob");
    let vocab = 512;
    let (mut tokens, mut depths, mut logits, mut probs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut next = tah::sample::argmax(s.logits());
    for _ in 0..want_tokens.len() {
        tokens.push(next);
        let l = s.decode(next).unwrap().to_vec();
        let info = *s.token_info().last().unwrap();
        depths.push(info.depth as i64);
        probs.push(info.prob);
        logits.extend_from_slice(&l);
        next = tah::sample::argmax(&l);
    }
    assert_eq!(tokens, want_tokens, "greedy tokens");
    assert_eq!(depths, want_depths, "decode depths");
    let err = max_abs_diff(&logits, &want_logits[..logits.len()]);
    let perr = max_abs_diff(&probs, &want_probs);
    eprintln!(
        "TaH decode: logits max |Δ| = {err:e}, decider prob max |Δ| = {perr:e}, {} rows of {vocab}",
        tokens.len()
    );
    assert!(err < 5e-4 && perr < 1e-5, "logits {err}, probs {perr}");
}

#[test]
fn soft_inputs_match_reference() {
    // The soft input of each depth-2 prompt token, from the reference's own
    // depth-1 logits, through our top-k + softmax mix over the embedding.
    let r = Reference::load();
    let model = load(&fixture_tah());
    let (_, d1) = r.f32("prefill_depth1_logits");
    let (_, want) = r.f32("prefill_depth2_input_embeds");
    let positions = r.i64("prefill_depth2_positions");
    let embd = model.mat(&model.token_embd);
    let dim = model.cfg.dim;
    let (mut ids, mut vals) = (Vec::new(), Vec::new());
    let (mut out, mut row) = (vec![0f32; dim], vec![0f32; dim]);
    for (j, &p) in positions.iter().enumerate() {
        let p = p as usize;
        tah::tah::soft_input::top_k(&d1[p * 512..(p + 1) * 512], 16, &mut ids, &mut vals);
        tah::tah::soft_input::soft_input(&embd, &ids, &vals, &mut out, &mut row);
        let err = max_abs_diff(&out, &want[j * dim..(j + 1) * dim]);
        assert!(err < 1e-5, "soft input at position {p}: max |Δ| = {err}");
    }
}

#[test]
fn chunked_prefill_equals_one_shot() {
    let r = Reference::load();
    let ids = prompt(&r);
    let (one, d1, _) = prefill(&mut session(ThinkMode::Auto, 64), &ids);
    for batch in [1, 5, 24] {
        let (chunked, d, _) = prefill(&mut session(ThinkMode::Auto, batch), &ids);
        let err = max_abs_diff(&one, &chunked);
        eprintln!("chunks of {batch}: max |Δ| vs one-shot = {err:e}");
        assert_eq!(d, d1, "depths with chunks of {batch}");
        assert!(err < 1e-4, "chunks of {batch}: {err}");
    }
}

/// What `tah chat` does between turns: keep the cached prefix the new rendering
/// shares, drop the rest (both depths), feed the remainder. The result must equal
/// a fresh session fed the whole conversation.
#[test]
fn truncating_and_refeeding_keeps_both_caches_consistent() {
    let r = Reference::load();
    let ids = prompt(&r);
    let turn2: Vec<u32> = vec![7, 300, 41, 99, 250, 13, 480, 2, 64, 128];
    // Session A: prompt, then three generated tokens, then rewind to 20 tokens
    // (as when a template rewrites history) and feed the new suffix.
    let mut a = session(ThinkMode::Auto, 64);
    a.feed(&ids, None).unwrap();
    for _ in 0..3 {
        let t = tah::sample::argmax(a.logits());
        a.decode(t).unwrap();
    }
    assert!(a.cache.len(2) > 0, "some tokens ran depth 2");
    a.truncate(20);
    assert_eq!(a.n_past(), 20);
    assert!(
        a.cache.positions(2).iter().all(|&p| p < 20),
        "depth-2 slots past the cut are gone"
    );
    let (la, da, _) = prefill(&mut a, &turn2);
    // Session B: the same 20 + 10 tokens from scratch.
    let mut b = session(ThinkMode::Auto, 64);
    b.feed(&ids[..20], None).unwrap();
    let (lb, db, _) = prefill(&mut b, &turn2);
    assert_eq!(da, db, "depths after rewind");
    assert_eq!(max_abs_diff(&la, &lb), 0.0, "logits after rewind");
    assert_eq!(a.cache.bytes_per_depth(), b.cache.bytes_per_depth());
}
