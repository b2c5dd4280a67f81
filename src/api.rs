//! The app-facing API: what the C ABI ([`crate::ffi`]) and the Android JNI bridge
//! (`android/jni-bridge`) both wrap, in safe Rust.
//!
//! An [`ApiModel`] is a loaded model plus its own thread pool
//! ([`crate::threads::Threads`], not the global one, so an app can run two models with different thread counts); it is
//! immutable and shared through `Arc`. An [`ApiSession`] is one conversation:
//! prompts are queued ([`ApiSession::prompt_text`], [`ApiSession::prompt_tokens`],
//! [`ApiSession::chat`]) and fed by the next [`ApiSession::generate`], which
//! runs the forward passes with the model's pool and calls the per-token
//! callback on the caller's thread (JNI and UI code rely on that).

use crate::generate::{generate, GenerateOptions, StopReason, TokenEvent};
use crate::model::kv_cache::KvType;
use crate::model::Model;
use crate::sample::SamplingParams;
use crate::session::{CancelFlag, Session, SessionOptions};
use crate::tah::{TahOptions, ThinkMode};
use crate::text::{ChatMessage, Tokenizer};
use crate::threads::Threads;
use std::path::Path;
use std::sync::Arc;

/// Errors of the app-facing API are messages for a person (the C ABI hands them
/// out through `tah_last_error`).
pub type Error = String;

/// How a model is loaded and how its sessions think.
#[derive(Clone, Debug)]
pub struct ModelParams {
    /// Worker threads of the model's pool; 0 = one per core.
    pub threads: usize,
    /// Default context length of its sessions; 0 = the model's, capped at 4096.
    pub ctx: usize,
    pub think: ThinkMode,
    /// Decider threshold; `None` = the file's.
    pub threshold: Option<f32>,
    /// Deepest depth; `None` = the file's `max_iter`.
    pub max_depth: Option<usize>,
    pub kv_type: KvType,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            threads: 0,
            ctx: 0,
            think: ThinkMode::Auto,
            threshold: None,
            max_depth: None,
            kv_type: KvType::F16,
        }
    }
}

/// Per-session settings.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Context length; 0 = the model's default ([`ModelParams::ctx`]).
    pub ctx: usize,
    /// Most prompt tokens per forward pass; 0 = 64.
    pub batch: usize,
    /// Context shift: when the conversation reaches the end of the context,
    /// drop the oldest turns after the kept prefix and go on (true), or stop
    /// with "context full" (false).
    pub context_shift: bool,
    /// Tokens kept at the start by a context shift; `None` = the system
    /// prompt's (the first message when its role is `system`).
    pub keep_tokens: Option<usize>,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            ctx: 0,
            batch: 0,
            context_shift: true,
            keep_tokens: None,
        }
    }
}

pub struct ApiModel {
    pub model: Arc<Model>,
    pub params: ModelParams,
    pool: Threads,
}

impl std::fmt::Debug for ApiModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiModel")
            .field("params", &self.params)
            .field("threads", &self.pool)
            .finish()
    }
}

impl ApiModel {
    /// Like [`ApiModel::load`], from `length` bytes at `offset` of an open file
    /// (a model stored uncompressed inside an APK, a SAF descriptor), mapped
    /// without copying; `length` 0 = to the end of the file. The file is only
    /// used during the call (the mapping outlives it). An offset that breaks
    /// the model's tensor alignment is an error
    /// ([`crate::format::GgufFile::open_range`]).
    pub fn load_file_range(
        file: std::fs::File,
        offset: u64,
        length: u64,
        params: ModelParams,
    ) -> Result<Arc<ApiModel>, Error> {
        let name = format!("model at offset {offset} of an open file");
        let f = crate::format::GgufFile::open_range(&file, offset, length, &name)
            .map_err(|e| e.to_string())?;
        drop(file);
        let model = Model::from_file(f).map_err(|e| e.to_string())?;
        Self::start(model, params, &name)
    }

    /// Maps the file, checks the think settings against it and starts the pool.
    pub fn load(path: impl AsRef<Path>, params: ModelParams) -> Result<Arc<ApiModel>, Error> {
        let path = path.as_ref();
        let model = Model::load(path).map_err(|e| e.to_string())?;
        Self::start(model, params, &path.display().to_string())
    }

    /// The rest of loading: the pool, a check of the settings, a few log lines.
    fn start(model: Model, params: ModelParams, name: &str) -> Result<Arc<ApiModel>, Error> {
        let model = Arc::new(model);
        let pool = Threads::new(params.threads)?;
        let m = ApiModel {
            model,
            params,
            pool,
        };
        // A one-token session checks threshold / max depth / think mode against
        // the file (plain models have no depth 2) at load time, not at first use.
        Session::new(Arc::clone(&m.model), &m.session_options(1, 1))
            .map_err(|e| format!("{name}: {e}"))?;
        m.log_loaded(name);
        Ok(Arc::new(m))
    }

    /// Tells the app's log sink what was loaded and how it will run.
    fn log_loaded(&self, name: &str) {
        use crate::log::{emit, Level};
        let c = &self.model.cfg;
        emit(
            Level::Info,
            &format!(
                "loaded {name}: {:?}, {} layers, dim {}, {} heads ({} KV), vocab {}, context {}, {}",
                c.arch,
                c.n_layers,
                c.dim,
                c.n_heads,
                c.n_kv_heads,
                c.vocab,
                c.ctx_len,
                match &c.tah {
                    Some(t) => format!("TaH (max depth {}, threshold {})", t.max_iter, t.threshold),
                    None => "plain model (depth 1 only)".into(),
                }
            ),
        );
        // TAH_KERNELS naming a table this CPU lacks panics at the first product:
        // say so here, where it is clear why.
        let forced = std::env::var("TAH_KERNELS").ok().filter(|n| !n.is_empty());
        match forced {
            Some(n) if crate::kernels::by_name(&n).is_none() => emit(
                Level::Warn,
                &format!("TAH_KERNELS={n}: no such kernel table on this CPU"),
            ),
            _ => emit(
                Level::Info,
                &format!(
                    "kernels {}, {} threads, KV cache {:?}",
                    crate::kernels::kernels().name,
                    self.pool.threads(),
                    self.params.kv_type
                ),
            ),
        }
        if self.model.tokenizer.is_none() {
            emit(
                Level::Warn,
                "the model has no tokenizer: only token-id prompts work",
            );
        } else if self.model.chat_template.is_none() {
            emit(
                Level::Warn,
                "the model has no chat template: chat is unavailable",
            );
        }
    }

    fn session_options(&self, ctx: usize, batch: usize) -> SessionOptions {
        SessionOptions {
            ctx,
            kv_type: self.params.kv_type,
            batch,
            tah: TahOptions {
                mode: self.params.think,
                threshold: self.params.threshold,
                max_depth: self.params.max_depth,
                hard_rate: None,
            },
        }
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer, Error> {
        self.model
            .tokenizer
            .as_ref()
            .ok_or_else(|| "this model has no tokenizer: feed token ids".to_string())
    }

    /// Token ids of `text`. `add_special`: BOS where the model wants one.
    /// `parse_special`: control tokens written in the text (`<|im_end|>`) become
    /// control tokens; without it they are plain text — the safe choice for
    /// anything a user typed.
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, Error> {
        self.tokenizer()?
            .encode_with(text, add_special, parse_special)
            .map_err(|e| e.to_string())
    }

    pub fn detokenize(&self, ids: &[u32]) -> Result<String, Error> {
        self.check_ids(ids)?;
        Ok(self.tokenizer()?.decode(ids))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<(), Error> {
        let vocab = self.model.cfg.vocab;
        match ids.iter().find(|&&t| t as usize >= vocab) {
            Some(id) => Err(format!(
                "token id {id} is outside the vocabulary (size {vocab})"
            )),
            None => Ok(()),
        }
    }
}

/// What the last [`ApiSession::generate`] did.
#[derive(Clone, Debug, Default)]
pub struct EmbedStats {
    pub prompt_tokens: usize,
    pub prompt_hard_tokens: usize,
    pub generated_tokens: usize,
    pub hard_tokens: usize,
    pub hard_rate: f64,
    pub avg_depth: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// KV cache bytes in use now, at depth 1 and depth 2.
    pub kv_bytes: [usize; 2],
    /// Tokens in the session's cache now, and its capacity.
    pub n_past: usize,
    pub ctx: usize,
    /// `None` before the first generation.
    pub stop: Option<StopReason>,
    /// Tokens the last generation handed to the callback (what
    /// [`ApiSession::generate`] returned; the end-of-generation token is not one).
    pub delivered_tokens: usize,
}

/// What one [`ApiSession::generate`] call does.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Most new tokens.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// `(token id, bias)` added to the logits ([`GenerateOptions::logit_bias`]).
    pub logit_bias: Vec<(u32, f32)>,
    /// Stop strings ([`GenerateOptions::stop`]).
    pub stop: Vec<String>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            logit_bias: Vec::new(),
            stop: Vec::new(),
        }
    }
}

/// One generated token, as the app callback sees it.
pub struct Piece<'a> {
    pub id: u32,
    /// The text the token completes (may be empty while a character is split,
    /// and always is for a model without tokenizer).
    pub text: &'a str,
    pub depth: u8,
}

pub struct ApiSession {
    model: Arc<ApiModel>,
    session: Session,
    /// Tokens queued for the next generation.
    pending: Vec<u32>,
    last: EmbedStats,
}

impl ApiSession {
    pub fn new(model: Arc<ApiModel>, p: &SessionParams) -> Result<ApiSession, Error> {
        let ctx = if p.ctx == 0 { model.params.ctx } else { p.ctx };
        let batch = if p.batch == 0 { 64 } else { p.batch };
        let opts = model.session_options(ctx, batch);
        let session = Session::new(Arc::clone(&model.model), &opts).map_err(|e| e.to_string())?;
        Ok(ApiSession {
            model,
            session,
            pending: Vec::new(),
            last: EmbedStats::default(),
        })
    }

    pub fn model(&self) -> &Arc<ApiModel> {
        &self.model
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The flag that cancels this session's running [`ApiSession::generate`]
    /// from any thread (a clone shares it).
    pub fn cancel_flag(&self) -> CancelFlag {
        self.session.cancel_flag()
    }

    /// The session's complete state (tokens, both cache depths, per-token
    /// depths and decider probabilities, sampler state) as bytes, with a
    /// versioned header and the model's fingerprint.
    pub fn save_state(&self) -> Result<Vec<u8>, Error> {
        Err("saving a session is not implemented yet".into())
    }

    /// Restores what [`ApiSession::save_state`] wrote (same model and KV type).
    pub fn restore_state(&mut self, _bytes: &[u8]) -> Result<(), Error> {
        Err("restoring a session is not implemented yet".into())
    }

    /// [`ApiSession::save_state`] to a file (written whole or not at all).
    pub fn save_file(&self, _path: &Path) -> Result<(), Error> {
        Err("saving a session is not implemented yet".into())
    }

    /// [`ApiSession::restore_state`] from a file.
    pub fn load_file(&mut self, _path: &Path) -> Result<(), Error> {
        Err("restoring a session is not implemented yet".into())
    }

    /// Forgets the conversation, anything queued and the last statistics.
    pub fn reset(&mut self) {
        self.session.reset();
        self.pending.clear();
        self.last = EmbedStats::default();
    }

    /// Tokens queued for the next generation (after those in the cache,
    /// [`Session::tokens`]).
    pub fn queued(&self) -> &[u32] {
        &self.pending
    }

    /// Tokens in the cache plus tokens queued.
    pub fn n_tokens(&self) -> usize {
        self.session.n_past() + self.pending.len()
    }

    fn queue(&mut self, ids: &[u32]) -> Result<(), Error> {
        self.model.check_ids(ids)?;
        let ctx = self.session.ctx();
        if self.n_tokens() + ids.len() > ctx {
            return Err(format!(
                "context full: {} of {ctx} tokens used or queued, {} more do not fit",
                self.n_tokens(),
                ids.len()
            ));
        }
        self.pending.extend_from_slice(ids);
        Ok(())
    }

    /// Queues `text` (after what the session holds). With `add_special` the
    /// tokenizer adds BOS where the model wants one; returns the token count.
    pub fn prompt_text(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<usize, Error> {
        let ids = self.model.tokenize(text, add_special, parse_special)?;
        self.queue(&ids)?;
        Ok(ids.len())
    }

    /// Queues token ids (after what the session holds).
    pub fn prompt_tokens(&mut self, ids: &[u32]) -> Result<(), Error> {
        self.queue(ids)
    }

    /// Sets the conversation to `messages`, rendered with the model's chat
    /// template; control tokens come only from the template, never from a
    /// message's content. The cached tokens the rendering shares are kept; the rest is
    /// queued (so a follow-up turn feeds only the new suffix, as `tah chat` does).
    /// `enable_thinking` is passed to the template only when `Some`. Returns the
    /// number of tokens queued.
    pub fn chat(
        &mut self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
    ) -> Result<usize, Error> {
        let tmpl = self
            .model
            .model
            .chat_template
            .as_ref()
            .ok_or("this model has no chat template")?;
        // Message contents never become control tokens: only the template's
        // own markers do (ChatTemplate::encode).
        let ids = tmpl
            .encode(
                self.model.tokenizer()?,
                messages,
                add_generation_prompt,
                enable_thinking,
                true,
            )
            .map_err(|e| e.to_string())?;
        if ids.is_empty() {
            return Err("the conversation renders to no tokens".into());
        }
        if ids.len() > self.session.ctx() {
            return Err(format!(
                "the conversation ({} tokens) does not fit the context ({} tokens)",
                ids.len(),
                self.session.ctx()
            ));
        }
        let keep = self.session.keep_shared_prefix(&ids);
        self.pending.clear();
        self.pending.extend_from_slice(&ids[keep..]);
        Ok(self.pending.len())
    }

    /// Feeds the queued tokens and generates up to `max_tokens`, calling
    /// `on_token` on this thread for each one (false stops). The end-of-generation
    /// token ends generation without a call (it is counted in the statistics'
    /// `generated_tokens`). With nothing queued it continues after the last
    /// token in the cache. Returns the number of tokens handed to `on_token`
    /// (the statistics' `stop` says why it ended: a cancel is `Cancelled`).
    pub fn generate(
        &mut self,
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&Piece) -> bool,
    ) -> Result<usize, Error> {
        // Refuse bad settings before touching the queue or the cache.
        let opts = GenerateOptions {
            max_tokens: params.max_tokens,
            sampling: params.sampling,
            stop_at_eog: true,
            logit_bias: params.logit_bias.clone(),
            stop: params.stop.clone(),
        };
        opts.validate(self.model.model.cfg.vocab)
            .map_err(|e| e.to_string())?;
        if !opts.stop.is_empty() && self.model.model.tokenizer.is_none() {
            return Err("stop strings need the model's tokenizer".into());
        }
        if self.pending.is_empty() {
            // Re-feeding the last token gives its logits again (same forward).
            let Some(&last) = self.session.tokens().last() else {
                return Err("nothing to generate from: queue a prompt first".into());
            };
            self.session.truncate(self.session.n_past() - 1);
            self.pending.push(last);
        }
        let prompt = std::mem::take(&mut self.pending);
        // A cancel counts from here: one that came while nothing ran is void.
        self.session.cancel_flag().clear();
        let model = Arc::clone(&self.model);
        let tokenizer = model.model.tokenizer.as_ref();
        let session = &mut self.session;

        // The forward passes run with the model's pool current (a rayon pool
        // runs them on one of its workers); each token reaches `on_token` on
        // this thread.
        struct Event {
            id: u32,
            piece: String,
            depth: u8,
        }
        let mut delivered = 0usize;
        let result = model.pool.install_with_events(
            |emit: &mut dyn FnMut(Event) -> bool| {
                let mut forward = |e: &TokenEvent| {
                    if tokenizer.is_some_and(|t| t.is_eog(e.id)) {
                        return true; // generate() stops after it
                    }
                    emit(Event {
                        id: e.id,
                        piece: e.piece.to_string(),
                        depth: e.depth,
                    })
                };
                generate(session, tokenizer, &prompt, &opts, None, &mut forward)
            },
            &mut |ev: Event| {
                delivered += 1;
                on_token(&Piece {
                    id: ev.id,
                    text: &ev.piece,
                    depth: ev.depth,
                })
            },
        );
        let g = result.map_err(|e| e.to_string())?;
        let s = &g.stats;
        let kv = self.session.cache.bytes_per_depth();
        self.last = EmbedStats {
            prompt_tokens: s.prompt_tokens,
            prompt_hard_tokens: s.prompt_hard_tokens,
            generated_tokens: s.generated_tokens,
            hard_tokens: s.hard_tokens,
            hard_rate: s.hard_rate,
            avg_depth: s.avg_depth,
            prefill_tokens_per_s: s.prefill_tokens_per_s,
            decode_tokens_per_s: s.decode_tokens_per_s,
            kv_bytes: [
                kv.first().copied().unwrap_or(0),
                kv.get(1).copied().unwrap_or(0),
            ],
            n_past: self.session.n_past(),
            ctx: self.session.ctx(),
            stop: Some(g.stop),
            delivered_tokens: delivered,
        };
        Ok(delivered)
    }

    /// Statistics of the last generation (KV bytes and token counts as of now).
    pub fn stats(&self) -> EmbedStats {
        let kv = self.session.cache.bytes_per_depth();
        EmbedStats {
            kv_bytes: [
                kv.first().copied().unwrap_or(0),
                kv.get(1).copied().unwrap_or(0),
            ],
            n_past: self.session.n_past(),
            ctx: self.session.ctx(),
            ..self.last.clone()
        }
    }
}
