//! The C ABI, declared in `include/tah.h` (generated from this file by cbindgen:
//! `cbindgen --config cbindgen.toml --output include/tah.h src/ffi.rs`).
//!
//! Conventions, for every function:
//! - **Errors.** Functions returning `int32_t` return 0 (or a count) on success and
//!   -1 on failure; functions returning a pointer return NULL on failure. The reason
//!   is in [`tah_last_error`], per thread.
//! - **Null safety.** Every pointer argument may be NULL: the call fails with an
//!   error (or, for the `_free` functions, does nothing). Strings are NUL-terminated
//!   UTF-8.
//! - **No unwinding.** A Rust panic never crosses the ABI: it becomes an error
//!   return ("internal error: …"), and a session that panicked is reset.
//! - **Ownership.** `tah_model_load` / `tah_session_new` return handles owned by the
//!   caller and released with `tah_model_free` / `tah_session_free`. A session keeps
//!   its model alive: the model handle may be freed before its sessions. Strings
//!   and arrays passed in are borrowed for the call only; pointers handed to the
//!   token callback are valid during that call only.
//! - **Threads.** A `tah_model` is immutable: any number of threads may use it and
//!   create sessions on it at once. A `tah_session` must be used by one thread at a
//!   time (a call that finds it busy, e.g. from another thread or from inside its
//!   own token callback, fails instead of racing). Each model runs its forward
//!   passes on its own pool of `threads` workers; the token callback is called on
//!   the thread that called `tah_session_generate`.
//! - **Safety.** Each `unsafe` entry point's `# Safety` section lists what the
//!   caller must guarantee beyond the above: pointers that are NULL or valid for
//!   what they say (a handle from this library not yet freed, a NUL-terminated
//!   string, `n` readable elements, `capacity` writable ones).
#![allow(non_camel_case_types)]

use crate::api::{ApiModel, ApiSession, GenerateParams, ModelParams, Piece, SessionParams};
use crate::generate::StopReason;
use crate::model::kv_cache::KvType;
use crate::sample::SamplingParams;
use crate::tah::ThinkMode;
use crate::text::ChatMessage;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, TryLockError};

/// `tah_model_params.think_mode`: the decider picks the hard tokens (TaH).
pub const TAH_THINK_AUTO: i32 = 0;
/// `tah_model_params.think_mode`: depth 1 only (exactly the base model).
pub const TAH_THINK_NEVER: i32 = 1;
/// `tah_model_params.think_mode`: every token to the maximum depth.
pub const TAH_THINK_ALWAYS: i32 = 2;

/// `tah_model_params.kv_type`: half-precision KV cache (default).
pub const TAH_KV_F16: i32 = 0;
/// `tah_model_params.kv_type`: single-precision KV cache.
pub const TAH_KV_F32: i32 = 1;

/// `tah_stats.stop_reason`: no generation yet.
pub const TAH_STOP_NONE: i32 = 0;
/// `tah_stats.stop_reason`: an end-of-generation token.
pub const TAH_STOP_EOG: i32 = 1;
/// `tah_stats.stop_reason`: `max_tokens` reached.
pub const TAH_STOP_MAX_TOKENS: i32 = 2;
/// `tah_stats.stop_reason`: the context is full.
pub const TAH_STOP_CONTEXT_FULL: i32 = 3;
/// `tah_stats.stop_reason`: the callback returned non-zero.
pub const TAH_STOP_CALLBACK: i32 = 4;

/// `enable_thinking` of `tah_session_chat`: do not pass it to the template.
pub const TAH_THINKING_DEFAULT: i32 = -1;

/// A loaded model (opaque). Thread-safe; see the conventions above.
pub struct tah_model {
    inner: Arc<ApiModel>,
}

/// One conversation on a model (opaque). One thread at a time.
pub struct tah_session {
    inner: Mutex<ApiSession>,
}

/// How to load a model. Start from `tah_model_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tah_model_params {
    /// Worker threads of the model's pool; 0 = one per core.
    pub n_threads: i32,
    /// Default context length of its sessions, in tokens; 0 = the model's own,
    /// capped at 4096.
    pub n_ctx: i32,
    /// `TAH_THINK_AUTO`, `TAH_THINK_NEVER` or `TAH_THINK_ALWAYS`.
    pub think_mode: i32,
    /// Decider threshold in [0, 1] (a token continues iff its probability is
    /// above it); NaN = the file's.
    pub threshold: f32,
    /// Deepest depth a token may reach (1 = base model only); 0 = the file's.
    pub max_depth: i32,
    /// `TAH_KV_F16` or `TAH_KV_F32`.
    pub kv_type: i32,
}

/// Per-session settings. Start from `tah_session_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tah_session_params {
    /// Context length in tokens; 0 = the model's `n_ctx`.
    pub n_ctx: i32,
    /// Most prompt tokens per forward pass; 0 = 64.
    pub n_batch: i32,
}

/// Sampling settings. `tah_sampling_default()` or `tah_sampling_greedy()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tah_sampling {
    /// 0 (or less) = greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: i32,
    /// Nucleus mass; 1 = off.
    pub top_p: f32,
    /// Drop tokens below min_p × the top probability; 0 = off.
    pub min_p: f32,
    /// Random seed: a generation is reproducible for a given seed.
    pub seed: u64,
}

/// One chat message (borrowed strings).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tah_chat_message {
    /// "system", "user", "assistant" or "tool".
    pub role: *const c_char,
    pub content: *const c_char,
}

/// Statistics of a session's last generation (token counts and KV bytes as of
/// the call).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct tah_stats {
    /// Tokens fed before generating.
    pub prompt_tokens: u64,
    /// Prompt tokens that ran depth ≥ 2.
    pub prompt_hard_tokens: u64,
    /// Tokens generated (the end-of-generation token included).
    pub generated_tokens: u64,
    /// Generated tokens that ran depth ≥ 2.
    pub hard_tokens: u64,
    /// hard_tokens / generated_tokens.
    pub hard_rate: f64,
    /// Mean depth of the generated tokens.
    pub avg_depth: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// KV cache bytes in use at depth 1 and at depth 2.
    pub kv_bytes_depth1: u64,
    pub kv_bytes_depth2: u64,
    /// Tokens in the session's cache, and its context length.
    pub n_past: u64,
    pub n_ctx: u64,
    /// One of `TAH_STOP_*`.
    pub stop_reason: i32,
}

/// Called once per generated token, on the generating thread: `piece` is the
/// text the token completes (`len` bytes of UTF-8, NUL-terminated, possibly
/// empty; valid during the call only), `depth` the deepest pass it ran (1 or
/// more). Return 0 to go on, non-zero to stop.
pub type tah_token_callback = Option<
    unsafe extern "C" fn(
        piece: *const c_char,
        len: usize,
        token_id: i32,
        depth: i32,
        user_data: *mut c_void,
    ) -> c_int,
>;

// ---------------------------------------------------------------------------------
// Errors and the panic guard.

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error: {what}")
}

/// Runs `f`; an `Err` or a panic becomes `fail` and the thread's last error.
fn guard<R>(fail: R, f: impl FnOnce() -> Result<R, String>) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            set_error(&e);
            fail
        }
        Err(p) => {
            set_error(&panic_message(&*p));
            fail
        }
    }
}

/// A borrowed string argument.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives `'a`.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, String> {
    if p.is_null() {
        return Err(format!("{what} is NULL"));
    }
    // SAFETY: not NULL, and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| format!("{what} is not valid UTF-8"))
}

/// A model handle argument.
///
/// # Safety
/// `m` is NULL or a handle from `tah_model_load` not yet freed.
unsafe fn model_arg<'a>(m: *const tah_model) -> Result<&'a tah_model, String> {
    // SAFETY: NULL or a live handle (the caller's contract).
    unsafe { m.as_ref() }.ok_or_else(|| "model is NULL".to_string())
}

/// A token-id array argument, copied.
///
/// # Safety
/// `ids` is NULL or points to `n` readable `i32`s.
unsafe fn ids_arg(ids: *const i32, n: usize) -> Result<Vec<u32>, String> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if ids.is_null() {
        return Err("token ids are NULL".into());
    }
    // SAFETY: not NULL, and `n` readable elements by the caller's contract.
    unsafe { std::slice::from_raw_parts(ids, n) }
        .iter()
        .map(|&t| u32::try_from(t).map_err(|_| format!("negative token id {t}")))
        .collect()
}

/// Locks a session for one call. A session whose last call panicked is reset;
/// one in use elsewhere is an error.
///
/// # Safety
/// `s` is NULL or a handle from `tah_session_new` not yet freed.
unsafe fn with_session<R>(
    s: *const tah_session,
    f: impl FnOnce(&mut ApiSession) -> Result<R, String>,
) -> Result<R, String> {
    // SAFETY: NULL or a live handle (the caller's contract).
    let s = unsafe { s.as_ref() }.ok_or("session is NULL")?;
    let mut g = match s.inner.try_lock() {
        Ok(g) => g,
        Err(TryLockError::WouldBlock) => return Err(
            "session is in use (by another thread, or this call comes from its own token callback)"
                .into(),
        ),
        Err(TryLockError::Poisoned(p)) => {
            s.inner.clear_poison();
            let mut g = p.into_inner();
            g.reset();
            g
        }
    };
    f(&mut g)
}

// ---------------------------------------------------------------------------------
// Library.

/// The library version, e.g. "0.1.0" (static string).
#[no_mangle]
pub extern "C" fn tah_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last call that failed on this thread ("" if none). Valid
/// until the next failing call on this thread; successful calls leave it alone.
#[no_mangle]
pub extern "C" fn tah_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ptr())).unwrap_or(c"".as_ptr())
}

/// Default model parameters: all cores, the model's context (≤ 4096), think
/// mode auto, the file's threshold and depth, f16 KV cache.
#[no_mangle]
pub extern "C" fn tah_model_default_params() -> tah_model_params {
    tah_model_params {
        n_threads: 0,
        n_ctx: 0,
        think_mode: TAH_THINK_AUTO,
        threshold: f32::NAN,
        max_depth: 0,
        kv_type: TAH_KV_F16,
    }
}

/// Default session parameters: the model's context, batches of 64.
#[no_mangle]
pub extern "C" fn tah_session_default_params() -> tah_session_params {
    tah_session_params {
        n_ctx: 0,
        n_batch: 0,
    }
}

/// The released evaluation's sampling: temperature 0.6, top-k 20, top-p 0.95, seed 0.
#[no_mangle]
pub extern "C" fn tah_sampling_default() -> tah_sampling {
    sampling_to_c(SamplingParams::default())
}

/// Greedy (argmax) decoding.
#[no_mangle]
pub extern "C" fn tah_sampling_greedy() -> tah_sampling {
    sampling_to_c(SamplingParams::greedy())
}

fn sampling_to_c(s: SamplingParams) -> tah_sampling {
    tah_sampling {
        temperature: s.temperature,
        top_k: s.top_k as i32,
        top_p: s.top_p,
        min_p: s.min_p,
        seed: s.seed,
    }
}

fn model_params(p: &tah_model_params) -> Result<ModelParams, String> {
    let nonneg =
        |v: i32, what: &str| usize::try_from(v).map_err(|_| format!("{what} {v} is negative"));
    let think = match p.think_mode {
        TAH_THINK_AUTO => ThinkMode::Auto,
        TAH_THINK_NEVER => ThinkMode::Never,
        TAH_THINK_ALWAYS => ThinkMode::Always,
        m => return Err(format!("unknown think mode {m}")),
    };
    let kv_type = match p.kv_type {
        TAH_KV_F16 => KvType::F16,
        TAH_KV_F32 => KvType::F32,
        k => return Err(format!("unknown KV type {k}")),
    };
    let threshold = if p.threshold.is_nan() {
        None
    } else if (0.0..=1.0).contains(&p.threshold) {
        Some(p.threshold)
    } else {
        return Err(format!("threshold {} is outside [0, 1]", p.threshold));
    };
    let max_depth = nonneg(p.max_depth, "max depth")?;
    Ok(ModelParams {
        threads: nonneg(p.n_threads, "thread count")?,
        ctx: nonneg(p.n_ctx, "context length")?,
        think,
        threshold,
        max_depth: (max_depth != 0).then_some(max_depth),
        kv_type,
    })
}

// ---------------------------------------------------------------------------------
// Models.

/// Loads (memory-maps) a `.tah` / GGUF file. `params` may be NULL (defaults).
/// Returns NULL on failure (a missing file, a bad file, settings the model does
/// not support such as depth 2 on a plain model).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `params` is NULL or points to a
/// `tah_model_params`.
#[no_mangle]
pub unsafe extern "C" fn tah_model_load(
    path: *const c_char,
    params: *const tah_model_params,
) -> *mut tah_model {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract above.
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: NULL or a readable `tah_model_params`.
        let p = match unsafe { params.as_ref() } {
            Some(p) => *p,
            None => tah_model_default_params(),
        };
        let inner = ApiModel::load(path, model_params(&p)?)?;
        Ok(Box::into_raw(Box::new(tah_model { inner })))
    })
}

/// Releases the caller's handle (NULL is fine). Sessions on the model keep it
/// alive until they are freed.
///
/// # Safety
/// `model` is NULL or a handle from `tah_model_load`, freed only once.
#[no_mangle]
pub unsafe extern "C" fn tah_model_free(model: *mut tah_model) {
    if !model.is_null() {
        // SAFETY: a handle made by `Box::into_raw` in `tah_model_load`, freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(model) })));
    }
}

/// Vocabulary size, or -1.
///
/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn tah_model_n_vocab(model: *const tah_model) -> i32 {
    // SAFETY: the caller's contract above.
    guard(-1, || {
        Ok(unsafe { model_arg(model) }?.inner.model.cfg.vocab as i32)
    })
}

/// True when the model carries a tokenizer (text and chat prompts work);
/// id-only models are driven with `tah_session_prompt_tokens`.
///
/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn tah_model_has_tokenizer(model: *const tah_model) -> bool {
    guard(false, || {
        // SAFETY: the caller's contract above.
        Ok(unsafe { model_arg(model) }?.inner.model.tokenizer.is_some())
    })
}

/// Token ids of `text` into `out` (room for `capacity`). Returns the number of
/// tokens; when that is more than `capacity` nothing is written (call again with
/// a bigger buffer; `out` may be NULL when `capacity` is 0). -1 on error.
///
/// # Safety
/// `model` is NULL or a live model handle; `text` is NULL or a NUL-terminated
/// string; `out` is NULL or has room for `capacity` `int32_t`s.
#[no_mangle]
pub unsafe extern "C" fn tah_tokenize(
    model: *const tah_model,
    text: *const c_char,
    add_special: bool,
    out: *mut i32,
    capacity: usize,
) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let (m, text) = unsafe { (model_arg(model)?, str_arg(text, "text")?) };
        let ids = m.inner.tokenize(text, add_special, true)?;
        let n = i32::try_from(ids.len()).map_err(|_| "text too long".to_string())?;
        if ids.len() <= capacity && !ids.is_empty() {
            if out.is_null() {
                return Err("output buffer is NULL".into());
            }
            // SAFETY: not NULL, with room for `capacity` ≥ `ids.len()` elements.
            let out = unsafe { std::slice::from_raw_parts_mut(out, ids.len()) };
            for (o, &id) in out.iter_mut().zip(&ids) {
                *o = id as i32;
            }
        }
        Ok(n)
    })
}

/// The text of `n` token ids into `out` (room for `capacity` bytes), NUL-terminated.
/// Returns the text's length in bytes without the NUL; when `capacity` is less than
/// that plus one nothing is written (`out` may be NULL when `capacity` is 0).
/// -1 on error.
///
/// # Safety
/// `model` is NULL or a live model handle; `ids` is NULL or points to `n`
/// `int32_t`s; `out` is NULL or has room for `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_detokenize(
    model: *const tah_model,
    ids: *const i32,
    n: usize,
    out: *mut c_char,
    capacity: usize,
) -> i64 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let (m, ids) = unsafe { (model_arg(model)?, ids_arg(ids, n)?) };
        let text = m.inner.detokenize(&ids)?;
        if text.len() < capacity {
            if out.is_null() {
                return Err("output buffer is NULL".into());
            }
            // SAFETY: not NULL, with room for `capacity` > `text.len()` bytes.
            let out = unsafe { std::slice::from_raw_parts_mut(out.cast::<u8>(), text.len() + 1) };
            out[..text.len()].copy_from_slice(text.as_bytes());
            out[text.len()] = 0;
        }
        Ok(text.len() as i64)
    })
}

// ---------------------------------------------------------------------------------
// Sessions.

/// A new, empty session on `model`. `params` may be NULL (defaults). Allocates
/// the KV cache for its context. NULL on failure.
///
/// # Safety
/// `model` is NULL or a live model handle; `params` is NULL or points to a
/// `tah_session_params`.
#[no_mangle]
pub unsafe extern "C" fn tah_session_new(
    model: *const tah_model,
    params: *const tah_session_params,
) -> *mut tah_session {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract above.
        let (m, params) = unsafe { (model_arg(model)?, params.as_ref()) };
        let p = match params {
            Some(p) => *p,
            None => tah_session_default_params(),
        };
        let nonneg =
            |v: i32, what: &str| usize::try_from(v).map_err(|_| format!("{what} {v} is negative"));
        let sp = SessionParams {
            ctx: nonneg(p.n_ctx, "context length")?,
            batch: nonneg(p.n_batch, "batch size")?,
            ..SessionParams::default()
        };
        let s = ApiSession::new(Arc::clone(&m.inner), &sp)?;
        Ok(Box::into_raw(Box::new(tah_session {
            inner: Mutex::new(s),
        })))
    })
}

/// Frees a session (NULL is fine). Not while another thread uses it.
///
/// # Safety
/// `session` is NULL or a handle from `tah_session_new`, freed only once and
/// not in use on another thread.
#[no_mangle]
pub unsafe extern "C" fn tah_session_free(session: *mut tah_session) {
    if !session.is_null() {
        // SAFETY: a handle made by `Box::into_raw` in `tah_session_new`, freed
        // once, unused elsewhere (the caller's contract).
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(session) })));
    }
}

/// Forgets the conversation (the cache and anything queued). 0 or -1.
///
/// # Safety
/// `session` is NULL or a live session handle.
#[no_mangle]
pub unsafe extern "C" fn tah_session_reset(session: *mut tah_session) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        unsafe {
            with_session(session, |s| {
                s.reset();
                Ok(0)
            })
        }
    })
}

/// Queues `text` after what the session holds; it is fed by the next
/// `tah_session_generate`. With `add_special` the model's BOS is prepended where
/// it wants one (use it for the first text of a conversation). Returns the number
/// of tokens queued, or -1.
///
/// # Safety
/// `session` is NULL or a live session handle; `text` is NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tah_session_prompt(
    session: *mut tah_session,
    text: *const c_char,
    add_special: bool,
) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let text = unsafe { str_arg(text, "text") }?;
        // SAFETY: the caller's contract above.
        unsafe {
            with_session(session, |s| {
                Ok(s.prompt_text(text, add_special, true)? as i32)
            })
        }
    })
}

/// Queues `n` token ids after what the session holds. 0 or -1.
///
/// # Safety
/// `session` is NULL or a live session handle; `ids` is NULL or points to `n`
/// `int32_t`s.
#[no_mangle]
pub unsafe extern "C" fn tah_session_prompt_tokens(
    session: *mut tah_session,
    ids: *const i32,
    n: usize,
) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let ids = unsafe { ids_arg(ids, n) }?;
        // SAFETY: the caller's contract above.
        unsafe {
            with_session(session, |s| {
                s.prompt_tokens(&ids)?;
                Ok(0)
            })
        }
    })
}

/// Sets the conversation to `messages[0..n]`, rendered with the model's chat
/// template (with `add_generation_prompt`, it ends where the assistant's reply
/// begins). `enable_thinking`: 1 or 0 is passed to the template (Qwen3: 0 asks
/// for a direct answer), `TAH_THINKING_DEFAULT` (-1) passes nothing. The cached
/// tokens the rendering shares with the session are kept and only the rest is
/// queued, so a multi-turn chat passes the whole conversation each turn (the
/// assistant's replies included) and pays only for the new suffix. Returns the
/// number of tokens queued, or -1.
///
/// # Safety
/// `session` is NULL or a live session handle; `messages` is NULL or points to
/// `n` `tah_chat_message`s whose strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn tah_session_chat(
    session: *mut tah_session,
    messages: *const tah_chat_message,
    n: usize,
    add_generation_prompt: bool,
    enable_thinking: i32,
) -> i32 {
    guard(-1, || {
        if n > 0 && messages.is_null() {
            return Err("messages are NULL".into());
        }
        let msgs = if n == 0 {
            &[][..]
        } else {
            // SAFETY: not NULL, `n` readable messages (the caller's contract).
            unsafe { std::slice::from_raw_parts(messages, n) }
        };
        let msgs = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                // SAFETY: NULL or NUL-terminated strings (the caller's contract).
                let (role, content) = unsafe {
                    (
                        str_arg(m.role, &format!("messages[{i}].role"))?,
                        str_arg(m.content, &format!("messages[{i}].content"))?,
                    )
                };
                Ok(ChatMessage::new(role, content))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let thinking = match enable_thinking {
            TAH_THINKING_DEFAULT => None,
            0 => Some(false),
            1 => Some(true),
            v => return Err(format!("enable_thinking {v} is not -1, 0 or 1")),
        };
        // SAFETY: the caller's contract above.
        unsafe {
            with_session(session, |s| {
                Ok(s.chat(&msgs, add_generation_prompt, thinking)? as i32)
            })
        }
    })
}

/// Feeds the queued prompt and generates up to `max_tokens` tokens, calling
/// `callback` (may be NULL) for each on this thread; a non-zero return stops.
/// The end-of-generation token ends generation without a callback. `sampling`
/// may be NULL (`tah_sampling_default()`). With nothing queued, generation
/// continues after the last token in the session. Returns the number of tokens
/// generated, or -1.
///
/// # Safety
/// `session` is NULL or a live session handle; `sampling` is NULL or points to
/// a `tah_sampling`; `callback`, when given, is safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn tah_session_generate(
    session: *mut tah_session,
    max_tokens: i32,
    sampling: *const tah_sampling,
    callback: tah_token_callback,
    user_data: *mut c_void,
) -> i32 {
    guard(-1, || {
        let max = usize::try_from(max_tokens)
            .map_err(|_| format!("max_tokens {max_tokens} is negative"))?;
        // SAFETY: NULL or a readable `tah_sampling` (the caller's contract).
        let sp = match unsafe { sampling.as_ref() } {
            None => SamplingParams::default(),
            Some(s) => SamplingParams {
                temperature: s.temperature,
                top_k: usize::try_from(s.top_k)
                    .map_err(|_| format!("top_k {} is negative", s.top_k))?,
                top_p: s.top_p,
                min_p: s.min_p,
                seed: s.seed,
                ..SamplingParams::default()
            },
        };
        let generate = |s: &mut ApiSession| {
            let mut buf: Vec<u8> = Vec::with_capacity(64);
            let mut on_token = |p: &Piece| match callback {
                None => true,
                Some(cb) => {
                    buf.clear();
                    buf.extend_from_slice(p.text.as_bytes());
                    buf.push(0);
                    // SAFETY: the caller vouches for its callback and user data;
                    // `buf` is a NUL-terminated piece that outlives the call.
                    let r = unsafe {
                        cb(
                            buf.as_ptr().cast(),
                            p.text.len(),
                            p.id as i32,
                            p.depth as i32,
                            user_data,
                        )
                    };
                    r == 0
                }
            };
            let gp = GenerateParams {
                max_tokens: max,
                sampling: sp,
                ..GenerateParams::default()
            };
            let n = s.generate(&gp, &mut on_token)?;
            Ok(n as i32)
        };
        // SAFETY: the caller's contract above.
        unsafe { with_session(session, generate) }
    })
}

/// Fills `out` with the statistics of the session's last generation. 0 or -1.
///
/// # Safety
/// `session` is NULL or a live session handle; `out` is NULL or points to a
/// writable `tah_stats`.
#[no_mangle]
pub unsafe extern "C" fn tah_session_stats(
    session: *const tah_session,
    out: *mut tah_stats,
) -> i32 {
    guard(-1, || {
        if out.is_null() {
            return Err("stats output is NULL".into());
        }
        // SAFETY: the caller's contract above.
        let st = unsafe { with_session(session, |s| Ok(s.stats())) }?;
        let st = tah_stats {
            prompt_tokens: st.prompt_tokens as u64,
            prompt_hard_tokens: st.prompt_hard_tokens as u64,
            generated_tokens: st.generated_tokens as u64,
            hard_tokens: st.hard_tokens as u64,
            hard_rate: st.hard_rate,
            avg_depth: st.avg_depth,
            prefill_tokens_per_s: st.prefill_tokens_per_s,
            decode_tokens_per_s: st.decode_tokens_per_s,
            kv_bytes_depth1: st.kv_bytes[0] as u64,
            kv_bytes_depth2: st.kv_bytes[1] as u64,
            n_past: st.n_past as u64,
            n_ctx: st.ctx as u64,
            stop_reason: match st.stop {
                None => TAH_STOP_NONE,
                Some(StopReason::Eog) => TAH_STOP_EOG,
                Some(StopReason::MaxTokens) => TAH_STOP_MAX_TOKENS,
                Some(StopReason::ContextFull) => TAH_STOP_CONTEXT_FULL,
                // The C ABI sets no stop strings yet: never seen here.
                Some(StopReason::Stopped | StopReason::StopString | StopReason::Cancelled) => {
                    TAH_STOP_CALLBACK
                }
            },
        };
        // SAFETY: not NULL, and writable (the caller's contract).
        unsafe { out.write(st) };
        Ok(0)
    })
}
