//! JNI bridge: the native methods of `ai.tah.Tah` (android/java/ai/tah/Tah.java)
//! over tah's app-facing API (`tah::api`, the same layer the C ABI wraps).
//!
//! Handles are `jlong`s: a model is a `Box<Arc<ApiModel>>`, a session a
//! `Box<SessionHandle>` (whose `ApiSession` holds its own `Arc` of the model, so
//! the model may be closed first). Beside the session's `Mutex` the handle keeps
//! a clone of its cancel flag (so `cancel()` never waits for the lock) and a
//! snapshot of its statistics (so `stats()` never waits either). The Java class
//! serializes the calls that take the lock and frees a handle only once no call
//! uses it; the bridge still refuses a session that is busy (a call from inside
//! its own token listener) instead of racing. Errors and caught panics become
//! `ai.tah.TahException`; a Java exception thrown by the listener stops
//! generation and propagates.
//!
//! Every class, method and field the bridge looks up by name is in one of the
//! constants below, and `android/consumer-rules.pro` keeps each one from R8
//! (`android/check.sh` checks that).
#![allow(clippy::missing_safety_doc)]

use jni::objects::{
    JByteArray, JClass, JFloatArray, JIntArray, JObject, JObjectArray, JString, JValue,
};
use jni::sys::{
    jboolean, jbyteArray, jdoubleArray, jfloat, jint, jintArray, jlong, jstring, JNI_TRUE,
};
use jni::JNIEnv;
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use tah::api::{
    ApiModel, ApiSession, EmbedStats, GenerateParams, ModelParams, Piece, SessionParams,
};
use tah::generate::{StopReason, MAX_STOP_STRINGS};
use tah::log::Level;
use tah::model::kv_cache::KvType;
use tah::sample::{SamplingParams, MAX_LOGIT_BIAS};
use tah::session::CancelFlag;
use tah::tah::ThinkMode;
use tah::text::ChatMessage;

type Res<T> = Result<T, String>;

// Names looked up through JNI (kept by android/consumer-rules.pro).
const EXCEPTION: &str = "ai/tah/TahException";
const ON_TOKEN: &str = "onToken";
const ON_TOKEN_SIG: &str = "(Ljava/lang/String;II)Z";
const LOG: &str = "log";
const LOG_SIG: &str = "(ILjava/lang/String;)V";
/// The int field of `java.io.FileDescriptor`: `descriptor` in Android's libcore,
/// `fd` in OpenJDK (platform classes: R8 never renames them).
const FD_FIELDS: [&str; 2] = ["descriptor", "fd"];

/// Runs `f`; an error or a panic becomes a `TahException` (unless a Java
/// exception is already pending) and `fail` is returned.
fn run<'l, R>(env: &mut JNIEnv<'l>, fail: R, f: impl FnOnce(&mut JNIEnv<'l>) -> Res<R>) -> R {
    let msg = match catch_unwind(AssertUnwindSafe(|| f(env))) {
        Ok(Ok(r)) => return r,
        Ok(Err(e)) => e,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            format!("internal error: {what}")
        }
    };
    if !env.exception_check().unwrap_or(false) {
        let _ = env.throw_new(EXCEPTION, msg);
    }
    fail
}

fn jerr(e: jni::errors::Error) -> String {
    format!("JNI: {e}")
}

fn string(env: &mut JNIEnv, s: &JString, what: &str) -> Res<String> {
    if s.is_null() {
        return Err(format!("{what} is null"));
    }
    Ok(env.get_string(s).map_err(jerr)?.into())
}

/// A zeroed buffer of `n` elements, or an error instead of an abort on OOM.
fn buffer<T: Default + Clone>(n: usize, what: &str) -> Res<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| format!("out of memory for {n} {what}"))?;
    v.resize(n, T::default());
    Ok(v)
}

fn ids(env: &mut JNIEnv, a: &JIntArray) -> Res<Vec<u32>> {
    if a.is_null() {
        return Err("token ids are null".into());
    }
    let n = env.get_array_length(a).map_err(jerr)? as usize;
    let mut buf = buffer::<i32>(n, "token ids")?;
    env.get_int_array_region(a, 0, &mut buf).map_err(jerr)?;
    buf.iter()
        .map(|&t| u32::try_from(t).map_err(|_| format!("negative token id {t}")))
        .collect()
}

fn int_array(env: &mut JNIEnv, v: &[u32]) -> Res<jintArray> {
    let n = jint::try_from(v.len()).map_err(|_| format!("{} ids: too many", v.len()))?;
    let a = env.new_int_array(n).map_err(jerr)?;
    let mut buf = buffer::<i32>(v.len(), "token ids")?;
    for (d, &s) in buf.iter_mut().zip(v) {
        // Ids are below the vocabulary size, which fits an i32.
        *d = s as i32;
    }
    env.set_int_array_region(&a, 0, &buf).map_err(jerr)?;
    Ok(a.into_raw())
}

unsafe fn model<'a>(h: jlong) -> Res<&'a Arc<ApiModel>> {
    // SAFETY: a non-zero handle is a live `Box<Arc<ApiModel>>` from nativeLoad;
    // Tah.java frees it only when no call is using it.
    (h as *const Arc<ApiModel>)
        .as_ref()
        .ok_or_else(|| "the model is closed".to_string())
}

/// A session as Java holds it.
struct SessionHandle {
    session: Mutex<ApiSession>,
    /// A clone of the session's flag: cancelling does not take the lock.
    cancel: CancelFlag,
    /// The statistics as of the end of the last call (what `stats()` returns
    /// without waiting for a running generation).
    stats: Mutex<EmbedStats>,
}

unsafe fn session<'a>(h: jlong) -> Res<&'a SessionHandle> {
    // SAFETY: a non-zero handle is a live `Box<SessionHandle>` from
    // nativeNewSession; Tah.java frees it only when no call is using it.
    (h as *const SessionHandle)
        .as_ref()
        .ok_or_else(|| "the session is closed".to_string())
}

fn snapshot(m: &Mutex<EmbedStats>) -> MutexGuard<'_, EmbedStats> {
    // Poisoned only if a clone panicked: the value itself is whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on the session (refused while another call holds it) and then
/// refreshes the statistics snapshot.
unsafe fn with_session<R>(h: jlong, f: impl FnOnce(&mut ApiSession) -> Res<R>) -> Res<R> {
    let sh = session(h)?;
    let mut g = match sh.session.try_lock() {
        Ok(g) => g,
        Err(TryLockError::WouldBlock) => return Err("the session is busy".into()),
        Err(TryLockError::Poisoned(p)) => {
            // Its last call panicked: start it over.
            sh.session.clear_poison();
            let mut g = p.into_inner();
            g.reset();
            g
        }
    };
    let r = f(&mut g);
    *snapshot(&sh.stats) = g.stats();
    r
}

fn nonneg(v: jint, what: &str) -> Res<usize> {
    usize::try_from(v).map_err(|_| format!("{what} {v} is negative"))
}

fn nonneg64(v: jlong, what: &str) -> Res<u64> {
    u64::try_from(v).map_err(|_| format!("{what} {v} is negative"))
}

/// The KV cache type by name; null = f16.
fn kv_type(env: &mut JNIEnv, s: &JString) -> Res<KvType> {
    if s.is_null() {
        return Ok(KvType::F16);
    }
    let name = string(env, s, "KV type")?;
    match name.as_str() {
        "f16" => Ok(KvType::F16),
        "f32" => Ok(KvType::F32),
        "q8_0" => Ok(KvType::Q8_0),
        _ => Err(format!("unknown KV type '{name}' (f16, f32, q8_0)")),
    }
}

#[allow(clippy::too_many_arguments)]
fn model_params(
    env: &mut JNIEnv,
    threads: jint,
    ctx: jint,
    think: jint,
    threshold: jfloat,
    max_depth: jint,
    kv: &JString,
) -> Res<ModelParams> {
    let think = match think {
        0 => ThinkMode::Auto,
        1 => ThinkMode::Never,
        2 => ThinkMode::Always,
        m => return Err(format!("unknown think mode {m}")),
    };
    let threshold = if threshold.is_nan() {
        None
    } else if (0.0..=1.0).contains(&threshold) {
        Some(threshold)
    } else {
        return Err(format!("threshold {threshold} is outside [0, 1]"));
    };
    let max_depth = nonneg(max_depth, "max depth")?;
    Ok(ModelParams {
        threads: nonneg(threads, "thread count")?,
        ctx: nonneg(ctx, "context length")?,
        think,
        threshold,
        max_depth: (max_depth != 0).then_some(max_depth),
        kv_type: kv_type(env, kv)?,
    })
}

#[no_mangle]
pub extern "system" fn Java_ai_tah_Tah_nativeVersion<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
) -> jstring {
    run(&mut env, std::ptr::null_mut(), |env| {
        Ok(env
            .new_string(env!("CARGO_PKG_VERSION"))
            .map_err(jerr)?
            .into_raw())
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_ai_tah_Tah_nativeLoad<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    path: JString<'l>,
    threads: jint,
    ctx: jint,
    think: jint,
    threshold: jfloat,
    max_depth: jint,
    kv: JString<'l>,
) -> jlong {
    run(&mut env, 0, |env| {
        let path = string(env, &path, "path")?;
        let params = model_params(env, threads, ctx, think, threshold, max_depth, &kv)?;
        let m = ApiModel::load(&path, params)?;
        Ok(Box::into_raw(Box::new(m)) as jlong)
    })
}

/// Loads `length` bytes at `offset` of an open descriptor, which stays the
/// caller's: the model keeps a duplicate.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_ai_tah_Tah_nativeLoadFd<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    fd: jint,
    offset: jlong,
    length: jlong,
    threads: jint,
    ctx: jint,
    think: jint,
    threshold: jfloat,
    max_depth: jint,
    kv: JString<'l>,
) -> jlong {
    run(&mut env, 0, |env| {
        if fd < 0 {
            return Err(format!("file descriptor {fd} is not open"));
        }
        let offset = nonneg64(offset, "offset")?;
        let length = nonneg64(length, "length")?;
        let params = model_params(env, threads, ctx, think, threshold, max_depth, &kv)?;
        // SAFETY: fd is not -1; it is only borrowed to duplicate it here, while
        // the caller (who owns it) is blocked in this call.
        let dup = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| format!("file descriptor {fd}: {e}"))?;
        let m = ApiModel::load_file_range(File::from(dup), offset, length, params)?;
        Ok(Box::into_raw(Box::new(m)) as jlong)
    })
}

/// The int a `java.io.FileDescriptor` wraps (-1 when closed).
#[no_mangle]
pub extern "system" fn Java_ai_tah_Tah_nativeFdOf<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    fd: JObject<'l>,
) -> jint {
    run(&mut env, -1, |env| {
        if fd.is_null() {
            return Err("file descriptor is null".into());
        }
        for name in FD_FIELDS {
            match env.get_field(&fd, name, "I") {
                Ok(v) => return v.i().map_err(jerr),
                // NoSuchFieldError: the other runtime's name.
                Err(_) => env.exception_clear().map_err(jerr)?,
            }
        }
        Err("java.io.FileDescriptor has no int field 'descriptor' or 'fd'".into())
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeFreeModel<'l>(
    _env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) {
    if h != 0 {
        // SAFETY: the handle came from Box::into_raw and Java frees it once.
        let _ = catch_unwind(|| drop(Box::from_raw(h as *mut Arc<ApiModel>)));
    }
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeVocabSize<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) -> jint {
    run(&mut env, -1, |_| Ok(model(h)?.model.cfg.vocab as jint))
}

/// 0: BOS, 1: EOS; -1 when the model has none (or no tokenizer).
#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeSpecialId<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    which: jint,
) -> jint {
    run(&mut env, -1, |_| {
        let Some(t) = model(h)?.model.tokenizer.as_ref() else {
            return Ok(-1);
        };
        let id = match which {
            0 => t.bos_id(),
            1 => t.eos_id(),
            w => return Err(format!("unknown special token {w}")),
        };
        Ok(id.map_or(-1, |i| i as jint))
    })
}

/// Every id that ends generation (empty without a tokenizer).
#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeEogIds<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) -> jintArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        let m = model(h)?;
        let eog = m.model.tokenizer.as_ref().map_or(&[][..], |t| t.eog_ids());
        int_array(env, eog)
    })
}

/// The vocabulary entry of `id` as the tokenizer stores it.
#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeTokenText<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    id: jint,
) -> jstring {
    run(&mut env, std::ptr::null_mut(), |env| {
        let m = model(h)?;
        let t = m.tokenizer()?;
        let text = u32::try_from(id)
            .ok()
            .and_then(|i| t.token_text(i))
            .ok_or_else(|| {
                format!(
                    "token id {id} is outside the vocabulary (size {})",
                    t.vocab_size()
                )
            })?;
        Ok(env.new_string(text).map_err(jerr)?.into_raw())
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeTokenize<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    text: JString<'l>,
    add_special: jboolean,
    parse_special: jboolean,
) -> jintArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        let m = model(h)?;
        let text = string(env, &text, "text")?;
        let v = m.tokenize(&text, add_special == JNI_TRUE, parse_special == JNI_TRUE)?;
        int_array(env, &v)
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeDetokenize<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    a: JIntArray<'l>,
) -> jstring {
    run(&mut env, std::ptr::null_mut(), |env| {
        let m = model(h)?;
        let text = m.detokenize(&ids(env, &a)?)?;
        Ok(env.new_string(text).map_err(jerr)?.into_raw())
    })
}

/// `keep_tokens` < 0: the system prompt's.
#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeNewSession<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    ctx: jint,
    batch: jint,
    context_shift: jboolean,
    keep_tokens: jint,
) -> jlong {
    run(&mut env, 0, |_| {
        let m = model(h)?;
        let p = SessionParams {
            ctx: nonneg(ctx, "context length")?,
            batch: nonneg(batch, "batch size")?,
            context_shift: context_shift == JNI_TRUE,
            keep_tokens: usize::try_from(keep_tokens).ok(),
        };
        let s = ApiSession::new(Arc::clone(m), &p)?;
        let h = SessionHandle {
            cancel: s.cancel_flag(),
            stats: Mutex::new(s.stats()),
            session: Mutex::new(s),
        };
        Ok(Box::into_raw(Box::new(h)) as jlong)
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeFreeSession<'l>(
    _env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) {
    if h != 0 {
        // SAFETY: the handle came from Box::into_raw and Java frees it once,
        // after every call using it has returned.
        let _ = catch_unwind(|| drop(Box::from_raw(h as *mut SessionHandle)));
    }
}

/// Cancels the running generation: never waits for the session's lock.
#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeCancel<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) {
    run(&mut env, (), |_| {
        session(h)?.cancel.cancel();
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeReset<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) {
    run(&mut env, (), |_| {
        with_session(h, |s| {
            s.reset();
            Ok(())
        })
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativePrompt<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    text: JString<'l>,
    add_special: jboolean,
    parse_special: jboolean,
) -> jint {
    run(&mut env, -1, |env| {
        let text = string(env, &text, "text")?;
        with_session(h, |s| {
            let n = s.prompt_text(&text, add_special == JNI_TRUE, parse_special == JNI_TRUE)?;
            Ok(n as jint)
        })
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativePromptTokens<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    a: JIntArray<'l>,
) {
    run(&mut env, (), |env| {
        let v = ids(env, &a)?;
        with_session(h, |s| s.prompt_tokens(&v))
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeChat<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    roles: JObjectArray<'l>,
    contents: JObjectArray<'l>,
    add_generation_prompt: jboolean,
    enable_thinking: jint,
) -> jint {
    run(&mut env, -1, |env| {
        if roles.is_null() || contents.is_null() {
            return Err("messages are null".into());
        }
        let n = env.get_array_length(&roles).map_err(jerr)?;
        if env.get_array_length(&contents).map_err(jerr)? != n {
            return Err("roles and contents differ in length".into());
        }
        let mut msgs = Vec::new();
        msgs.try_reserve_exact(n as usize)
            .map_err(|_| format!("out of memory for {n} messages"))?;
        for i in 0..n {
            let r = JString::from(env.get_object_array_element(&roles, i).map_err(jerr)?);
            let c = JString::from(env.get_object_array_element(&contents, i).map_err(jerr)?);
            let role = string(env, &r, "role")?;
            let content = string(env, &c, "content")?;
            env.delete_local_ref(r).map_err(jerr)?;
            env.delete_local_ref(c).map_err(jerr)?;
            msgs.push(ChatMessage::new(role, content));
        }
        let thinking = match enable_thinking {
            -1 => None,
            0 => Some(false),
            1 => Some(true),
            v => return Err(format!("enable_thinking {v} is not -1, 0 or 1")),
        };
        with_session(h, |s| {
            Ok(s.chat(&msgs, add_generation_prompt == JNI_TRUE, thinking)? as jint)
        })
    })
}

/// `(id, bias)` pairs from two parallel arrays (both null = none).
fn logit_bias(env: &mut JNIEnv, ids: &JIntArray, biases: &JFloatArray) -> Res<Vec<(u32, f32)>> {
    if ids.is_null() && biases.is_null() {
        return Ok(Vec::new());
    }
    if ids.is_null() || biases.is_null() {
        return Err("logit bias: ids and biases must both be given".into());
    }
    let n = env.get_array_length(ids).map_err(jerr)? as usize;
    if env.get_array_length(biases).map_err(jerr)? as usize != n {
        return Err("logit bias: ids and biases differ in length".into());
    }
    if n > MAX_LOGIT_BIAS {
        return Err(format!("{n} logit-bias entries: at most {MAX_LOGIT_BIAS}"));
    }
    let mut id = buffer::<i32>(n, "logit-bias ids")?;
    let mut b = buffer::<f32>(n, "logit biases")?;
    env.get_int_array_region(ids, 0, &mut id).map_err(jerr)?;
    env.get_float_array_region(biases, 0, &mut b)
        .map_err(jerr)?;
    id.iter()
        .zip(&b)
        .map(|(&i, &v)| {
            let i =
                u32::try_from(i).map_err(|_| format!("logit bias for negative token id {i}"))?;
            Ok((i, v))
        })
        .collect()
}

fn stop_strings(env: &mut JNIEnv, a: &JObjectArray) -> Res<Vec<String>> {
    if a.is_null() {
        return Ok(Vec::new());
    }
    let n = env.get_array_length(a).map_err(jerr)?;
    if n as usize > MAX_STOP_STRINGS {
        return Err(format!("{n} stop strings: at most {MAX_STOP_STRINGS}"));
    }
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n {
        let s = JString::from(env.get_object_array_element(a, i).map_err(jerr)?);
        v.push(string(env, &s, "a stop string")?);
        env.delete_local_ref(s).map_err(jerr)?;
    }
    Ok(v)
}

/// Returns the number of tokens given to the listener (the end-of-generation
/// token is not one: `stats()` reports it as the stop reason).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeGenerate<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    max_tokens: jint,
    temperature: jfloat,
    top_k: jint,
    top_p: jfloat,
    min_p: jfloat,
    seed: jlong,
    repeat_penalty: jfloat,
    repeat_last_n: jint,
    presence_penalty: jfloat,
    frequency_penalty: jfloat,
    bias_ids: JIntArray<'l>,
    bias_values: JFloatArray<'l>,
    stop: JObjectArray<'l>,
    listener: JObject<'l>,
) -> jint {
    run(&mut env, -1, |env| {
        let params = GenerateParams {
            max_tokens: nonneg(max_tokens, "max_tokens")?,
            sampling: SamplingParams {
                temperature,
                top_k: nonneg(top_k, "top_k")?,
                top_p,
                min_p,
                seed: seed as u64,
                repeat_penalty,
                repeat_last_n: nonneg(repeat_last_n, "repeat_last_n")?,
                presence_penalty,
                frequency_penalty,
            },
            logit_bias: logit_bias(env, &bias_ids, &bias_values)?,
            stop: stop_strings(env, &stop)?,
        };
        with_session(h, |s| {
            let mut delivered: jint = 0;
            let mut on_token = |p: &Piece| -> bool {
                delivered += 1;
                if listener.is_null() {
                    return true;
                }
                // Called on this (the JVM's) thread: the API hands tokens back
                // from the worker pool.
                let Ok(piece) = env.new_string(p.text) else {
                    return false;
                };
                let r = env.call_method(
                    &listener,
                    ON_TOKEN,
                    ON_TOKEN_SIG,
                    &[
                        JValue::Object(&piece),
                        JValue::Int(p.id as jint),
                        JValue::Int(p.depth as jint),
                    ],
                );
                let _ = env.delete_local_ref(piece);
                // A Java exception stops generation and stays pending.
                matches!(r.and_then(|v| v.z()), Ok(true))
            };
            s.generate(&params, &mut on_token)?;
            Ok(delivered)
        })
    })
}

/// [prompt, prompt hard, generated, hard, hard rate, avg depth, prefill tok/s,
/// decode tok/s, KV bytes depth 1, KV bytes depth 2, n_past, n_ctx, stop reason
/// (Tah.STOP_*: 0 none, 1 eog, 2 max tokens, 3 context full, 4 listener,
/// 5 stop string, 6 cancelled)]: the snapshot, which never waits for a
/// running generation (it then describes the session before that call).
#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeStats<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) -> jdoubleArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        let st = snapshot(&session(h)?.stats).clone();
        let stop = match st.stop {
            None => 0,
            Some(StopReason::Eog) => 1,
            Some(StopReason::MaxTokens) => 2,
            Some(StopReason::ContextFull) => 3,
            Some(StopReason::Stopped) => 4,
            Some(StopReason::StopString) => 5,
            Some(StopReason::Cancelled) => 6,
        };
        let v = [
            st.prompt_tokens as f64,
            st.prompt_hard_tokens as f64,
            st.generated_tokens as f64,
            st.hard_tokens as f64,
            st.hard_rate,
            st.avg_depth,
            st.prefill_tokens_per_s,
            st.decode_tokens_per_s,
            st.kv_bytes[0] as f64,
            st.kv_bytes[1] as f64,
            st.n_past as f64,
            st.ctx as f64,
            stop as f64,
        ];
        let a = env.new_double_array(v.len() as jint).map_err(jerr)?;
        env.set_double_array_region(&a, 0, &v).map_err(jerr)?;
        Ok(a.into_raw())
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeSaveState<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) -> jbyteArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        let bytes = with_session(h, |s| s.save_state())?;
        if i32::try_from(bytes.len()).is_err() {
            return Err(format!(
                "the state ({} bytes) is too large for a Java array: save it to a file",
                bytes.len()
            ));
        }
        Ok(env.byte_array_from_slice(&bytes).map_err(jerr)?.into_raw())
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeRestoreState<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    a: JByteArray<'l>,
) {
    run(&mut env, (), |env| {
        if a.is_null() {
            return Err("state bytes are null".into());
        }
        let n = env.get_array_length(&a).map_err(jerr)? as usize;
        let mut buf = buffer::<i8>(n, "state bytes")?;
        env.get_byte_array_region(&a, 0, &mut buf).map_err(jerr)?;
        let bytes: Vec<u8> = buf.into_iter().map(|b| b as u8).collect();
        with_session(h, |s| s.restore_state(&bytes))
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeSaveFile<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    path: JString<'l>,
) {
    run(&mut env, (), |env| {
        let path = string(env, &path, "path")?;
        with_session(h, |s| s.save_file(path.as_ref()))
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeLoadFile<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    path: JString<'l>,
) {
    run(&mut env, (), |env| {
        let path = string(env, &path, "path")?;
        with_session(h, |s| s.load_file(path.as_ref()))
    })
}

/// Sets (or with null removes) the `ai.tah.Tah.Logger` that receives the
/// library's messages, from whichever thread emits them.
#[no_mangle]
pub extern "system" fn Java_ai_tah_Tah_nativeSetLogger<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    logger: JObject<'l>,
) {
    run(&mut env, (), |env| {
        if logger.is_null() {
            tah::log::set_sink(None);
            return Ok(());
        }
        let vm = env.get_java_vm().map_err(jerr)?;
        let logger = env.new_global_ref(&logger).map_err(jerr)?;
        tah::log::set_sink(Some(Arc::new(move |level: Level, msg: &str| {
            // A JVM thread is used as it is; any other thread is attached for
            // this call and detached when the guard drops.
            let Ok(mut env) = vm.attach_current_thread() else {
                return;
            };
            // No Java call may run while an exception is pending (a listener's,
            // on its way out): the message is dropped.
            if env.exception_check().unwrap_or(true) {
                return;
            }
            let Ok(text) = env.new_string(msg) else {
                let _ = env.exception_clear();
                return;
            };
            let _ = env.call_method(
                logger.as_obj(),
                LOG,
                LOG_SIG,
                &[JValue::Int(level as i32), JValue::Object(&text)],
            );
            // A logger must not throw: its exception is dropped here, not
            // raised in whatever call happened to log.
            if env.exception_check().unwrap_or(false) {
                let _ = env.exception_clear();
            }
            let _ = env.delete_local_ref(text);
        })));
        Ok(())
    })
}

/// Sends `msg` through the library's log sink at INFO, once from this thread
/// and once from a new native thread (one the JVM did not start).
#[no_mangle]
pub extern "system" fn Java_ai_tah_Tah_nativeTestLog<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    msg: JString<'l>,
) {
    run(&mut env, (), |env| {
        let msg = string(env, &msg, "message")?;
        tah::log::emit(Level::Info, &msg);
        let m = msg.clone();
        std::thread::Builder::new()
            .name("tah-log-test".into())
            .spawn(move || tah::log::emit(Level::Info, &m))
            .map_err(|e| format!("cannot start a thread: {e}"))?
            .join()
            .map_err(|_| "the log test thread panicked".to_string())
    })
}
