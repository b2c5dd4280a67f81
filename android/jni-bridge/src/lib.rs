//! JNI bridge: the native methods of `ai.tah.Tah` (android/java/ai/tah/Tah.java)
//! over tah's app-facing API (`tah::api`, the same layer the C ABI wraps).
//!
//! Handles are `jlong`s: a model is a `Box<Arc<ApiModel>>`, a session a
//! `Box<Mutex<ApiSession>>` (which holds its own `Arc` of the model, so the
//! model may be closed first). The Java class synchronizes each handle and zeroes
//! it on close; the bridge still refuses a session that is busy (for example a
//! call from inside its own token listener) instead of racing. Errors and caught
//! panics become `ai.tah.TahException`; a Java exception thrown by the listener
//! stops generation and propagates.
#![allow(clippy::missing_safety_doc)]

use jni::objects::{JClass, JIntArray, JObject, JObjectArray, JString, JValue};
use jni::sys::{jboolean, jdoubleArray, jfloat, jint, jintArray, jlong, jstring, JNI_TRUE};
use jni::JNIEnv;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, TryLockError};
use tah::api::{ApiModel, ApiSession, GenerateParams, ModelParams, Piece, SessionParams};
use tah::generate::StopReason;
use tah::model::kv_cache::KvType;
use tah::sample::SamplingParams;
use tah::tah::ThinkMode;
use tah::text::ChatMessage;

type Res<T> = Result<T, String>;

const EXCEPTION: &str = "ai/tah/TahException";

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

fn ids(env: &mut JNIEnv, a: &JIntArray) -> Res<Vec<u32>> {
    if a.is_null() {
        return Err("token ids are null".into());
    }
    let n = env.get_array_length(a).map_err(jerr)? as usize;
    let mut buf = vec![0i32; n];
    env.get_int_array_region(a, 0, &mut buf).map_err(jerr)?;
    buf.iter()
        .map(|&t| u32::try_from(t).map_err(|_| format!("negative token id {t}")))
        .collect()
}

unsafe fn model<'a>(h: jlong) -> Res<&'a Arc<ApiModel>> {
    (h as *const Arc<ApiModel>)
        .as_ref()
        .ok_or_else(|| "the model is closed".to_string())
}

unsafe fn with_session<R>(h: jlong, f: impl FnOnce(&mut ApiSession) -> Res<R>) -> Res<R> {
    let s = (h as *const Mutex<ApiSession>)
        .as_ref()
        .ok_or("the session is closed")?;
    let mut g = match s.try_lock() {
        Ok(g) => g,
        Err(TryLockError::WouldBlock) => return Err("the session is busy".into()),
        Err(TryLockError::Poisoned(p)) => {
            // Its last call panicked: start it over.
            s.clear_poison();
            let mut g = p.into_inner();
            g.reset();
            g
        }
    };
    f(&mut g)
}

fn nonneg(v: jint, what: &str) -> Res<usize> {
    usize::try_from(v).map_err(|_| format!("{what} {v} is negative"))
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
    kv_f32: jboolean,
) -> jlong {
    run(&mut env, 0, |env| {
        let path = string(env, &path, "path")?;
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
        let params = ModelParams {
            threads: nonneg(threads, "thread count")?,
            ctx: nonneg(ctx, "context length")?,
            think,
            threshold,
            max_depth: (max_depth != 0).then_some(max_depth),
            kv_type: if kv_f32 == JNI_TRUE {
                KvType::F32
            } else {
                KvType::F16
            },
        };
        let m = ApiModel::load(&path, params)?;
        Ok(Box::into_raw(Box::new(m)) as jlong)
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeFreeModel<'l>(
    _env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) {
    if h != 0 {
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

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeTokenize<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    text: JString<'l>,
    add_special: jboolean,
) -> jintArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        let m = model(h)?;
        let text = string(env, &text, "text")?;
        let v: Vec<i32> = m
            .tokenize(&text, add_special == JNI_TRUE, true)?
            .into_iter()
            .map(|t| t as i32)
            .collect();
        let a = env.new_int_array(v.len() as jint).map_err(jerr)?;
        env.set_int_array_region(&a, 0, &v).map_err(jerr)?;
        Ok(a.into_raw())
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

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeNewSession<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
    ctx: jint,
    batch: jint,
) -> jlong {
    run(&mut env, 0, |_| {
        let m = model(h)?;
        let p = SessionParams {
            ctx: nonneg(ctx, "context length")?,
            batch: nonneg(batch, "batch size")?,
            ..SessionParams::default()
        };
        let s = ApiSession::new(Arc::clone(m), &p)?;
        Ok(Box::into_raw(Box::new(Mutex::new(s))) as jlong)
    })
}

#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeFreeSession<'l>(
    _env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) {
    if h != 0 {
        let _ = catch_unwind(|| drop(Box::from_raw(h as *mut Mutex<ApiSession>)));
    }
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
) -> jint {
    run(&mut env, -1, |env| {
        let text = string(env, &text, "text")?;
        with_session(h, |s| {
            Ok(s.prompt_text(&text, add_special == JNI_TRUE, true)? as jint)
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
        let mut msgs = Vec::with_capacity(n as usize);
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
    listener: JObject<'l>,
) -> jint {
    run(&mut env, -1, |env| {
        let sampling = SamplingParams {
            temperature,
            top_k: nonneg(top_k, "top_k")?,
            top_p,
            min_p,
            seed: seed as u64,
            ..SamplingParams::default()
        };
        let max = nonneg(max_tokens, "max_tokens")?;
        with_session(h, |s| {
            let mut on_token = |p: &Piece| -> bool {
                if listener.is_null() {
                    return true;
                }
                // Called on this (the JVM's) thread: the bridge hands tokens
                // back from the worker pool.
                let Ok(piece) = env.new_string(p.text) else {
                    return false;
                };
                let r = env.call_method(
                    &listener,
                    "onToken",
                    "(Ljava/lang/String;II)Z",
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
            let gp = GenerateParams {
                max_tokens: max,
                sampling,
                ..GenerateParams::default()
            };
            let n = s.generate(&gp, &mut on_token)?;
            Ok(n as jint)
        })
    })
}

/// [prompt, prompt hard, generated, hard, hard rate, avg depth, prefill tok/s,
/// decode tok/s, KV bytes depth 1, KV bytes depth 2, n_past, n_ctx, stop reason
/// (0 none, 1 eog, 2 max tokens, 3 context full, 4 listener)].
#[no_mangle]
pub unsafe extern "system" fn Java_ai_tah_Tah_nativeStats<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    h: jlong,
) -> jdoubleArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        let st = with_session(h, |s| Ok(s.stats()))?;
        let stop = match st.stop {
            None => 0,
            Some(StopReason::Eog) => 1,
            Some(StopReason::MaxTokens) => 2,
            Some(StopReason::ContextFull) => 3,
            Some(StopReason::Stopped | StopReason::StopString | StopReason::Cancelled) => 4,
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
