//! Context shift: `KvCache::shift` / `Session::shift` drop a range of
//! positions and re-rotate the moved keys; `generate` shifts when the context
//! fills; `ApiSession::chat` drops the oldest turns of a conversation longer
//! than the context and keeps feeding only the new tokens.

mod common;
use common::*;
use std::sync::Arc;
use std::time::Instant;
use tah::api::{ApiModel, ApiSession, GenerateParams, ModelParams, SessionParams};
use tah::generate::{generate, ContextShift, GenerateOptions, Shift, StopReason};
use tah::model::forward::KeyRotation;
use tah::model::kv_cache::{KvCache, KvType, Rows};
use tah::model::Model;
use tah::sample::SamplingParams;
use tah::session::{Session, SessionError, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};
use tah::text::ChatMessage;

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const QWEN: &str = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf";

fn to_f32(r: Rows) -> Vec<f32> {
    match r {
        Rows::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        Rows::F32(v) => v.to_vec(),
        Rows::Q8_0(b) => {
            let mut out = vec![0f32; b.len() / 34 * 32];
            tah::quant::q8_0::dequantize_row(b, &mut out);
            out
        }
    }
}

/// (keys, values) of the first `n` slots of `layer` at `depth`, as f32.
fn rows(c: &KvCache, depth: usize, layer: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let (k, v) = c.rows(depth, layer, n);
    (to_f32(k), to_f32(v))
}

fn session(m: &Arc<Model>, ctx: usize, kv_type: KvType, batch: usize) -> Session {
    let opts = SessionOptions {
        ctx,
        kv_type,
        batch,
        ..Default::default()
    };
    Session::new(Arc::clone(m), &opts).unwrap()
}

fn text_ids(m: &Model, n: usize) -> Vec<u32> {
    let text = std::fs::read_to_string(shared().join("anchors/gpl-3.txt")).unwrap();
    let ids = m.tokenizer.as_ref().unwrap().encode(&text, true).unwrap();
    ids[..n].to_vec()
}

/// A synthetic cache: every depth and position rows that name them, so the
/// moves can be checked exactly; the rotation records its deltas and adds
/// them to the keys.
#[test]
fn cache_shift_moves_rows_and_renumbers_sparse_positions() {
    let (layers, kv_dim) = (2, 4);
    let mut c = KvCache::try_new(KvType::F32, layers, kv_dim, 32, 3).unwrap();
    let row = |d: usize, l: usize, p: usize, kind: f32| -> Vec<f32> {
        vec![kind * 1000.0 + (d * 100 + l * 10) as f32 + p as f32 * 0.01; kv_dim]
    };
    let fill = |c: &mut KvCache, d: usize, pos: &[usize]| {
        let first = c.append(d, pos);
        for (i, &p) in pos.iter().enumerate() {
            for l in 0..layers {
                c.write(d, l, first + i, &row(d, l, p, 1.0), &row(d, l, p, 2.0));
            }
        }
    };
    fill(&mut c, 1, &(0..20).collect::<Vec<_>>());
    fill(&mut c, 2, &[1, 4, 5, 9, 12, 17]);
    fill(&mut c, 3, &[4, 17]);
    let mut deltas = Vec::new();
    c.shift(3, 8, |k, d| {
        deltas.push(d);
        for x in k.iter_mut() {
            *x += d as f32;
        }
    });
    // Positions 3..11 are gone; 11..20 became 3..12.
    assert_eq!(c.len(1), 12);
    assert_eq!(c.positions(2), &[1, 4, 9]); // 1; 12 → 4; 17 → 9
    assert_eq!(c.len(2), 3);
    assert_eq!(c.positions(3), &[9]);
    assert_eq!(c.len(3), 1);
    // Moved keys: rotated by −8 once each (all layers, depths): depth 1 moves
    // 9 rows, depth 2 two, depth 3 one.
    assert!(deltas.iter().all(|&d| d == -8));
    assert_eq!(deltas.len(), layers * (9 + 2 + 1));
    for l in 0..layers {
        let (k, v) = rows(&c, 1, l, 12);
        for (slot, old) in (0..3).chain(11..20).enumerate() {
            let moved = if old >= 11 { -8.0 } else { 0.0 };
            let want_k: Vec<f32> = row(1, l, old, 1.0).iter().map(|x| x + moved).collect();
            assert_eq!(
                k[slot * kv_dim..][..kv_dim],
                want_k[..],
                "depth 1 layer {l} slot {slot}"
            );
            assert_eq!(v[slot * kv_dim..][..kv_dim], row(1, l, old, 2.0)[..]);
        }
        let (k, v) = rows(&c, 2, l, 3);
        for (slot, old) in [1usize, 12, 17].into_iter().enumerate() {
            let moved = if old >= 11 { -8.0 } else { 0.0 };
            let want_k: Vec<f32> = row(2, l, old, 1.0).iter().map(|x| x + moved).collect();
            assert_eq!(k[slot * kv_dim..][..kv_dim], want_k[..]);
            assert_eq!(v[slot * kv_dim..][..kv_dim], row(2, l, old, 2.0)[..]);
        }
        let (_, v) = rows(&c, 3, l, 1);
        assert_eq!(v, row(3, l, 17, 2.0));
    }
    // Out-of-range requests are clamped: dropping past the end keeps 12 − 10.
    c.shift(10, 100, |_, _| {});
    assert_eq!(c.len(1), 10);
    assert_eq!(c.positions(2), &[1, 4, 9]);
    c.shift(50, 1, |_, _| panic!("nothing moves"));
    assert_eq!(c.len(1), 10);
}

/// (i) Layer-0 keys depend on their own token and position only, so after a
/// shift the moved ones must be the keys a fresh prefill of the kept tokens
/// computes at the new positions. Both sessions feed one token per pass (the
/// same matrix products), so keys differ only by the rotation:
/// - f32 cache: per rotated pair of norm r, |Δ| ≤ r·(2·P + 16)·ε (ε = 2⁻²³,
///   P the largest position): the f32 angle p·θ is rounded to ulp(P) ≤ 2·P·ε
///   on both sides, plus a few roundings in sin/cos and the rotation;
/// - f16 cache: plus 3·2⁻¹¹·r (the fresh key rounded once, the shifted one
///   twice, rotations keep the error's norm).
///
/// Values do not move with position: bit-identical. Llama (SmolLM2, adjacent
/// pairs) and Qwen2 (NeoX halves) layouts.
#[test]
fn shifted_layer0_keys_equal_a_fresh_prefill_at_the_new_positions() {
    for name in [SMOL, QWEN] {
        let Some(path) = real_tah(name, None) else {
            return;
        };
        let m = load(&path);
        let c = &m.cfg;
        let hd = c.head_dim;
        let ids = text_ids(&m, 40);
        let (keep, drop) = (4, 12);
        let kept: Vec<u32> = ids[..keep]
            .iter()
            .chain(&ids[keep + drop..])
            .copied()
            .collect();
        let n = kept.len();
        for ty in [KvType::F32, KvType::F16] {
            let mut a = session(&m, 64, ty, 1);
            a.feed(&ids, None).unwrap();
            a.shift(keep, drop).unwrap();
            assert_eq!(a.tokens(), &kept[..]);
            let mut b = session(&m, 64, ty, 1);
            b.feed(&kept, None).unwrap();
            let (ka, va) = rows(&a.cache, 1, 0, n);
            let (kb, vb) = rows(&b.cache, 1, 0, n);
            assert!(va == vb, "{name} {ty:?}: values moved as stored");
            let kv_dim = ka.len() / n;
            assert_eq!(
                ka[..keep * kv_dim],
                kb[..keep * kv_dim],
                "kept rows untouched"
            );
            let eps = f32::EPSILON;
            let p_max = (n + drop) as f32;
            let rel = (2.0 * p_max + 16.0) * eps
                + if ty == KvType::F16 {
                    3.0 * 2f32.powi(-11)
                } else {
                    0.0
                };
            let mut worst = 0f32; // max |Δ| / r
            for (ra, rb) in ka
                .chunks_exact(kv_dim)
                .zip(kb.chunks_exact(kv_dim))
                .skip(keep)
            {
                for (ha, hb) in ra.chunks_exact(hd).zip(rb.chunks_exact(hd)) {
                    for i in 0..hd / 2 {
                        // The pair (i, i + hd/2) or (2i, 2i + 1).
                        let (x, y) = if c.arch == tah::model::Arch::Llama {
                            (2 * i, 2 * i + 1)
                        } else {
                            (i, i + hd / 2)
                        };
                        let r = hb[x].hypot(hb[y]);
                        let d = (ha[x] - hb[x]).hypot(ha[y] - hb[y]);
                        assert!(
                            d <= r * rel + f32::MIN_POSITIVE,
                            "{name} {ty:?}: |Δ| {d} > {} (r = {r})",
                            r * rel
                        );
                        if r > 0.0 {
                            worst = worst.max(d / r);
                        }
                    }
                }
            }
            eprintln!(
                "{name} {ty:?}: moved layer-0 keys vs fresh: max |Δ|/r = {worst:e} (bound {rel:e})"
            );
        }
        // q8_0: a moved key is dequantized, rotated and quantized again, so it
        // carries two roundings (≤ step/2 each, the rotation keeping a pair's
        // error norm: ≤ √2·step/2 after it) where the fresh row carries one,
        // a step being its block's max/127 (the f16 scale adds 2⁻¹¹ of the
        // max). Rotation mixes a head's blocks (Qwen's pairs span halves), so
        // the bound takes the step of the head's largest value: |Δ| ≤ 2.3 steps.
        let mut a = session(&m, 64, KvType::Q8_0, 1);
        a.feed(&ids, None).unwrap();
        a.shift(keep, drop).unwrap();
        let mut b = session(&m, 64, KvType::Q8_0, 1);
        b.feed(&kept, None).unwrap();
        let (ka, va) = rows(&a.cache, 1, 0, n);
        let (kb, vb) = rows(&b.cache, 1, 0, n);
        assert!(va == vb, "{name} q8_0: values moved as stored");
        let kv_dim = ka.len() / n;
        assert_eq!(
            ka[..keep * kv_dim],
            kb[..keep * kv_dim],
            "kept rows untouched"
        );
        let mut worst = 0f32; // max |Δ| / step
        for (ra, rb) in ka
            .chunks_exact(kv_dim)
            .zip(kb.chunks_exact(kv_dim))
            .skip(keep)
        {
            for (ha, hb) in ra.chunks_exact(hd).zip(rb.chunks_exact(hd)) {
                let amax = ha.iter().chain(hb).fold(0f32, |m, x| m.max(x.abs()));
                let step = amax / 127.0 * (1.0 + 2f32.powi(-10));
                for (x, y) in ha.iter().zip(hb) {
                    let d = (x - y).abs();
                    assert!(
                        d <= 2.3 * step + f32::MIN_POSITIVE,
                        "{name} q8_0: |Δ| {d} > 2.3 × {step}"
                    );
                    if step > 0.0 {
                        worst = worst.max(d / step);
                    }
                }
            }
        }
        eprintln!(
            "{name} q8_0: moved layer-0 keys vs fresh: max |Δ| = {worst:.3} steps (bound 2.3)"
        );
    }
}

/// Softmax of `l`.
fn probs(l: &[f32]) -> Vec<f64> {
    let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f64> = l.iter().map(|&x| ((x - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

fn total_variation(a: &[f32], b: &[f32]) -> f64 {
    probs(a)
        .iter()
        .zip(probs(b))
        .map(|(x, y)| (x - y).abs())
        .sum::<f64>()
        / 2.0
}

/// (ii) After a shift the next token's logits against a fresh prefill of the
/// kept tokens. They are not equal: the kept tokens after the gap were
/// computed (layers ≥ 1) while the dropped ones were visible. What must hold:
/// the shift is much closer to the fresh prefill than the same shift without
/// re-rotating the keys (whose positions would then be wrong by `drop`), and
/// the two next-token distributions stay close (total variation < 0.25) with
/// the same most likely token.
#[test]
fn shifted_logits_stay_close_to_a_fresh_prefill_of_the_kept_tokens() {
    let Some(path) = real_tah(SMOL, None) else {
        return;
    };
    let m = load(&path);
    let ids = text_ids(&m, 161);
    let (keep, drop) = (8, 64);
    let (prompt, next) = (&ids[..160], ids[160]);
    let kept: Vec<u32> = prompt[..keep]
        .iter()
        .chain(&prompt[keep + drop..])
        .copied()
        .collect();

    let mut fresh = session(&m, 256, KvType::F32, 64);
    fresh.feed(&kept, None).unwrap();
    let want = fresh.decode(next).unwrap().to_vec();

    let mut s = session(&m, 256, KvType::F32, 64);
    s.feed(prompt, None).unwrap();
    s.shift(keep, drop).unwrap();
    let got = s.decode(next).unwrap().to_vec();

    // The same drop with the keys left where they were.
    let mut u = session(&m, 256, KvType::F32, 64);
    u.feed(prompt, None).unwrap();
    u.cache.shift(keep, drop, |_, _| {});
    u.truncate(prompt.len() - drop); // tokens are only bookkeeping here
    let unrotated = u.decode(next).unwrap().to_vec();

    let d_shift = max_abs_diff(&got, &want);
    let d_unrot = max_abs_diff(&unrotated, &want);
    let (tv_shift, tv_unrot) = (
        total_variation(&got, &want),
        total_variation(&unrotated, &want),
    );
    eprintln!(
        "next-token logits vs fresh prefill of the kept tokens: shifted max |Δ| = {d_shift:.4} \
         (TV {tv_shift:.4}); without re-rotation max |Δ| = {d_unrot:.4} (TV {tv_unrot:.4})"
    );
    assert!(d_shift < d_unrot / 2.0, "{d_shift} vs {d_unrot}");
    assert!(tv_shift < 0.25, "total variation {tv_shift}");
    assert_eq!(
        tah::sample::argmax(&got),
        tah::sample::argmax(&want),
        "most likely next token"
    );
}

/// (v) A TaH cache with depth-2 slots: the sparse positions inside the dropped
/// range go, the later ones move down by `drop`, every depth's length follows;
/// tokens and per-token info lose the same range; moved depth-2 keys are the
/// old ones re-rotated ([`KeyRotation`], exact in an f32 cache) and values are
/// unchanged; decoding goes on with the depths a decode gives.
#[test]
fn tah_shift_keeps_sparse_positions_consistent() {
    let model = load(&fixture_tah());
    let opts = SessionOptions {
        ctx: 128,
        kv_type: KvType::F32,
        batch: 16,
        tah: TahOptions {
            mode: ThinkMode::Auto,
            ..Default::default()
        },
    };
    let mut s = Session::new(Arc::clone(&model), &opts).unwrap();
    let prompt: Vec<u32> = (0..100u32).map(|i| (i * 37 + 11) % 512).collect();
    s.feed(&prompt, None).unwrap();
    let old_pos = s.cache.positions(2).to_vec();
    let old_info = s.token_info().to_vec();
    let n2 = s.cache.len(2);
    assert_eq!(n2, old_pos.len());
    // Keep up to the first hard token; drop 30.
    let (keep, drop) = (old_pos[0] + 1, 30);
    eprintln!(
        "depth-2 positions {old_pos:?}; dropping {keep}..{}",
        keep + drop
    );
    assert!(old_pos.iter().any(|&p| p < keep));
    assert!(old_pos.iter().any(|&p| (keep..keep + drop).contains(&p)));
    assert!(old_pos.iter().any(|&p| p >= keep + drop));
    let layers = model.cfg.n_layers;
    let old_rows: Vec<_> = (0..layers).map(|l| rows(&s.cache, 2, l, n2)).collect();

    assert_eq!(
        s.shift(keep, 101 - keep),
        Err(SessionError::BadOption(format!(
            "context shift: cannot drop {} tokens after the first {keep} of 100",
            101 - keep
        )))
    );
    assert_eq!(
        s.shift(usize::MAX, 2)
            .map_err(|e| matches!(e, SessionError::BadOption(_))),
        Err(true)
    );
    s.shift(keep, drop).unwrap();

    let kept_slots: Vec<usize> = (0..n2)
        .filter(|&i| !(keep..keep + drop).contains(&old_pos[i]))
        .collect();
    let want_pos: Vec<usize> = kept_slots
        .iter()
        .map(|&i| old_pos[i] - if old_pos[i] >= keep { drop } else { 0 })
        .collect();
    assert_eq!(s.cache.positions(2), &want_pos[..]);
    assert_eq!(s.cache.len(2), want_pos.len());
    assert_eq!(s.cache.len(1), 70);
    assert_eq!(s.n_past(), 70);
    let want_tokens: Vec<u32> = prompt[..keep]
        .iter()
        .chain(&prompt[keep + drop..])
        .copied()
        .collect();
    assert_eq!(s.tokens(), &want_tokens[..]);
    let want_info: Vec<u8> = old_info[..keep]
        .iter()
        .chain(&old_info[keep + drop..])
        .map(|i| i.depth)
        .collect();
    let info: Vec<u8> = s.token_info().iter().map(|i| i.depth).collect();
    assert_eq!(info, want_info);
    // Depth-2 slots are exactly the depth-2 tokens.
    let hard: Vec<usize> = (0..70).filter(|&i| info[i] == 2).collect();
    assert_eq!(s.cache.positions(2), &hard[..]);

    let kv_dim = model.cfg.n_kv_heads * model.cfg.head_dim;
    let mut rot = KeyRotation::new(&model.cfg);
    for (l, (ok, ov)) in old_rows.iter().enumerate() {
        let (k, v) = rows(&s.cache, 2, l, want_pos.len());
        for (slot, &i) in kept_slots.iter().enumerate() {
            let mut want_k = ok[i * kv_dim..(i + 1) * kv_dim].to_vec();
            if old_pos[i] >= keep {
                rot.rotate(&mut want_k, -(drop as isize));
            }
            assert_eq!(
                k[slot * kv_dim..(slot + 1) * kv_dim],
                want_k[..],
                "layer {l} slot {slot}"
            );
            assert_eq!(
                v[slot * kv_dim..(slot + 1) * kv_dim],
                ov[i * kv_dim..(i + 1) * kv_dim]
            );
        }
    }
    // Decoding goes on at position 70.
    let l = s.decode(5).unwrap();
    assert!(l.iter().all(|x| x.is_finite()));
    assert_eq!(s.n_past(), 71);
    assert_eq!(s.cache.len(1), 71);
    let d = s.token_info()[70].depth as usize;
    assert_eq!(s.cache.len(2), want_pos.len() + usize::from(d == 2));
}

/// `generate` past the end of the context: with the default policy (no turn
/// boundaries) each shift drops half of the tokens after the kept prefix and
/// generation reaches `max_tokens`; with turn boundaries it drops the fewest
/// oldest whole turns that free a quarter of the context; with
/// `context_shift: None` it stops with `ContextFull`.
#[test]
fn generate_shifts_when_the_context_fills() {
    let model = load(&fixture_tah());
    let opts = SessionOptions {
        ctx: 64,
        kv_type: KvType::F32,
        batch: 16,
        tah: TahOptions {
            mode: ThinkMode::Never,
            ..Default::default()
        },
    };
    let prompt: Vec<u32> = (0..20u32).map(|i| (i * 37 + 11) % 512).collect();
    let gen = |cs: Option<ContextShift>, max_tokens: usize| {
        let mut s = Session::new(Arc::clone(&model), &opts).unwrap();
        let o = GenerateOptions {
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop_at_eog: false,
            context_shift: cs,
            ..Default::default()
        };
        let g = generate(&mut s, None, &prompt, &o, None, &mut |_| true).unwrap();
        (g, s.n_past())
    };
    let (g, n) = gen(None, 100);
    assert_eq!(g.stop, StopReason::ContextFull);
    assert_eq!(g.tokens.len(), 44);
    assert_eq!(n, 64);
    assert!(g.shifts.is_empty());

    let (g, n) = gen(
        Some(ContextShift {
            keep: 4,
            turn_starts: Vec::new(),
        }),
        100,
    );
    assert_eq!(g.stop, StopReason::MaxTokens);
    assert_eq!(g.tokens.len(), 100);
    // Full at 64: drop (64 − 4) / 2 = 30, back to 34; full again 30 tokens later.
    assert_eq!(g.shifts, vec![Shift { keep: 4, drop: 30 }; 2]);
    assert_eq!(n, 20 + 100 - 60);

    // Turns at 6, 12 and 30 after a kept prefix of 4: a quarter of 64 is 16,
    // so the first shift drops 4..30 (26 tokens); then 12 and 6 are gone and
    // no turn is left: half of what follows the prefix.
    let (g, _) = gen(
        Some(ContextShift {
            keep: 4,
            turn_starts: vec![2, 6, 12, 30],
        }),
        80,
    );
    assert_eq!(
        g.shifts,
        vec![Shift { keep: 4, drop: 26 }, Shift { keep: 4, drop: 30 }]
    );
}

fn smol_api(ctx: usize, context_shift: bool) -> Option<ApiSession> {
    let path = real_tah(SMOL, None)?;
    let model = ApiModel::load(
        &path,
        ModelParams {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    Some(
        ApiSession::new(
            model,
            &SessionParams {
                ctx,
                context_shift,
                ..Default::default()
            },
        )
        .unwrap(),
    )
}

const SYSTEM: &str = "You are a concise assistant. Answer in one short sentence.";

fn question(i: usize) -> String {
    let topics = [
        "rivers",
        "mountains",
        "bread",
        "bicycles",
        "the moon",
        "owls",
        "glass",
        "tea",
        "volcanoes",
        "maps",
        "bees",
        "clocks",
    ];
    format!(
        "Question {i}: tell me one interesting fact about {}, please.",
        topics[i % topics.len()]
    )
}

/// (iii) A scripted conversation three times longer than a 256-token context
/// through `ApiSession::chat` + `generate` (the app sends the whole history
/// every turn): no error, the oldest turns are dropped, and every turn feeds
/// only about its own new tokens — the user message, the template's few
/// tokens around it and the end of the last answer (at most `NEW_SLACK` more
/// than the message's own tokens), never the kept history again.
#[test]
fn a_chat_three_times_the_context_feeds_only_new_tokens() {
    let Some(mut api) = smol_api(256, true) else {
        return;
    };
    let m = Arc::clone(api.model());
    let tok = m.model.tokenizer.as_ref().unwrap();
    const NEW_SLACK: usize = 12;
    let mut messages = vec![ChatMessage::new("system", SYSTEM)];
    let params = GenerateParams {
        max_tokens: 12,
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let (mut total, mut max_fed, mut turn) = (0usize, 0usize, 0usize);
    let mut shifted_turns = 0;
    while total < 3 * 256 {
        let q = question(turn);
        let q_tokens = tok.encode(&q, false).unwrap().len();
        messages.push(ChatMessage::new("user", q.clone()));
        let t = Instant::now();
        let before = api.session().n_past();
        let queued = api.chat(&messages, true, None).unwrap();
        let after_fit = api.session().n_past();
        let mut answer = String::new();
        api.generate(&params, &mut |p| {
            answer.push_str(p.text);
            true
        })
        .unwrap();
        let st = api.stats();
        let wall = t.elapsed();
        eprintln!(
            "turn {turn:2}: {:5.0} ms, fed {:3} (message {q_tokens:2}), cache {before:3} → {after_fit:3} → {:3}, {:?}",
            wall.as_secs_f64() * 1e3,
            st.prompt_tokens,
            st.n_past,
            st.stop.unwrap()
        );
        assert_eq!(st.prompt_tokens, queued);
        if turn > 0 {
            assert!(
                st.prompt_tokens <= q_tokens + NEW_SLACK,
                "turn {turn}: fed {} for a {q_tokens}-token message",
                st.prompt_tokens
            );
            max_fed = max_fed.max(st.prompt_tokens);
        }
        shifted_turns += usize::from(after_fit < before);
        assert!(st.n_past <= 256);
        total += tok.encode(&format!("{q}{answer}"), false).unwrap().len() + 10;
        messages.push(ChatMessage::new("assistant", answer));
        turn += 1;
    }
    eprintln!(
        "{turn} turns, ~{total} tokens of conversation, {shifted_turns} turns shifted the cache, \
         at most {max_fed} tokens fed per turn"
    );
    assert!(shifted_turns >= 2, "the context was never shifted");
}

/// (iv) The same conversation with `context_shift: false`: the clean error
/// of a conversation that does not fit, and the engine never drops anything.
#[test]
fn without_context_shift_a_long_chat_ends_with_the_clean_error() {
    let Some(mut api) = smol_api(256, false) else {
        return;
    };
    let mut messages = vec![ChatMessage::new("system", SYSTEM)];
    let params = GenerateParams {
        max_tokens: 12,
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let mut last_n = 0;
    for turn in 0..40 {
        messages.push(ChatMessage::new("user", question(turn)));
        match api.chat(&messages, true, None) {
            Ok(_) => {}
            Err(e) => {
                eprintln!("turn {turn}: {e}");
                let n: usize = e
                    .strip_prefix("the conversation (")
                    .and_then(|r| r.strip_suffix(" tokens) does not fit the context (256 tokens)"))
                    .unwrap_or_else(|| panic!("unexpected error: {e}"))
                    .parse()
                    .unwrap();
                assert!(n > 256);
                return;
            }
        }
        let mut answer = String::new();
        api.generate(&params, &mut |p| {
            answer.push_str(p.text);
            true
        })
        .unwrap();
        let n = api.stats().n_past;
        assert!(n >= last_n, "the cache shrank: {last_n} → {n}");
        last_n = n;
        messages.push(ChatMessage::new("assistant", answer));
    }
    panic!("40 turns fit in 256 tokens?");
}

/// (iii, during generation) Short answers, and every fourth answer forced to
/// run to 130 tokens (end-of-turn tokens banned): the long ones overflow the
/// 256-token context in the middle of the answer, and `generate` then drops
/// whole oldest turns (the boundaries come from the chat); the session
/// remembers which messages went, so the next turns — the app sending the
/// full history — still feed only their new tokens.
#[test]
fn answers_that_overflow_shift_whole_turns_and_later_turns_stay_cheap() {
    let Some(mut api) = smol_api(256, true) else {
        return;
    };
    let m = Arc::clone(api.model());
    let tok = m.model.tokenizer.as_ref().unwrap();
    let ban: Vec<(u32, f32)> = (0..m.model.cfg.vocab as u32)
        .filter(|&t| tok.is_eog(t))
        .map(|t| (t, -100.0))
        .collect();
    assert!(!ban.is_empty());
    let short = GenerateParams {
        max_tokens: 12,
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let long = GenerateParams {
        max_tokens: 130,
        logit_bias: ban,
        ..short.clone()
    };
    let mut messages = vec![ChatMessage::new("system", SYSTEM)];
    let mut shifted_in_generation = 0;
    for turn in 0..14 {
        let q = question(turn);
        let q_tokens = tok.encode(&q, false).unwrap().len();
        messages.push(ChatMessage::new("user", q));
        let t = Instant::now();
        api.chat(&messages, true, None).unwrap();
        let after_fit = api.session().n_past();
        let mut answer = String::new();
        let params = if turn % 4 == 3 { &long } else { &short };
        api.generate(params, &mut |p| {
            answer.push_str(p.text);
            true
        })
        .unwrap();
        let st = api.stats();
        let shifted = st.n_past < after_fit + st.prompt_tokens + st.generated_tokens;
        eprintln!(
            "turn {turn:2}: {:5.0} ms, fed {:3} (message {q_tokens}), generated {:3}, cache {after_fit:3} → {:3}{}",
            t.elapsed().as_secs_f64() * 1e3,
            st.prompt_tokens,
            st.generated_tokens,
            st.n_past,
            if shifted { " (shifted while generating)" } else { "" }
        );
        if params.max_tokens == 130 {
            assert_eq!(st.generated_tokens, 130);
        }
        if turn > 0 {
            assert!(
                st.prompt_tokens <= q_tokens + 12,
                "turn {turn}: fed {} for a {q_tokens}-token message",
                st.prompt_tokens
            );
        }
        shifted_in_generation += usize::from(shifted);
        messages.push(ChatMessage::new("assistant", answer));
    }
    assert!(shifted_in_generation >= 2, "no shift during generation");
}

/// `ChatWindow` step by step (what `ApiSession` and `tah chat` do around a
/// generation): the turn boundaries it gives `generate` are exact — dropping
/// `keep..t` from the conversation's tokens gives the tokens of the
/// conversation without those turns — and after a shift there, `record`
/// leaves the dropped messages out of the next rendering, so the app's full
/// history reuses every cached token.
#[test]
fn chat_window_turn_boundaries_and_record() {
    let Some(path) = real_tah(SMOL, None) else {
        return;
    };
    let m = load(&path);
    let tok = m.tokenizer.as_ref().unwrap();
    let tmpl = m.chat_template.as_ref().unwrap();
    let render = |msgs: &[ChatMessage]| {
        tok.encode(&tmpl.render(msgs, true, None).unwrap(), true)
            .unwrap()
    };
    let mut s = session(&m, 256, KvType::F16, 64);
    let mut msgs = vec![ChatMessage::new("system", SYSTEM)];
    for i in 0..3 {
        msgs.push(ChatMessage::new("user", question(i)));
        msgs.push(ChatMessage::new(
            "assistant",
            format!("Here is fact number {i}."),
        ));
    }
    msgs.push(ChatMessage::new("user", question(3)));
    let mut w = tah::api::ChatWindow::default();
    let ids = w.fit(&mut s, &msgs, true, None, Some(None)).unwrap();
    assert_eq!(ids, render(&msgs));
    s.feed(&ids, None).unwrap();
    let cs = w.context_shift(&s, None);
    eprintln!(
        "{} tokens; keep {}, turns at {:?}",
        ids.len(),
        cs.keep,
        cs.turn_starts
    );
    // Turns start at the user messages 3, 5 and 7.
    assert_eq!(cs.turn_starts.len(), 3);
    for (&t, j) in cs.turn_starts.iter().zip([3, 5, 7]) {
        let mut without = msgs[..1].to_vec();
        without.extend_from_slice(&msgs[j..]);
        let cut: Vec<u32> = ids[..cs.keep].iter().chain(&ids[t..]).copied().collect();
        assert_eq!(cut, render(&without), "turn at message {j}");
    }
    // A generation answers, then shifts out the first turn.
    let answer = "Sure, here it is.";
    s.feed(&tok.encode(answer, false).unwrap(), None).unwrap();
    let (keep, drop) = (cs.keep, cs.turn_starts[0] - cs.keep);
    s.shift(keep, drop).unwrap();
    w.record(&[Shift { keep, drop }]);
    assert_eq!(w.dropped(), 2);
    let held = s.n_past();
    // The app sends the full history: the dropped turn is left out and every
    // cached token is reused (the answer's end marker is new).
    msgs.push(ChatMessage::new("assistant", answer));
    msgs.push(ChatMessage::new("user", question(4)));
    let ids = w.fit(&mut s, &msgs, true, None, Some(None)).unwrap();
    let mut view = msgs[..1].to_vec();
    view.extend_from_slice(&msgs[3..]);
    assert_eq!(ids, render(&view));
    assert_eq!(w.view(), &view[..]);
    let kept = s.keep_shared_prefix(&ids);
    eprintln!("{held} tokens cached after the shift, {kept} reused");
    assert_eq!(kept, held);
}
