//! Arbitrary bytes as a saved session state (src/session_state.rs) restored
//! into a session of the fixture model (`$TAH_SHARED/fixtures/tah-tiny`,
//! converted once at f32). The first byte picks the session's think mode
//! (bit 0: decider, or think budget); the rest is the state, tried as it is and
//! with its checksum forged so that the checks behind the checksum are reached.
//! Restoring must succeed or give an error, never panic or allocate without
//! bound; a state that restores must save back to the same bytes, and the
//! restored session must generate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tah::api::{ApiModel, ApiSession, GenerateParams, ModelParams, SessionParams};
use tah::model::kv_cache::KvType;
use tah::sample::SamplingParams;
use tah::session_state::checksum;
use tah::tah::ThinkMode;

fn shared() -> String {
    std::env::var("TAH_SHARED")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared").to_string())
}

/// The fixture's two sessions' models: decider, think budget.
fn models() -> &'static [Arc<ApiModel>; 2] {
    static MODELS: OnceLock<[Arc<ApiModel>; 2]> = OnceLock::new();
    MODELS.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("tah-fuzz-state-{}.tah", std::process::id()));
        let policy = tah_convert::TypePolicy {
            quant: None,
            embd: None,
        };
        let fixture = format!("{}/fixtures/tah-tiny", shared());
        tah_convert::convert(fixture.as_ref(), &out, &policy, &mut |_, _, _| {})
            .unwrap_or_else(|e| panic!("convert {fixture}: {e}"));
        let load = |think| {
            let params = ModelParams {
                threads: 1,
                ctx: 64,
                think,
                kv_type: KvType::F32,
                ..Default::default()
            };
            ApiModel::load(&out, params).unwrap()
        };
        let m = [load(ThinkMode::Auto), load(ThinkMode::Budget(0.3))];
        let _ = std::fs::remove_file(&out); // mapped: stays readable
        m
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, state)) = data.split_first() else {
        return;
    };
    let model = &models()[(mode & 1) as usize];
    let params = SessionParams {
        ctx: 64,
        batch: 8,
        ..Default::default()
    };
    let mut forged = state.to_vec();
    if forged.len() >= 8 {
        let n = forged.len() - 8;
        let sum = checksum(&forged[..n]);
        forged[n..].copy_from_slice(&sum.to_le_bytes());
    }
    for input in [state, &forged[..]] {
        let mut s = ApiSession::new(Arc::clone(model), &params).unwrap();
        if s.restore_state(input).is_err() {
            continue;
        }
        assert!(s.save_state().unwrap() == input, "restore → save differs");
        let p = GenerateParams {
            max_tokens: 2,
            sampling: SamplingParams::greedy(),
            ..Default::default()
        };
        let _ = s.generate(&p, &mut |_| true);
    }
});
