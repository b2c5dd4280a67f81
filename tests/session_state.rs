//! Saved session states (src/session_state.rs, docs/FORMAT.md § "Saved session
//! state"): a restored session — in this process or a new one — continues with
//! exactly the tokens and depths of the uninterrupted one; damaged, truncated,
//! forged and mismatched states are errors that leave the session as it was.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tah::api::{ApiModel, ApiSession, GenerateParams, ModelParams, SessionParams};
use tah::model::kv_cache::KvType;
use tah::sample::SamplingParams;
use tah::session_state::checksum;
use tah::tah::{ThinkMode, TokenInfo};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The env var that makes [`child_process_restore`] act (set by the parent test).
const CHILD: &str = "TAH_STATE_TEST_CHILD";

fn api(path: &Path, kv_type: KvType, think: ThinkMode) -> Arc<ApiModel> {
    let params = ModelParams {
        threads: 1,
        ctx: 128,
        think,
        kv_type,
        ..Default::default()
    };
    ApiModel::load(path, params).unwrap_or_else(|e| panic!("{e}"))
}

fn session(m: &Arc<ApiModel>, ctx: usize) -> ApiSession {
    let p = SessionParams {
        ctx,
        batch: 16,
        ..Default::default()
    };
    ApiSession::new(Arc::clone(m), &p).unwrap()
}

fn params(max_tokens: usize, temperature: f32, seed: u64) -> GenerateParams {
    let sampling = if temperature > 0.0 {
        SamplingParams {
            temperature,
            seed,
            top_k: 0,
            top_p: 1.0,
            ..SamplingParams::default()
        }
    } else {
        SamplingParams::greedy()
    };
    GenerateParams {
        max_tokens,
        sampling,
        ..Default::default()
    }
}

/// Generates and returns the ids the callback saw.
fn run(s: &mut ApiSession, p: &GenerateParams) -> Vec<u32> {
    let mut ids = Vec::new();
    s.generate(p, &mut |piece| {
        ids.push(piece.id);
        true
    })
    .unwrap_or_else(|e| panic!("{e}"));
    ids
}

/// Depth and decider probability bits of every token (NaN compares by bits).
fn infos(s: &ApiSession) -> Vec<(u8, u32)> {
    s.session()
        .token_info()
        .iter()
        .map(|i: &TokenInfo| (i.depth, i.prob.to_bits()))
        .collect()
}

/// A conversation up to the save point: `first` prompt, generation, then
/// `second` queued (empty: nothing queued, the next generation re-feeds the
/// last token).
fn conversation(
    m: &Arc<ApiModel>,
    first: &[u32],
    second: &[u32],
    p: &GenerateParams,
) -> ApiSession {
    let mut s = session(m, 128);
    s.prompt_tokens(first).unwrap();
    run(&mut s, p);
    if !second.is_empty() {
        s.prompt_tokens(second).unwrap();
    }
    s
}

/// Saves `s` mid-conversation, continues it, restores the state into a fresh
/// session (and, through a file, into a new process) and continues that:
/// identical tokens, depths and decider probabilities. Returns the state.
fn check_continuation(
    path: &Path,
    m: &Arc<ApiModel>,
    mut s: ApiSession,
    p: &GenerateParams,
    what: &str,
) -> Vec<u8> {
    let state = s.save_state().unwrap();
    let file = scratch("state").join(format!("{what}.tahstate"));
    s.save_file(&file).unwrap();
    assert!(
        std::fs::read(&file).unwrap() == state,
        "{what}: file = bytes"
    );
    let want = run(&mut s, p);
    assert!(!want.is_empty(), "{what}: nothing generated");

    let mut t = session(m, 128);
    t.prompt_tokens(&[1, 2, 3]).unwrap(); // something to be replaced
    t.restore_state(&state).unwrap();
    assert!(
        t.save_state().unwrap() == state,
        "{what}: restore → save round trip"
    );
    assert_eq!(run(&mut t, p), want, "{what}: restored tokens");
    assert_eq!(
        t.session().tokens(),
        s.session().tokens(),
        "{what}: all tokens"
    );
    assert_eq!(infos(&t), infos(&s), "{what}: depths and probabilities");

    let mut u = session(m, 128);
    u.load_file(&file).unwrap();
    assert_eq!(run(&mut u, p), want, "{what}: loaded from file");

    assert_eq!(
        child(path, &file, m, p),
        s.session().tokens(),
        "{what}: restored in a new process"
    );
    state
}

/// Runs [`child_process_restore`] in a new process of this test binary.
fn child(model: &Path, state: &Path, m: &Arc<ApiModel>, p: &GenerateParams) -> Vec<u32> {
    let out = state.with_extension("child-out");
    let kv = match m.params.kv_type {
        KvType::F16 => "f16",
        _ => "f32",
    };
    let think = match m.params.think {
        ThinkMode::Budget(r) => format!("budget:{r}"),
        _ => "auto".to_string(),
    };
    let spec = format!(
        "{}\n{}\n{}\n{kv}\n{think}\n{}\n{}\n{}",
        model.display(),
        state.display(),
        out.display(),
        p.sampling.temperature,
        p.sampling.seed,
        p.max_tokens
    );
    let exe = std::env::current_exe().unwrap();
    let status = bin_command(exe.to_str().unwrap())
        .args(["--exact", "child_process_restore", "--nocapture"])
        .env(CHILD, spec)
        .status()
        .unwrap();
    assert!(status.success(), "child process failed");
    std::fs::read_to_string(&out)
        .unwrap()
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect()
}

/// The new process's half of [`check_continuation`]: acts only when the parent
/// test sets `TAH_STATE_TEST_CHILD` (model, state file, output file, KV type,
/// think mode, temperature, seed, max tokens, one a line); loads the state,
/// generates, and writes every token of the session.
#[test]
fn child_process_restore() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let f: Vec<&str> = spec.lines().collect();
    let kv = if f[3] == "f16" {
        KvType::F16
    } else {
        KvType::F32
    };
    let think = match f[4].strip_prefix("budget:") {
        Some(r) => ThinkMode::Budget(r.parse().unwrap()),
        None => ThinkMode::Auto,
    };
    let m = api(Path::new(f[0]), kv, think);
    let mut s = session(&m, 128);
    s.load_file(Path::new(f[1])).unwrap();
    let p = params(
        f[7].parse().unwrap(),
        f[5].parse().unwrap(),
        f[6].parse().unwrap(),
    );
    run(&mut s, &p);
    let ids: Vec<String> = s.session().tokens().iter().map(|t| t.to_string()).collect();
    std::fs::write(f[2], ids.join(" ")).unwrap();
}

/// Bytes per cached token: the state's growth from `a` to `b` tokens.
fn per_token(a: (usize, usize), b: (usize, usize)) -> f64 {
    (b.1 - a.1) as f64 / (b.0 - a.0) as f64
}

fn size_of_state(s: &ApiSession) -> (usize, usize) {
    (s.session().n_past(), s.save_state().unwrap().len())
}

#[test]
fn smollm2_restored_session_continues_identically() {
    let Some(path) = real_tah(SMOLLM2, None) else {
        return;
    };
    let m = api(&path, KvType::F16, ThinkMode::Auto);
    let tok = m.tokenizer().unwrap();
    let first = tok.encode("The capital of France is", true).unwrap();
    let second = tok.encode(" Tell me about its museums.", false).unwrap();
    for (what, p) in [
        ("smollm2-greedy", params(10, 0.0, 0)),
        ("smollm2-t0.9", params(10, 0.9, 5)),
    ] {
        let s = conversation(&m, &first, &second, &p);
        check_continuation(&path, &m, s, &p, what);
    }
    // Nothing queued: the next generation re-feeds the last token.
    let p = params(8, 0.9, 99);
    let s = conversation(&m, &first, &[], &p);
    check_continuation(&path, &m, s, &p, "smollm2-nothing-queued");

    let mut s = session(&m, 128);
    s.prompt_tokens(&first).unwrap();
    run(&mut s, &params(2, 0.0, 0));
    let a = size_of_state(&s);
    run(&mut s, &params(20, 0.0, 0));
    let b = size_of_state(&s);
    let bpt = per_token(a, b);
    eprintln!(
        "SmolLM2-135M f16 KV: {bpt} bytes/token saved ({} bytes for {} tokens)",
        b.1, b.0
    );
    // 30 layers × (K + V) × 192 values × 2 bytes + id, depth, probability.
    assert_eq!(bpt, (30 * 2 * 192 * 2 + 9) as f64);
}

#[test]
fn fixture_restored_session_continues_identically() {
    let path = fixture_tah();
    let prompt = fixture_prompt();
    let (first, second) = prompt.split_at(prompt.len() / 2);
    for kv in [KvType::F32, KvType::F16] {
        for think in [ThinkMode::Auto, ThinkMode::Budget(0.3)] {
            let m = api(&path, kv, think);
            for (t, seed) in [(0.0, 0), (1.0, 7)] {
                let what = format!("fixture-{kv:?}-{think:?}-t{t}");
                let p = params(12, t, seed);
                let s = conversation(&m, first, second, &p);
                let depth2 = s
                    .session()
                    .token_info()
                    .iter()
                    .filter(|i| i.depth == 2)
                    .count();
                assert!(depth2 > 0, "{what}: no depth-2 token before the save");
                if let ThinkMode::Budget(_) = think {
                    assert!(s.session().budget().unwrap().seen() > 0);
                }
                check_continuation(&path, &m, s, &p, &what);
                let s = conversation(&m, first, &[], &p);
                check_continuation(&path, &m, s, &p, &format!("{what}-nothing-queued"));
            }
            let mut s = session(&m, 128);
            s.prompt_tokens(first).unwrap();
            let a = size_of_state(&s);
            run(&mut s, &params(40, 1.0, 3));
            let b = size_of_state(&s);
            let hard = s
                .session()
                .token_info()
                .iter()
                .filter(|i| i.depth == 2)
                .count();
            eprintln!(
                "fixture {kv:?} KV, {think:?}: {:.1} bytes/token saved ({} bytes for {} tokens, \
                 {hard} at depth 2)",
                per_token(a, b),
                b.1,
                b.0
            );
        }
    }
}

/// A small TaH state (some depth-2 tokens, some queued) and a session with
/// another conversation to restore it into.
fn small_state() -> (Arc<ApiModel>, Vec<u8>, ApiSession) {
    let m = api(&fixture_tah(), KvType::F32, ThinkMode::Auto);
    let prompt = fixture_prompt();
    let mut s = session(&m, 32);
    s.prompt_tokens(&prompt[..6]).unwrap();
    run(&mut s, &params(2, 0.0, 0));
    s.prompt_tokens(&[5, 6]).unwrap();
    assert!(s.session().token_info().iter().any(|i| i.depth == 2));
    let state = s.save_state().unwrap();
    let mut other = session(&m, 32);
    other.prompt_tokens(&prompt[3..9]).unwrap();
    run(&mut other, &params(3, 0.0, 0));
    other.prompt_tokens(&[9]).unwrap();
    (m, state, other)
}

/// Replaces the checksum of `body` + old checksum with the right one.
fn forge(mut state: Vec<u8>) -> Vec<u8> {
    let n = state.len() - 8;
    let sum = checksum(&state[..n]);
    state[n..].copy_from_slice(&sum.to_le_bytes());
    state
}

/// Offsets in a state of the fixture (docs/FORMAT.md): after magic, version,
/// fingerprint, the name (u16 length) and the KV type (u8 length).
struct Layout {
    counts: usize,
    tokens: usize,
    depths: usize,
    n_tokens: usize,
}

fn layout(state: &[u8]) -> Layout {
    let name_len = u16::from_le_bytes([state[20], state[21]]) as usize;
    let ty = 22 + name_len;
    let counts = ty + 1 + state[ty] as usize;
    let n_tokens = u32::from_le_bytes(state[counts + 16..counts + 20].try_into().unwrap()) as usize;
    // 6 counts, 1 sparse count (2 depths), hard-rate u64, budget flag 0.
    let tokens = counts + 4 * 7 + 8 + 1;
    Layout {
        counts,
        tokens,
        depths: tokens + 4 * n_tokens,
        n_tokens,
    }
}

#[test]
fn every_truncation_and_byte_flip_is_an_error() {
    let (_m, state, mut other) = small_state();
    let before = other.save_state().unwrap();
    eprintln!("small state: {} bytes", state.len());
    for len in 0..state.len() {
        let e = other.restore_state(&state[..len]).unwrap_err();
        assert!(
            e.contains("checksum mismatch") || e.contains("truncated"),
            "length {len}: {e}"
        );
        if len >= 20 {
            // With a valid checksum the layout checks catch it.
            let mut cut = state[..len - 8].to_vec();
            cut.extend_from_slice(&[0; 8]);
            let e = other.restore_state(&forge(cut)).unwrap_err();
            assert!(
                e.contains("damaged session state"),
                "length {len} forged: {e}"
            );
        }
    }
    for at in 0..state.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = state.clone();
            bad[at] ^= flip;
            let e = other.restore_state(&bad).unwrap_err();
            let want = match at {
                0..8 => "does not begin with TAHSTATE",
                8..12 => "layout version",
                _ => "checksum mismatch",
            };
            assert!(e.contains(want), "byte {at} ^ {flip:#x}: {e}");
        }
    }
    let mut long = state.clone();
    long.push(0);
    assert!(other
        .restore_state(&forge(long))
        .unwrap_err()
        .contains("header describes"));
    assert!(
        other.save_state().unwrap() == before,
        "a failed restore changed the session"
    );
}

#[test]
fn forged_states_with_bad_values_are_refused() {
    let (m, state, mut other) = small_state();
    let before = other.save_state().unwrap();
    let l = layout(&state);
    let vocab = m.model.cfg.vocab as u32;
    let depths = &state[l.depths..l.depths + l.n_tokens];
    let shallow = depths.iter().position(|&d| d == 1).unwrap();
    let deep = depths.iter().position(|&d| d == 2).unwrap();
    type Change<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "outside the vocabulary (size 512)",
            Box::new(|b| b[l.tokens..l.tokens + 4].copy_from_slice(&vocab.to_le_bytes())),
        ),
        (
            "has depth 3; depths run from 1 to 2",
            Box::new(|b| b[l.depths] = 3),
        ),
        ("has depth 0", Box::new(|b| b[l.depths] = 0)),
        (
            "not the positions of the tokens that reached it",
            Box::new(move |b| b[l.depths + shallow] = 2),
        ),
        (
            "not the positions of the tokens that reached it",
            Box::new(move |b| b[l.depths + deep] = 1),
        ),
        (
            "decider probability",
            Box::new(|b| {
                let probs = l.depths + l.n_tokens;
                b[probs..probs + 4].copy_from_slice(&2.0f32.to_le_bytes());
            }),
        ),
        (
            "header describes",
            Box::new(|b| b[l.counts + 16] = b[l.counts + 16].wrapping_add(1)),
        ),
        (
            "header describes",
            Box::new(|b| b[l.counts + 20] = b[l.counts + 20].wrapping_add(1)),
        ),
        (
            "do not fit this session's context of 32",
            Box::new(|b| b[l.counts + 19] = 0xff),
        ),
        (
            "more than the",
            Box::new(|b| b[l.counts + 24..l.counts + 28].copy_from_slice(&1000u32.to_le_bytes())),
        ),
        ("budget flag 2", Box::new(|b| b[l.tokens - 1] = 2)),
        (
            "hard-rate count 18446744073709551615 is out of range",
            Box::new(|b| b[l.tokens - 9..l.tokens - 1].fill(0xff)),
        ),
        (
            "budget count 18446744073709551615 is out of range",
            Box::new(|b| {
                b[l.tokens - 1] = 1;
                let mut block = [0u8; 8 + 4 + 4 * 128];
                block[..8].fill(0xff);
                b.splice(l.tokens..l.tokens, block);
            }),
        ),
        (
            "budget debt inf is out of range",
            Box::new(|b| {
                b[l.tokens - 1] = 1;
                let mut block = [0u8; 8 + 4 + 4 * 128];
                block[8..12].copy_from_slice(&f32::INFINITY.to_le_bytes());
                b.splice(l.tokens..l.tokens, block);
            }),
        ),
        (
            "budget probability -1 is outside [0, 1]",
            Box::new(|b| {
                b[l.tokens - 1] = 1;
                let mut block = [0u8; 8 + 4 + 4 * 128];
                block[12..16].copy_from_slice(&(-1.0f32).to_le_bytes());
                b.splice(l.tokens..l.tokens, block);
            }),
        ),
        (
            "think-budget controller",
            Box::new(|b| {
                // A budget block, sized right.
                b[l.tokens - 1] = 1;
                let block = [0u8; 8 + 4 + 4 * 128];
                b.splice(l.tokens..l.tokens, block);
            }),
        ),
        ("fingerprint", Box::new(|b| b[12] ^= 1)),
        (
            "KV cache type f33 saved, this session's is f32",
            Box::new(|b| {
                let ty = 22 + u16::from_le_bytes([b[20], b[21]]) as usize;
                b[ty + 3] = b'3';
            }),
        ),
        ("cache shape", Box::new(|b| b[l.counts + 4] ^= 1)),
        (
            "1 cache depths saved, this session has 2",
            Box::new(|b| b[l.counts + 12] = 1),
        ),
    ];
    for (want, change) in &cases {
        let mut b = state.clone();
        change(&mut b);
        let e = other.restore_state(&forge(b)).unwrap_err();
        assert!(e.contains(want), "want {want:?}: {e}");
    }
    assert!(
        other.save_state().unwrap() == before,
        "a failed restore changed the session"
    );
    // The unchanged state still restores.
    other.restore_state(&state).unwrap();
    assert!(other.save_state().unwrap() == state, "bytes differ");
}

#[test]
fn mismatched_sessions_are_refused() {
    let path = fixture_tah();
    let (m, state, _) = small_state();
    let name = m.model.file().get_str("general.name").unwrap().to_string();

    let f16 = api(&path, KvType::F16, ThinkMode::Auto);
    let e = session(&f16, 32).restore_state(&state).unwrap_err();
    assert!(
        e.contains("KV cache type f32 saved, this session's is f16"),
        "{e}"
    );
    let f16_state = {
        let mut s = session(&f16, 32);
        s.prompt_tokens(&[1, 2]).unwrap();
        s.save_state().unwrap()
    };
    let e = session(&m, 32).restore_state(&f16_state).unwrap_err();
    assert!(
        e.contains("KV cache type f16 saved, this session's is f32"),
        "{e}"
    );

    let never = api(&path, KvType::F32, ThinkMode::Never);
    let e = session(&never, 32).restore_state(&state).unwrap_err();
    assert!(
        e.contains("2 cache depths saved, this session has 1"),
        "{e}"
    );
    let budget = api(&path, KvType::F32, ThinkMode::Budget(0.2));
    let e = session(&budget, 32).restore_state(&state).unwrap_err();
    assert!(e.contains("this session has a think budget"), "{e}");

    let e = session(&m, 8).restore_state(&state).unwrap_err();
    assert!(
        e.contains("do not fit this session's context of 8 tokens"),
        "{e}"
    );

    // The same weights with another tokenizer: another file.
    let text = api(&tah_text_model(), KvType::F32, ThinkMode::Auto);
    let e = session(&text, 32).restore_state(&state).unwrap_err();
    assert!(e.contains(&format!("saved from model \"{name}\"")), "{e}");

    let file = scratch("state").join("mismatch.tahstate");
    std::fs::write(&file, &state).unwrap();
    let e = session(&text, 32).load_file(&file).unwrap_err();
    assert!(
        e.contains("mismatch.tahstate") && e.contains("fingerprint"),
        "{e}"
    );
    let e = session(&m, 32)
        .load_file(&file.with_extension("absent"))
        .unwrap_err();
    assert!(e.contains("cannot read"), "{e}");

    let Some(smol) = real_tah(SMOLLM2, None) else {
        return;
    };
    let smol = api(&smol, KvType::F32, ThinkMode::Auto);
    let smol_name = smol
        .model
        .file()
        .get_str("general.name")
        .unwrap()
        .to_string();
    let e = session(&smol, 32).restore_state(&state).unwrap_err();
    assert!(
        e.contains(&format!("saved from model \"{name}\""))
            && e.contains(&format!("this session runs \"{smol_name}\"")),
        "{e}"
    );
    let smol_state = {
        let mut s = session(&smol, 32);
        s.prompt_tokens(&[1, 2]).unwrap();
        s.save_state().unwrap()
    };
    let e = session(&m, 32).restore_state(&smol_state).unwrap_err();
    assert!(
        e.contains(&format!("saved from model \"{smol_name}\"")),
        "{e}"
    );
}

#[test]
fn save_file_replaces_whole_files_only() {
    let (m, state, _) = small_state();
    let dir = scratch("state-files");
    let file = dir.join("s.tahstate");
    std::fs::write(&file, b"old contents").unwrap();
    let mut s = session(&m, 32);
    s.restore_state(&state).unwrap();
    s.save_file(&file).unwrap();
    assert!(std::fs::read(&file).unwrap() == state, "bytes differ");
    // No temporary file is left behind.
    let names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names, vec![file.clone()]);
    // A directory that does not exist: an error, nothing written.
    let e = s.save_file(&dir.join("absent/s.tahstate")).unwrap_err();
    assert!(e.contains("cannot create"), "{e}");
    // A file larger than any state of the session is refused unread.
    let big = dir.join("big.tahstate");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 32)
        .unwrap();
    let e = s.load_file(&big).unwrap_err();
    assert!(e.contains("more than a state of this session can"), "{e}");
    std::fs::remove_file(&big).unwrap();
}

/// Writes the fuzz target's seeds (fuzz/seeds/session_state) when
/// `TAH_STATE_FUZZ_SEEDS` names a directory: states of the fixture as the
/// target's sessions (context 64) hold them, after its think-mode byte.
#[test]
fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("TAH_STATE_FUZZ_SEEDS") else {
        return;
    };
    let prompt = fixture_prompt();
    for (mode, think) in [(0u8, ThinkMode::Auto), (1, ThinkMode::Budget(0.3))] {
        let m = api(&fixture_tah(), KvType::F32, think);
        for (i, (n_prompt, n_gen, queued)) in
            [(0, 0, 0), (1, 0, 2), (5, 3, 2)].into_iter().enumerate()
        {
            let mut s = session(&m, 64);
            if n_prompt > 0 {
                s.prompt_tokens(&prompt[..n_prompt]).unwrap();
                run(&mut s, &params(n_gen, 0.0, 0));
            }
            s.prompt_tokens(&prompt[..queued]).unwrap();
            let mut bytes = vec![mode];
            bytes.extend(s.save_state().unwrap());
            std::fs::write(
                Path::new(&dir).join(format!("fixture-{mode}-{i}.state")),
                bytes,
            )
            .unwrap();
        }
    }
}

/// Fuzzing found it: a think-budget count near u64::MAX restored, and the next
/// decision overflowed. Counts up to 2^48 restore and the session goes on;
/// larger ones are refused.
#[test]
fn budget_count_at_its_limit_restores_and_generates() {
    let m = api(&fixture_tah(), KvType::F32, ThinkMode::Budget(0.3));
    let mut s = session(&m, 32);
    s.prompt_tokens(&fixture_prompt()[..5]).unwrap();
    run(&mut s, &params(2, 0.0, 0));
    let state = s.save_state().unwrap();
    // Without a budget block the token ids start where the budget's count does.
    let at = layout(&state).tokens;
    assert_eq!(state[at - 1], 1, "budget flag");
    assert_eq!(state[at..at + 8], 7u64.to_le_bytes(), "7 decisions so far");
    for (count, ok) in [(1u64 << 48, true), ((1 << 48) + 1, false)] {
        let mut b = state.clone();
        b[at..at + 8].copy_from_slice(&count.to_le_bytes());
        let mut t = session(&m, 32);
        let r = t.restore_state(&forge(b));
        if ok {
            r.unwrap();
            run(&mut t, &params(3, 0.0, 0));
            // The last token fed again (nothing was queued), then 3 new ones.
            assert_eq!(t.session().budget().unwrap().seen(), count + 4);
        } else {
            assert!(r
                .unwrap_err()
                .contains("budget count 281474976710657 is out of range"));
        }
    }
}
