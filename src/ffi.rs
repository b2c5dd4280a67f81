//! The C ABI, declared in `include/tah.h` (generated from this file by cbindgen:
//! `cbindgen --config cbindgen.toml --output include/tah.h src/ffi.rs`).
//!
//! The rules a C caller relies on (errors, NULL safety, ownership, threads,
//! lifetimes, callbacks, struct versioning) are written once, in the header's
//! opening comment (`header` in cbindgen.toml), and per function in the doc
//! comments below, which cbindgen copies into the header.
//!
//! Maintainers — growing a parameter struct without breaking old binaries:
//! every struct a caller passes starts with `size_t struct_size` (its
//! `sizeof` in the caller's header, set by the `_init` functions), and this
//! library reads or writes only the bytes that size covers (`read_sized`,
//! `write_sized`); the rest keep their defaults (any size from just
//! `struct_size` up is accepted: each version of the header is a prefix of the
//! next). So:
//! - add fields only at the end, of types for which any bit pattern is valid
//!   (integers, floats, pointers; never `bool` or an enum: the bytes are copied);
//! - a new field must start at or after the previous version's `sizeof`
//!   (insert explicit padding if the old struct had trailing padding), so an
//!   old caller's padding is never read as the new field;
//! - put a pointer before its count (a size that covers the pointer but not
//!   the count leaves the count at its default 0), and bump [`TAH_ABI_VERSION`].
#![allow(non_camel_case_types)]

use crate::api::{ApiModel, ApiSession, GenerateParams, ModelParams, Piece, SessionParams};
use crate::generate::{StopReason, MAX_STOP_STRINGS};
use crate::model::kv_cache::KvType;
use crate::sample::{validate_logit_bias, SamplingParams, MAX_LOGIT_BIAS};
use crate::session::CancelFlag;
use crate::tah::ThinkMode;
use crate::text::ChatMessage;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, TryLockError};

/// The version of this C ABI. It grows by one with every addition (a new
/// function, constant or struct field); a binary built against an older
/// header keeps working with a newer `libtah.so.0` (an incompatible change
/// would change the SONAME instead). Compare it with `tah_abi_version()` at
/// run time: a library older than the header may lack what the header
/// declares.
pub const TAH_ABI_VERSION: i32 = 1;

/// Returned by `tah_session_generate` when `tah_session_cancel` stopped it: not
/// an error (`tah_last_error` is not set); the session stays usable.
pub const TAH_CANCELLED: i32 = -2;

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
/// `tah_model_params.kv_type`: 8-bit blocks (ggml's q8_0: 32 values in 34
/// bytes), about half the bytes of f16. Needs a head dimension that is a
/// multiple of 32 (every Qwen3, Qwen2.5 and SmolLM2 model): loading another
/// model with it is an error.
pub const TAH_KV_Q8_0: i32 = 2;

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
/// `tah_stats.stop_reason`: the text reached one of `tah_sampling.stop`.
pub const TAH_STOP_STRING: i32 = 5;
/// `tah_stats.stop_reason`: `tah_session_cancel` stopped it.
pub const TAH_STOP_CANCELLED: i32 = 6;

/// `enable_thinking` of `tah_session_chat`: do not pass it to the template.
pub const TAH_THINKING_DEFAULT: i32 = -1;

/// Log levels (`tah_log_callback`'s `level`).
pub const TAH_LOG_ERROR: i32 = 0;
pub const TAH_LOG_WARN: i32 = 1;
pub const TAH_LOG_INFO: i32 = 2;
pub const TAH_LOG_DEBUG: i32 = 3;

/// Largest `struct_size` accepted (a larger one is taken for an uninitialized
/// struct).
pub const TAH_MAX_STRUCT_SIZE: usize = 1024;

/// A loaded model (opaque). Immutable and thread-safe: any number of threads
/// may use it, and create sessions on it, at once.
pub struct tah_model {
    inner: Arc<ApiModel>,
}

/// One conversation on a model (opaque). Used by one thread at a time, except
/// `tah_session_cancel`, which any thread may call at any time.
pub struct tah_session {
    inner: Mutex<ApiSession>,
    /// Beside the lock, so a cancel never waits for the running call.
    cancel: CancelFlag,
}

/// How to load a model. Fill with `tah_model_params_init(&p, sizeof p)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tah_model_params {
    /// `sizeof(tah_model_params)` in the caller's header (the init function
    /// sets it): the library reads only what it covers.
    pub struct_size: usize,
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
    /// `TAH_KV_F16` (default), `TAH_KV_F32` or `TAH_KV_Q8_0`.
    pub kv_type: i32,
}

/// Per-session settings. Fill with `tah_session_params_init(&p, sizeof p)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tah_session_params {
    /// `sizeof(tah_session_params)` in the caller's header.
    pub struct_size: usize,
    /// Context length in tokens; 0 = the model's `n_ctx`.
    pub n_ctx: i32,
    /// Most prompt tokens per forward pass; 0 = 64.
    pub n_batch: i32,
    /// 1 (default): when the conversation reaches the end of the context, the
    /// oldest turns after the kept prefix are dropped and it goes on; 0: it
    /// stops with `TAH_STOP_CONTEXT_FULL` (or a "does not fit" error).
    pub context_shift: i32,
    /// Tokens kept at the start by a context shift; -1 (default) = the system
    /// prompt's (the first message when its role is "system").
    pub keep_tokens: i32,
}

/// One logit-bias entry: `bias` is added to token `token`'s logit (−100
/// effectively bans it, +100 forces it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tah_logit_bias {
    pub token: i32,
    pub bias: f32,
}

/// Sampling settings. Fill with `tah_sampling_init(&s, sizeof s)` (the
/// released evaluation's setting), then change fields.
///
/// The sampler chain, in order (as llama.cpp documents its own):
/// 1. logit bias: each entry's `bias` added to its token's logit;
/// 2. penalties over the last `repeat_last_n` tokens of the session (prompt
///    included): for each token seen c ≥ 1 times there, a positive logit is
///    divided by `repeat_penalty`, a non-positive one multiplied by it, then
///    c · `frequency_penalty` + `presence_penalty` is subtracted;
/// 3. greedy (`temperature` 0 or `top_k` 1) takes the argmax here, ties to
///    the lowest id; otherwise:
/// 4. logits divided by `temperature`, 5. softmax,
/// 6. min-p: keep tokens with p ≥ `min_p` · p_max,
/// 7. top-k: keep the `top_k` most probable,
/// 8. top-p: keep the smallest most-probable prefix of mass ≥ `top_p`
///    (measured on the survivors renormalised),
/// 9. draw with a PRNG seeded by `seed`.
///
/// Every value is checked when `tah_session_generate` starts; NaN or out of
/// range is an error naming the field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tah_sampling {
    /// `sizeof(tah_sampling)` in the caller's header.
    pub struct_size: usize,
    /// Finite, ≥ 0; 0 = greedy. Default 0.6.
    pub temperature: f32,
    /// ≥ 0; 0 = off, 1 = greedy. Default 20.
    pub top_k: i32,
    /// In (0, 1]; 1 = off. Default 0.95.
    pub top_p: f32,
    /// In [0, 1]; 0 = off. Default 0.
    pub min_p: f32,
    /// Finite, > 0; 1 = off (default).
    pub repeat_penalty: f32,
    /// Tokens the penalties look at, in [0, 8192]; 0 = off. Default 64.
    pub repeat_last_n: i32,
    /// In [-2, 2]; 0 = off (default).
    pub presence_penalty: f32,
    /// In [-2, 2]; 0 = off (default).
    pub frequency_penalty: f32,
    /// Random seed: a generation is reproducible for a given seed. Default 0.
    pub seed: u64,
    /// `n_logit_bias` entries (at most 1024; tokens inside the vocabulary,
    /// biases finite in [-100, 100]), borrowed for the call; NULL when 0.
    pub logit_bias: *const tah_logit_bias,
    pub n_logit_bias: usize,
    /// `n_stop` stop strings (at most 16, each non-empty UTF-8 of at most 256
    /// bytes), borrowed for the call; NULL when 0. Generation ends when the
    /// text contains one; the stop text is not delivered to the callback, even
    /// when it spans several tokens (text that may begin one is held back until
    /// it cannot). Needs the model's tokenizer.
    pub stop: *const *const c_char,
    pub n_stop: usize,
}

/// One chat message (borrowed strings).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tah_chat_message {
    /// "system", "user", "assistant" or "tool".
    pub role: *const c_char,
    /// The text; control-token text in it (`<|im_end|>`) stays plain text.
    pub content: *const c_char,
}

/// Statistics of a session's last generation (token counts and KV bytes as of
/// the call). Set `struct_size = sizeof(tah_stats)` before `tah_session_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct tah_stats {
    /// `sizeof(tah_stats)` in the caller's header, set by the caller.
    pub struct_size: usize,
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
    /// Tokens delivered to the callback (what `tah_session_generate` returned,
    /// also when it returned `TAH_CANCELLED`).
    pub delivered_tokens: u64,
    /// One of `TAH_STOP_*`.
    pub stop_reason: i32,
}

/// Called once per generated token, on the thread that called
/// `tah_session_generate`: `piece` is the text the token completes (`len`
/// bytes of UTF-8, NUL-terminated, possibly empty; valid during the call
/// only), `depth` the deepest pass it ran (1 or more). Return 0 to go on,
/// non-zero to stop. It must not call into the same session (that call fails
/// with "in use"), except `tah_session_cancel`; it must not unwind (no C++
/// exception may leave it).
pub type tah_token_callback = Option<
    unsafe extern "C" fn(
        piece: *const c_char,
        len: usize,
        token_id: i32,
        depth: i32,
        user_data: *mut c_void,
    ) -> c_int,
>;

/// Receives the library's log messages (`level` one of `TAH_LOG_*`, `message`
/// NUL-terminated UTF-8 valid during the call only). It may be called from any
/// thread, several at once (model loading in two threads logs from both): it
/// must be thread-safe and must not unwind.
pub type tah_log_callback =
    Option<unsafe extern "C" fn(level: i32, message: *const c_char, user_data: *mut c_void)>;

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

/// Copies `bytes` into the caller's buffer when they fit (with a NUL after
/// them when `nul`); returns their length either way (the size query).
///
/// # Safety
/// `out` is NULL or has room for `capacity` bytes.
unsafe fn out_bytes(bytes: &[u8], out: *mut u8, capacity: usize, nul: bool) -> Result<i64, String> {
    let need = bytes.len() + nul as usize;
    if need <= capacity && need > 0 {
        if out.is_null() {
            return Err("output buffer is NULL".into());
        }
        // SAFETY: not NULL, with room for `capacity` ≥ `need` bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(out, need) };
        out[..bytes.len()].copy_from_slice(bytes);
        if nul {
            out[bytes.len()] = 0;
        }
    }
    i64::try_from(bytes.len()).map_err(|_| "output too large".to_string())
}

/// A session handle argument.
///
/// # Safety
/// `s` is NULL or a handle from `tah_session_new` not yet freed.
unsafe fn session_arg<'a>(s: *const tah_session) -> Result<&'a tah_session, String> {
    // SAFETY: NULL or a live handle (the caller's contract).
    unsafe { s.as_ref() }.ok_or_else(|| "session is NULL".to_string())
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
    // SAFETY: the caller's contract above.
    let s = unsafe { session_arg(s) }?;
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
// Versioned structs.

/// A struct whose first member is `size_t struct_size`.
///
/// # Safety
/// `#[repr(C)]`, `struct_size: usize` first, and every field valid for any bit
/// pattern (the structs are copied as bytes).
unsafe trait Versioned: Copy {
    const NAME: &'static str;
    fn defaults() -> Self;
    fn set_struct_size(&mut self, size: usize);
}

/// The least `struct_size`: the member itself.
const MIN_STRUCT_SIZE: usize = size_of::<usize>();

fn check_size<T: Versioned>(size: usize) -> Result<(), String> {
    if !(MIN_STRUCT_SIZE..=TAH_MAX_STRUCT_SIZE).contains(&size) {
        return Err(format!(
            "{}.struct_size {size} is not a size of this struct ({MIN_STRUCT_SIZE} to \
             {TAH_MAX_STRUCT_SIZE}): is it initialized (sizeof, or the _init function)?",
            T::NAME
        ));
    }
    Ok(())
}

/// The caller's struct: the bytes its `struct_size` covers, the defaults for
/// fields it does not have; NULL = the defaults. Bytes beyond the fields this
/// library knows (a newer header) must be zero.
///
/// # Safety
/// `p` is NULL or points to a struct whose first `struct_size` bytes are readable.
unsafe fn read_sized<T: Versioned>(p: *const T) -> Result<T, String> {
    let mut out = T::defaults();
    if p.is_null() {
        return Ok(out);
    }
    // SAFETY: the first member, readable by the caller's contract.
    let size = unsafe { p.cast::<usize>().read_unaligned() };
    check_size::<T>(size)?;
    let ours = size_of::<T>();
    if size > ours {
        // SAFETY: `size` readable bytes (the caller's contract), `size` ≤ the cap.
        let extra = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(ours), size - ours) };
        if extra.iter().any(|&b| b != 0) {
            return Err(format!(
                "{} has fields this library (ABI {TAH_ABI_VERSION}) does not know set: \
                 the program was built against a newer tah.h",
                T::NAME
            ));
        }
    }
    // SAFETY: `min(size, ours)` bytes readable from `p` and writable in `out`;
    // any bit pattern is a valid `T` (the trait's contract); an untyped copy.
    unsafe {
        std::ptr::copy_nonoverlapping(
            p.cast::<u8>(),
            (&mut out as *mut T).cast::<u8>(),
            size.min(ours),
        )
    };
    Ok(out)
}

/// Writes `v` into the caller's struct of `size` bytes: what fits, zeros
/// beyond the fields this library knows, `struct_size` = `size`.
///
/// # Safety
/// `p` is NULL or has `size` writable bytes.
unsafe fn write_sized<T: Versioned>(p: *mut T, size: usize, mut v: T) -> Result<(), String> {
    if p.is_null() {
        return Err(format!("{} is NULL", T::NAME));
    }
    check_size::<T>(size)?;
    v.set_struct_size(size);
    let ours = size_of::<T>();
    // SAFETY: `size` writable bytes at `p` (the caller's contract); an untyped
    // copy of `min(size, ours)` bytes of `v`, then zeros up to `size`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&v as *const T).cast::<u8>(),
            p.cast::<u8>(),
            size.min(ours),
        );
        if size > ours {
            std::ptr::write_bytes(p.cast::<u8>().add(ours), 0, size - ours);
        }
    }
    Ok(())
}

// SAFETY (the four impls): repr(C), struct_size first, integer, float and
// pointer fields only.
unsafe impl Versioned for tah_model_params {
    const NAME: &'static str = "tah_model_params";
    fn defaults() -> Self {
        tah_model_params {
            struct_size: size_of::<Self>(),
            n_threads: 0,
            n_ctx: 0,
            think_mode: TAH_THINK_AUTO,
            threshold: f32::NAN,
            max_depth: 0,
            kv_type: TAH_KV_F16,
        }
    }
    fn set_struct_size(&mut self, size: usize) {
        self.struct_size = size;
    }
}

unsafe impl Versioned for tah_session_params {
    const NAME: &'static str = "tah_session_params";
    fn defaults() -> Self {
        let d = SessionParams::default();
        tah_session_params {
            struct_size: size_of::<Self>(),
            n_ctx: 0,
            n_batch: 0,
            context_shift: d.context_shift as i32,
            keep_tokens: -1,
        }
    }
    fn set_struct_size(&mut self, size: usize) {
        self.struct_size = size;
    }
}

unsafe impl Versioned for tah_sampling {
    const NAME: &'static str = "tah_sampling";
    fn defaults() -> Self {
        let s = SamplingParams::default();
        tah_sampling {
            struct_size: size_of::<Self>(),
            temperature: s.temperature,
            top_k: s.top_k as i32,
            top_p: s.top_p,
            min_p: s.min_p,
            repeat_penalty: s.repeat_penalty,
            repeat_last_n: s.repeat_last_n as i32,
            presence_penalty: s.presence_penalty,
            frequency_penalty: s.frequency_penalty,
            seed: s.seed,
            logit_bias: std::ptr::null(),
            n_logit_bias: 0,
            stop: std::ptr::null(),
            n_stop: 0,
        }
    }
    fn set_struct_size(&mut self, size: usize) {
        self.struct_size = size;
    }
}

unsafe impl Versioned for tah_stats {
    const NAME: &'static str = "tah_stats";
    fn defaults() -> Self {
        tah_stats {
            struct_size: size_of::<Self>(),
            ..tah_stats::default()
        }
    }
    fn set_struct_size(&mut self, size: usize) {
        self.struct_size = size;
    }
}

// ---------------------------------------------------------------------------------
// Library.

/// The library version, e.g. "0.1.0" (static string).
#[no_mangle]
pub extern "C" fn tah_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version of the library (`TAH_ABI_VERSION` of the header it was built
/// from). A program built against header version H can use this library when
/// `tah_abi_version() >= H`.
#[no_mangle]
pub extern "C" fn tah_abi_version() -> i32 {
    TAH_ABI_VERSION
}

/// The message of the last call that failed on this thread ("" if none). Valid
/// until the next failing call on this thread; successful calls leave it alone.
#[no_mangle]
pub extern "C" fn tah_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ptr())).unwrap_or(c"".as_ptr())
}

/// The caller's `user_data`, which the caller vouches may be used from any
/// thread (the log callback's contract).
struct UserData(*mut c_void);
// SAFETY: the caller's contract for `tah_set_log_callback`.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}
impl UserData {
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Sends the library's log messages (model loading, choices made, warnings) to
/// `callback` with `user_data`, process-wide; NULL stops them. Without a
/// callback the library is silent (it never writes to stderr itself). The
/// callback may be called from any thread (see `tah_log_callback`), and one
/// call already under way on another thread may still finish after this
/// function returns: keep `user_data` valid until then.
///
/// # Safety
/// `callback`, when given, is safe to call with `user_data` from any thread.
#[no_mangle]
pub unsafe extern "C" fn tah_set_log_callback(callback: tah_log_callback, user_data: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| match callback {
        None => crate::log::set_sink(None),
        Some(f) => {
            let ud = UserData(user_data);
            crate::log::set_sink(Some(Arc::new(
                move |level: crate::log::Level, msg: &str| {
                    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
                    // SAFETY: the caller vouches for its callback and user data.
                    unsafe { f(level as i32, c.as_ptr(), ud.get()) }
                },
            )));
        }
    }));
}

/// Fills `*params` (of `size` bytes: pass `sizeof *params`) with the default
/// model parameters: all cores, the model's context (≤ 4096), think mode auto,
/// the file's threshold and depth, f16 KV cache. 0 or -1.
///
/// # Safety
/// `params` is NULL or has `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_model_params_init(params: *mut tah_model_params, size: usize) -> i32 {
    // SAFETY: the caller's contract above.
    guard(-1, || {
        unsafe { write_sized(params, size, tah_model_params::defaults()) }.map(|_| 0)
    })
}

/// Fills `*params` (of `size` bytes) with the default session parameters: the
/// model's context, batches of 64, context shift on, keeping the system
/// prompt. 0 or -1.
///
/// # Safety
/// `params` is NULL or has `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_session_params_init(
    params: *mut tah_session_params,
    size: usize,
) -> i32 {
    // SAFETY: the caller's contract above.
    guard(-1, || {
        unsafe { write_sized(params, size, tah_session_params::defaults()) }.map(|_| 0)
    })
}

/// Fills `*sampling` (of `size` bytes) with the released evaluation's
/// sampling: temperature 0.6, top-k 20, top-p 0.95, min-p 0, seed 0; no
/// penalties (repeat_penalty 1, window 64), no logit bias, no stop strings.
/// Set `temperature = 0` for greedy decoding. 0 or -1.
///
/// # Safety
/// `sampling` is NULL or has `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_sampling_init(sampling: *mut tah_sampling, size: usize) -> i32 {
    // SAFETY: the caller's contract above.
    guard(-1, || {
        unsafe { write_sized(sampling, size, tah_sampling::defaults()) }.map(|_| 0)
    })
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
        TAH_KV_Q8_0 => KvType::Q8_0,
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
/// not support such as depth 2 on a plain model). The handle is the caller's,
/// released with `tah_model_free`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `params` is NULL or points to a
/// `tah_model_params` of `struct_size` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_model_load(
    path: *const c_char,
    params: *const tah_model_params,
) -> *mut tah_model {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract above.
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: the caller's contract above.
        let p = unsafe { read_sized(params) }?;
        let inner = ApiModel::load(path, model_params(&p)?)?;
        Ok(Box::into_raw(Box::new(tah_model { inner })))
    })
}

/// Loads the model stored in `length` bytes at `offset` of the open file `fd`
/// (a model kept uncompressed inside an APK: the asset's file descriptor,
/// offset and length; a file an app was handed), mapped without copying.
/// `length` 0 = to the end of the file. The offset must keep the model's
/// tensor alignment (a multiple of its `general.alignment`, 32 by default, or
/// of the page size when smaller; a page-aligned offset always does): another
/// offset is an error saying so. `fd` is only used during the call (the
/// library maps the range through its own duplicate, closed before
/// returning): the caller still owns `fd` and may close it as soon as the call
/// returns. The file must not be truncated or rewritten while the model is
/// loaded. NULL on failure.
///
/// # Safety
/// `fd` is an open file descriptor or negative; `params` is NULL or points to
/// a `tah_model_params` of `struct_size` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_model_load_fd(
    fd: c_int,
    offset: u64,
    length: u64,
    params: *const tah_model_params,
) -> *mut tah_model {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract above.
        let p = unsafe { read_sized(params) }?;
        let mp = model_params(&p)?;
        if fd < 0 {
            return Err(format!("fd {fd} is not a file descriptor"));
        }
        #[cfg(unix)]
        {
            use std::os::fd::BorrowedFd;
            // SAFETY: an open descriptor for the duration of the call (the
            // caller's contract); it is only duplicated here.
            let fd_ref = unsafe { BorrowedFd::borrow_raw(fd) };
            let own = fd_ref
                .try_clone_to_owned()
                .map_err(|e| format!("fd {fd}: {e}"))?;
            let inner = ApiModel::load_file_range(std::fs::File::from(own), offset, length, mp)?;
            Ok(Box::into_raw(Box::new(tah_model { inner })))
        }
        #[cfg(not(unix))]
        {
            let _ = (offset, length, mp);
            Err("tah_model_load_fd needs a Unix file descriptor".into())
        }
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

/// Vocabulary size (rows of the model's embedding), or -1.
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

/// The model's beginning-of-sequence token id; -1 when it has none (or no
/// tokenizer), or when `model` is NULL (then with an error).
///
/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn tah_model_bos(model: *const tah_model) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let m = unsafe { model_arg(model) }?;
        let t = m.inner.model.tokenizer.as_ref();
        Ok(t.and_then(|t| t.bos_id()).map_or(-1, |id| id as i32))
    })
}

/// The model's end-of-sequence token id; -1 as for `tah_model_bos`. Generation
/// ends at any end-of-generation token (`tah_model_eog_tokens`), of which this
/// is usually one.
///
/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn tah_model_eos(model: *const tah_model) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let m = unsafe { model_arg(model) }?;
        let t = m.inner.model.tokenizer.as_ref();
        Ok(t.and_then(|t| t.eos_id()).map_or(-1, |id| id as i32))
    })
}

/// The ids that end generation, ascending, into `out` (room for `capacity`).
/// Returns how many there are; when that is more than `capacity` nothing is
/// written (`out` may be NULL when `capacity` is 0). 0 for a model without
/// tokenizer. -1 on error.
///
/// # Safety
/// `model` is NULL or a live model handle; `out` is NULL or has room for
/// `capacity` `int32_t`s.
#[no_mangle]
pub unsafe extern "C" fn tah_model_eog_tokens(
    model: *const tah_model,
    out: *mut i32,
    capacity: usize,
) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let m = unsafe { model_arg(model) }?;
        let ids = m
            .inner
            .model
            .tokenizer
            .as_ref()
            .map_or(&[][..], |t| t.eog_ids());
        // SAFETY: the caller's contract above.
        unsafe { out_ids(ids, out, capacity) }
    })
}

/// Copies ids into the caller's buffer when they fit; returns their number.
///
/// # Safety
/// `out` is NULL or has room for `capacity` `int32_t`s.
unsafe fn out_ids(ids: &[u32], out: *mut i32, capacity: usize) -> Result<i32, String> {
    let n = i32::try_from(ids.len()).map_err(|_| "too many tokens".to_string())?;
    if ids.len() <= capacity && !ids.is_empty() {
        if out.is_null() {
            return Err("output buffer is NULL".into());
        }
        // SAFETY: not NULL, with room for `capacity` ≥ `ids.len()` elements.
        let out = unsafe { std::slice::from_raw_parts_mut(out, ids.len()) };
        for (o, &id) in out.iter_mut().zip(ids) {
            *o = id as i32;
        }
    }
    Ok(n)
}

/// True when token `id` ends generation (false for other ids, a model without
/// tokenizer, or a NULL model).
///
/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn tah_model_is_eog(model: *const tah_model, id: i32) -> bool {
    guard(false, || {
        // SAFETY: the caller's contract above.
        let m = unsafe { model_arg(model) }?;
        let t = m.inner.model.tokenizer.as_ref();
        Ok(u32::try_from(id).is_ok_and(|id| t.is_some_and(|t| t.is_eog(id))))
    })
}

/// The bytes token `id` stands for, as the token callback would stream them
/// (a control token's own text; possibly part of a UTF-8 character), into
/// `out` (room for `capacity` bytes) followed by a NUL. Returns their number
/// without the NUL; when `capacity` is less than that plus one nothing is
/// written (`out` may be NULL when `capacity` is 0). -1 on error (no
/// tokenizer, an id outside the vocabulary).
///
/// # Safety
/// `model` is NULL or a live model handle; `out` is NULL or has room for
/// `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_token_to_piece(
    model: *const tah_model,
    id: i32,
    out: *mut c_char,
    capacity: usize,
) -> i64 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let m = unsafe { model_arg(model) }?;
        let t = m.inner.tokenizer()?;
        let piece = u32::try_from(id)
            .ok()
            .and_then(|id| t.token_piece(id))
            .ok_or_else(|| format!("token id {id} is outside the vocabulary"))?;
        // SAFETY: the caller's contract above.
        unsafe { out_bytes(&piece, out.cast(), capacity, true) }
    })
}

/// Token ids of `text` into `out` (room for `capacity`). Returns the number of
/// tokens; when that is more than `capacity` nothing is written (call again with
/// a bigger buffer; `out` may be NULL when `capacity` is 0). -1 on error.
/// `add_special`: the model's BOS first where it wants one. `parse_special`:
/// control tokens written in the text (`<|im_end|>`) become control tokens;
/// false keeps them plain text — the safe choice for anything a user typed.
///
/// # Safety
/// `model` is NULL or a live model handle; `text` is NULL or a NUL-terminated
/// string; `out` is NULL or has room for `capacity` `int32_t`s.
#[no_mangle]
pub unsafe extern "C" fn tah_tokenize(
    model: *const tah_model,
    text: *const c_char,
    add_special: bool,
    parse_special: bool,
    out: *mut i32,
    capacity: usize,
) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let (m, text) = unsafe { (model_arg(model)?, str_arg(text, "text")?) };
        let ids = m.inner.tokenize(text, add_special, parse_special)?;
        // SAFETY: the caller's contract above.
        unsafe { out_ids(&ids, out, capacity) }
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
        // SAFETY: the caller's contract above.
        unsafe { out_bytes(text.as_bytes(), out.cast(), capacity, true) }
    })
}

// ---------------------------------------------------------------------------------
// Sessions.

/// A new, empty session on `model`. `params` may be NULL (defaults). Allocates
/// the KV cache as the conversation grows. The handle is the caller's,
/// released with `tah_session_free`; it keeps the model alive. NULL on failure.
///
/// # Safety
/// `model` is NULL or a live model handle; `params` is NULL or points to a
/// `tah_session_params` of `struct_size` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_session_new(
    model: *const tah_model,
    params: *const tah_session_params,
) -> *mut tah_session {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract above.
        let m = unsafe { model_arg(model) }?;
        // SAFETY: the caller's contract above.
        let p = unsafe { read_sized(params) }?;
        let nonneg =
            |v: i32, what: &str| usize::try_from(v).map_err(|_| format!("{what} {v} is negative"));
        let context_shift = match p.context_shift {
            0 => false,
            1 => true,
            v => return Err(format!("context_shift {v} is not 0 or 1")),
        };
        let keep_tokens = match p.keep_tokens {
            -1 => None,
            v => Some(usize::try_from(v).map_err(|_| format!("keep_tokens {v} is below -1"))?),
        };
        let sp = SessionParams {
            ctx: nonneg(p.n_ctx, "context length")?,
            batch: nonneg(p.n_batch, "batch size")?,
            context_shift,
            keep_tokens,
        };
        let s = ApiSession::new(Arc::clone(&m.inner), &sp)?;
        let cancel = s.cancel_flag();
        Ok(Box::into_raw(Box::new(tah_session {
            inner: Mutex::new(s),
            cancel,
        })))
    })
}

/// Frees a session (NULL is fine). Not while another thread uses it (to stop
/// a running generation first: `tah_session_cancel`, then wait for that call
/// to return).
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

/// Stops the session's running `tah_session_generate` (in its prompt or in
/// its generation), which returns `TAH_CANCELLED` with stop_reason
/// `TAH_STOP_CANCELLED` within one forward step. Callable from any thread at
/// any time, also from the token callback; it never waits for the session's
/// call. A cancel that arrives while no generation runs is void (it does not
/// cancel the next one). After a cancel the session holds what was completed:
/// the prompt tokens fed before it (the rest of the queued prompt is dropped)
/// and the tokens generated; a `tah_session_chat` with the whole conversation
/// again re-feeds only what is missing. 0, or -1 for a NULL session.
///
/// # Safety
/// `session` is NULL or a live session handle (not being freed).
#[no_mangle]
pub unsafe extern "C" fn tah_session_cancel(session: *const tah_session) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        unsafe { session_arg(session) }?.cancel.cancel();
        Ok(0)
    })
}

/// Forgets the conversation (the cache and anything queued) and the last
/// statistics. 0 or -1.
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
/// `tah_session_generate` (this call only tokenizes). `add_special`: the
/// model's BOS first where it wants one (use it for the first text of a
/// conversation). `parse_special`: control tokens written in the text become
/// control tokens; false (the safe choice for user text) keeps them plain
/// text. Returns the number of tokens queued, or -1.
///
/// # Safety
/// `session` is NULL or a live session handle; `text` is NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tah_session_prompt(
    session: *mut tah_session,
    text: *const c_char,
    add_special: bool,
    parse_special: bool,
) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let text = unsafe { str_arg(text, "text") }?;
        // SAFETY: the caller's contract above.
        unsafe {
            with_session(session, |s| {
                let n = s.prompt_text(text, add_special, parse_special)?;
                i32::try_from(n).map_err(|_| "too many tokens".to_string())
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

/// The session's tokens — those in its cache, then those queued for the next
/// generation — into `out` (room for `capacity`). Returns how many there are;
/// when that is more than `capacity` nothing is written (`out` may be NULL when
/// `capacity` is 0). -1 on error.
///
/// # Safety
/// `session` is NULL or a live session handle; `out` is NULL or has room for
/// `capacity` `int32_t`s.
#[no_mangle]
pub unsafe extern "C" fn tah_session_tokens(
    session: *const tah_session,
    out: *mut i32,
    capacity: usize,
) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        unsafe {
            with_session(session, |s| {
                let cached = s.session().tokens();
                let queued = s.queued();
                let n = cached.len() + queued.len();
                let count = i32::try_from(n).map_err(|_| "too many tokens".to_string())?;
                if n <= capacity && n > 0 {
                    if out.is_null() {
                        return Err("output buffer is NULL".into());
                    }
                    // SAFETY: not NULL, with room for `capacity` ≥ `n` elements.
                    let out = std::slice::from_raw_parts_mut(out, n);
                    for (o, &id) in out.iter_mut().zip(cached.iter().chain(queued)) {
                        *o = id as i32;
                    }
                }
                Ok(count)
            })
        }
    })
}

/// Sets the conversation to `messages[0..n]`, rendered with the model's chat
/// template (with `add_generation_prompt`, it ends where the assistant's reply
/// begins). Control tokens come only from the template: text in a message's
/// content that spells one (`"<|im_end|>"`) stays plain text. `enable_thinking`:
/// 1 or 0 is passed to the template (Qwen3: 0 asks for a direct answer),
/// `TAH_THINKING_DEFAULT` (-1) passes nothing. The cached tokens the rendering
/// shares with the session are kept and only the rest is queued, so a
/// multi-turn chat passes the whole conversation each turn (the assistant's
/// replies included) and pays only for the new suffix. This call only renders
/// and tokenizes; `tah_session_generate` feeds. Returns the number of tokens
/// queued, or -1.
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
                let n = s.chat(&msgs, add_generation_prompt, thinking)?;
                i32::try_from(n).map_err(|_| "too many tokens".to_string())
            })
        }
    })
}

/// The generation settings of a `tah_sampling`, checked.
///
/// # Safety
/// `p` is NULL or a `tah_sampling` of `struct_size` readable bytes whose
/// pointers are NULL or valid for their counts.
unsafe fn generate_params(
    p: *const tah_sampling,
    max_tokens: usize,
    vocab: usize,
) -> Result<GenerateParams, String> {
    // SAFETY: the caller's contract above.
    let s = unsafe { read_sized(p) }?;
    let sampling = SamplingParams {
        temperature: s.temperature,
        top_k: usize::try_from(s.top_k).map_err(|_| format!("top_k {} is negative", s.top_k))?,
        top_p: s.top_p,
        min_p: s.min_p,
        seed: s.seed,
        repeat_penalty: s.repeat_penalty,
        repeat_last_n: usize::try_from(s.repeat_last_n)
            .map_err(|_| format!("repeat_last_n {} is negative", s.repeat_last_n))?,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
    };
    sampling.validate()?;
    if s.n_logit_bias > MAX_LOGIT_BIAS {
        return Err(format!(
            "{} logit-bias entries: at most {MAX_LOGIT_BIAS}",
            s.n_logit_bias
        ));
    }
    let mut logit_bias = Vec::with_capacity(s.n_logit_bias);
    if s.n_logit_bias > 0 {
        if s.logit_bias.is_null() {
            return Err("logit_bias is NULL".into());
        }
        // SAFETY: not NULL, `n_logit_bias` entries (the caller's contract).
        for (i, b) in unsafe { std::slice::from_raw_parts(s.logit_bias, s.n_logit_bias) }
            .iter()
            .enumerate()
        {
            let id = u32::try_from(b.token)
                .map_err(|_| format!("logit_bias[{i}].token {} is negative", b.token))?;
            logit_bias.push((id, b.bias));
        }
    }
    validate_logit_bias(&logit_bias, vocab)?;
    if s.n_stop > MAX_STOP_STRINGS {
        return Err(format!(
            "{} stop strings: at most {MAX_STOP_STRINGS}",
            s.n_stop
        ));
    }
    let mut stop = Vec::with_capacity(s.n_stop);
    if s.n_stop > 0 {
        if s.stop.is_null() {
            return Err("stop is NULL".into());
        }
        // SAFETY: not NULL, `n_stop` string pointers (the caller's contract).
        for (i, &p) in unsafe { std::slice::from_raw_parts(s.stop, s.n_stop) }
            .iter()
            .enumerate()
        {
            // SAFETY: NULL or NUL-terminated (the caller's contract).
            stop.push(unsafe { str_arg(p, &format!("stop[{i}]")) }?.to_string());
        }
    }
    Ok(GenerateParams {
        max_tokens,
        sampling,
        logit_bias,
        stop,
    })
}

/// Feeds the queued prompt and generates up to `max_tokens` tokens, calling
/// `callback` (may be NULL) for each on this thread; a non-zero return stops.
/// `sampling` may be NULL (`tah_sampling_init`'s defaults). With nothing
/// queued, generation continues after the last token in the session.
///
/// Returns the number of tokens delivered to the callback. The
/// end-of-generation token is not delivered: it ends generation, and
/// `tah_stats.stop_reason` says why generation ended (`generated_tokens`
/// counts it). One exception: with stop strings set, text held back as the
/// possible start of a stop string is released when the end token comes, in
/// one last callback with the end token's id and that text. Returns `TAH_CANCELLED` when `tah_session_cancel` stopped it
/// (the number delivered is then `tah_stats.delivered_tokens`), -1 on error.
///
/// # Safety
/// `session` is NULL or a live session handle; `sampling` is NULL or points to
/// a `tah_sampling` of `struct_size` readable bytes; `callback`, when given,
/// is safe to call with `user_data`.
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
        let generate = |s: &mut ApiSession| {
            let vocab = s.model().model.cfg.vocab;
            // SAFETY: the caller's contract above.
            let gp = unsafe { generate_params(sampling, max, vocab) }?;
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
            let n = s.generate(&gp, &mut on_token)?;
            if s.stats().stop == Some(StopReason::Cancelled) {
                return Ok(TAH_CANCELLED);
            }
            i32::try_from(n).map_err(|_| "too many tokens".to_string())
        };
        // SAFETY: the caller's contract above.
        unsafe { with_session(session, generate) }
    })
}

/// Fills `*out` with the statistics of the session's last generation; set
/// `out->struct_size = sizeof *out` first (the library writes only what that
/// covers). After `tah_session_reset` they are zero (stop_reason
/// `TAH_STOP_NONE`) but for n_past, n_ctx and the KV bytes, which are current.
/// Fails with "in use" while the session generates on another thread
/// (it never waits). 0 or -1.
///
/// # Safety
/// `session` is NULL or a live session handle; `out` is NULL or points to a
/// `tah_stats` of `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_session_stats(
    session: *const tah_session,
    out: *mut tah_stats,
) -> i32 {
    guard(-1, || {
        if out.is_null() {
            return Err("stats output is NULL".into());
        }
        // SAFETY: not NULL; its first member is readable (the caller's contract).
        let size = unsafe { out.cast::<usize>().read_unaligned() };
        check_size::<tah_stats>(size)?;
        // SAFETY: the caller's contract above.
        let st = unsafe { with_session(session, |s| Ok(s.stats())) }?;
        let st = tah_stats {
            struct_size: size,
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
            delivered_tokens: st.delivered_tokens as u64,
            stop_reason: match st.stop {
                None => TAH_STOP_NONE,
                Some(StopReason::Eog) => TAH_STOP_EOG,
                Some(StopReason::MaxTokens) => TAH_STOP_MAX_TOKENS,
                Some(StopReason::ContextFull) => TAH_STOP_CONTEXT_FULL,
                Some(StopReason::Stopped) => TAH_STOP_CALLBACK,
                Some(StopReason::StopString) => TAH_STOP_STRING,
                Some(StopReason::Cancelled) => TAH_STOP_CANCELLED,
            },
        };
        // SAFETY: `size` writable bytes (the caller's contract).
        unsafe { write_sized(out, size, st) }?;
        Ok(0)
    })
}

// ---------------------------------------------------------------------------------
// Saved sessions.

/// The session's complete state (tokens, both cache depths, per-token depths,
/// sampler state; versioned, with the model's fingerprint) into `out` (room
/// for `capacity` bytes). Returns its size in bytes; when that is more than
/// `capacity` nothing is written (`out` may be NULL when `capacity` is 0).
/// Each call serializes the state: pass a buffer large enough at once (e.g.
/// from an earlier call) to avoid doing it twice. -1 on error.
///
/// # Safety
/// `session` is NULL or a live session handle; `out` is NULL or has room for
/// `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_session_save(
    session: *const tah_session,
    out: *mut u8,
    capacity: usize,
) -> i64 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let state = unsafe { with_session(session, |s| s.save_state()) }?;
        // SAFETY: the caller's contract above.
        unsafe { out_bytes(&state, out, capacity, false) }
    })
}

/// Replaces the session's state with `len` bytes from `tah_session_save` (of
/// a session of the same model file and KV type; anything else is an error
/// and leaves the session as it was). 0 or -1.
///
/// # Safety
/// `session` is NULL or a live session handle; `data` is NULL or points to
/// `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn tah_session_restore(
    session: *mut tah_session,
    data: *const u8,
    len: usize,
) -> i32 {
    guard(-1, || {
        if data.is_null() {
            return Err("data is NULL".into());
        }
        // SAFETY: not NULL, `len` readable bytes (the caller's contract).
        let bytes = unsafe { std::slice::from_raw_parts(data, len) };
        // SAFETY: the caller's contract above.
        unsafe { with_session(session, |s| s.restore_state(bytes)) }?;
        Ok(0)
    })
}

/// `tah_session_save` to the file `path` (written whole or not at all). 0 or -1.
///
/// # Safety
/// `session` is NULL or a live session handle; `path` is NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tah_session_save_file(
    session: *const tah_session,
    path: *const c_char,
) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: the caller's contract above.
        unsafe { with_session(session, |s| s.save_file(std::path::Path::new(path))) }?;
        Ok(0)
    })
}

/// `tah_session_restore` from the file `path`. 0 or -1.
///
/// # Safety
/// `session` is NULL or a live session handle; `path` is NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tah_session_load_file(
    session: *mut tah_session,
    path: *const c_char,
) -> i32 {
    guard(-1, || {
        // SAFETY: the caller's contract above.
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: the caller's contract above.
        unsafe { with_session(session, |s| s.load_file(std::path::Path::new(path))) }?;
        Ok(0)
    })
}
