//! The KV cache costs what is used: a session with a long context reserves it
//! but only the pages of the rows written become resident, for f16 and f32
//! alike; a context too large for the machine is an error value, not an abort.
//!
//! Resident memory is a property of the whole process, so the measurement runs
//! in a child process of this test binary (one test, one thread): other tests
//! cannot disturb it.

mod common;
use common::*;
use std::sync::Arc;
use tah::model::kv_cache::{KvCache, KvError, KvType, Rows};
use tah::model::Model;
use tah::session::{Session, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};

/// Set in the child process that measures.
const CHILD: &str = "TAH_KV_MEMORY_CHILD";
const N_TOKENS: usize = 50;

/// The process's resident set size in bytes (`VmRSS` of /proc/self/status).
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {line:?}"));
    kb * 1024
}

/// Feeds `N_TOKENS` tokens to a session of `ctx` tokens and returns the growth of
/// the resident set it caused, after a warm-up session of the same model (it
/// pages in the weights and sizes the allocator's heap).
fn rss_growth(model: &Arc<Model>, kv_type: KvType, ctx: usize, tah: &TahOptions) -> usize {
    let tokens: Vec<u32> = (0..N_TOKENS as u32).map(|t| 3 + t * 7).collect();
    let opts = |ctx| SessionOptions {
        ctx,
        kv_type,
        batch: 16,
        tah: tah.clone(),
    };
    let mut warm = Session::new(Arc::clone(model), &opts(2 * N_TOKENS)).unwrap();
    warm.feed(&tokens, None).unwrap();
    drop(warm);
    let before = rss();
    let mut s = Session::new(Arc::clone(model), &opts(ctx)).unwrap();
    s.feed(&tokens, None).unwrap();
    let after = rss();
    assert_eq!(s.n_past(), N_TOKENS);
    if let Some(d) = tah.max_depth {
        assert_eq!(s.cache.len(d), N_TOKENS, "every token ran depth {d}");
    }
    after.saturating_sub(before)
}

/// Bytes of a full cache: keys and values of every layer and depth.
fn full_bytes(m: &Model, kv_type: KvType, ctx: usize, depths: usize) -> usize {
    let elem = match kv_type {
        KvType::F16 => 2,
        KvType::F32 => 4,
        KvType::Q8_0 => unreachable!("only the float types are measured here"),
    };
    ctx * m.cfg.n_kv_heads * m.cfg.head_dim * m.cfg.n_layers * 2 * depths * elem
}

fn check(name: &str, model: &Arc<Model>, ctx: usize, tah: &TahOptions, depths: usize) {
    for kv_type in [KvType::F16, KvType::F32] {
        let full = full_bytes(model, kv_type, ctx, depths);
        let grew = rss_growth(model, kv_type, ctx, tah);
        eprintln!("{name} {kv_type:?} ctx {ctx}: full cache {full} B, RSS grew {grew} B");
        assert!(
            grew < full / 10,
            "{name} {kv_type:?} ctx {ctx}: RSS grew {grew} B, full cache {full} B"
        );
    }
}

/// Run by `kv_memory_follows_tokens` in a child process.
#[test]
#[ignore = "runs in a child process of kv_memory_follows_tokens"]
fn kv_memory_child() {
    assert_eq!(
        std::env::var(CHILD).as_deref(),
        Ok("1"),
        "run by the parent"
    );
    // SmolLM2 (30 layers × 192): a full f16 cache of 32768 tokens is 755 MB.
    if let Some(path) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") {
        let m = load(&path);
        check("SmolLM2", &m, 32768, &TahOptions::default(), 1);
    }
    // The TaH fixture at depth 2 on every token: the sparse depth too (1 GiB
    // of f16 for 2^20 tokens).
    let m = load(&fixture_tah());
    let always = TahOptions {
        mode: ThinkMode::Always,
        max_depth: Some(2),
        ..Default::default()
    };
    check("tah-tiny", &m, 1 << 20, &always, 2);
}

#[test]
fn kv_memory_follows_tokens() {
    // Under an emulator (qemu-user: the cross-built suite) the process's RSS
    // is the emulator's; the native suite measures this.
    if runner().is_some() {
        eprintln!("skipping under TAH_TEST_RUNNER: the emulator's RSS is not the engine's");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "kv_memory_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "child failed");
    assert!(text.contains("1 passed"), "the child ran no test");
}

#[test]
fn absurd_context_is_an_error() {
    // SmolLM2's shape with 2^40 tokens: 384 TiB, beyond any address space.
    let e = KvCache::try_new(KvType::F16, 30, 192, 1 << 40, 1).err();
    let bytes = (1usize << 40) * 192 * 2 * 2 * 30;
    assert_eq!(
        e,
        Some(KvError::OutOfMemory {
            capacity: 1 << 40,
            bytes
        })
    );
    // A size that does not fit in usize.
    let e = KvCache::try_new(KvType::F32, 30, 192, usize::MAX / 100, 2).err();
    assert_eq!(
        e,
        Some(KvError::TooLarge {
            capacity: usize::MAX / 100,
            kv_dim: 192
        })
    );
}

#[test]
fn small_cache_reads_back_what_was_written() {
    for ty in [KvType::F16, KvType::F32] {
        let mut c = KvCache::try_new(ty, 2, 4, 8, 2).unwrap();
        assert_eq!(c.append(1, &[0, 1]), 0);
        c.write(1, 1, 1, &[1.0, 2.0, 3.0, 4.0], &[-1.0, -2.0, -3.0, -4.0]);
        assert_eq!(c.append(2, &[1]), 0);
        c.write(2, 0, 0, &[0.5; 4], &[0.25; 4]);
        let f32s = |r: Rows| -> Vec<f32> {
            match r {
                Rows::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
                Rows::F32(v) => v.to_vec(),
                Rows::Q8_0(_) => unreachable!("float types only"),
            }
        };
        let (k, v) = c.rows(1, 1, 2);
        // Slot 0 was never written: zeroed memory reads as +0.0.
        assert_eq!(f32s(k), [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(f32s(v), [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0]);
        let (k, v) = c.rows(2, 0, 1);
        assert_eq!((f32s(k), f32s(v)), (vec![0.5; 4], vec![0.25; 4]));
        assert_eq!(c.positions(2), [1]);
        // Filled slots × kv_dim × (k, v) × layers × element size.
        let elem = if ty == KvType::F16 { 2 } else { 4 };
        assert_eq!(
            c.bytes_per_depth(),
            [2 * 4 * 2 * 2 * elem, 4 * 2 * 2 * elem]
        );
    }
    // A zero-sized cache is valid and holds nothing.
    let c = KvCache::try_new(KvType::F16, 2, 4, 0, 1).unwrap();
    assert!(matches!(c.rows(1, 0, 0).0, Rows::F16(&[])));
}

/// Through the C ABI a context too large for the machine is a NULL session and
/// an error message, not an abort of the host process.
#[test]
fn absurd_context_through_c_abi_is_an_error() {
    use std::ffi::{CStr, CString};
    use tah::ffi::*;
    let Some(path) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let path = CString::new(path.to_str().unwrap()).unwrap();
    let last_error = || {
        unsafe { CStr::from_ptr(tah_last_error()) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY (test): valid C strings and parameter structs, handles freed once.
    unsafe {
        let m = tah_model_load(path.as_ptr(), std::ptr::null());
        assert!(!m.is_null(), "load: {}", last_error());
        // i32::MAX tokens: 824 GB per layer's f16 keys alone.
        let mut p: tah_session_params = std::mem::zeroed();
        tah_session_params_init(&mut p, std::mem::size_of::<tah_session_params>());
        p.n_ctx = i32::MAX;
        let s = tah_session_new(m, &p);
        assert!(s.is_null(), "a session of i32::MAX tokens was created");
        let e = last_error();
        // Refused before any reservation: above the engine's context limit.
        assert!(
            e.contains("context length 2147483647 is above the limit"),
            "{e}"
        );
        tah_model_free(m);
    }
}
