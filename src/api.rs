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
//!
//! Context shift ([`SessionParams::context_shift`], on by default): a chat
//! longer than the context keeps going. [`ChatWindow`] drops the oldest turns
//! after the kept prefix (the system prompt) when the rendered conversation
//! leaves less than a quarter of the context free, shifting the cache so the
//! kept turns are not run again, and remembers what it dropped, so the app can
//! keep sending the full history; a generation that fills the context drops
//! whole oldest turns the same way ([`crate::generate`]).

use crate::generate::{generate, ContextShift, GenerateOptions, Shift, StopReason, TokenEvent};
use crate::model::kv_cache::KvType;
use crate::model::Model;
use crate::sample::SamplingParams;
use crate::session::{CancelFlag, Session, SessionOptions};
use crate::session_state;
use crate::tah::{TahOptions, ThinkMode};
use crate::text::{ChatMessage, ChatTemplate, Tokenizer};
use crate::threads::Threads;
use std::path::Path;
use std::sync::{Arc, OnceLock};

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
    /// [`session_state::model_fingerprint`], computed on the first save or restore.
    fingerprint: OnceLock<u64>,
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
            fingerprint: OnceLock::new(),
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

    /// Runs `f` with the model's pool current (its parallel work on the
    /// model's threads), as generation does; a server's engine loop runs in it.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The model's identity in saved session states (hashed once).
    pub fn fingerprint(&self) -> u64 {
        *self
            .fingerprint
            .get_or_init(|| session_state::model_fingerprint(&self.model))
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
    /// `SessionParams::context_shift` / `keep_tokens`.
    context_shift: bool,
    keep_tokens: Option<usize>,
    window: ChatWindow,
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
            context_shift: p.context_shift,
            keep_tokens: p.keep_tokens,
            window: ChatWindow::default(),
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

    /// The session's complete state as bytes (docs/FORMAT.md § "Saved session
    /// state"): tokens, every cache depth, per-token depths and decider
    /// probabilities, the think-budget controller and the queued tokens, with
    /// a versioned header, the model's fingerprint and a checksum. There is no
    /// sampler state to save: each `generate` seeds its sampler afresh from
    /// [`GenerateParams::sampling`], so a restored session given the same
    /// parameters continues with exactly the tokens the saved one would have.
    pub fn save_state(&self) -> Result<Vec<u8>, Error> {
        session_state::save(&self.session, &self.pending, self.model.fingerprint())
            .map_err(|e| e.to_string())
    }

    /// Restores what [`ApiSession::save_state`] wrote, replacing this
    /// session's conversation and queue. The state must come from the same
    /// model file, KV type and think settings, and fit this session's
    /// context; otherwise (or if it is damaged) this is an error and the
    /// session is unchanged.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let fp = self.model.fingerprint();
        session_state::restore(&mut self.session, &mut self.pending, fp, bytes)
            .map_err(|e| e.to_string())?;
        self.last = EmbedStats::default();
        Ok(())
    }

    /// [`ApiSession::save_state`] to a file, written whole or not at all (a
    /// temporary file beside it, renamed over it).
    pub fn save_file(&self, path: &Path) -> Result<(), Error> {
        let bytes = self.save_state()?;
        session_state::write_file_atomic(path, &bytes).map_err(|e| e.to_string())
    }

    /// [`ApiSession::restore_state`] from a file (one larger than any state of
    /// this session is refused unread).
    pub fn load_file(&mut self, path: &Path) -> Result<(), Error> {
        let max = session_state::max_state_bytes(&self.session);
        let bytes = session_state::read_file(path, max).map_err(|e| e.to_string())?;
        self.restore_state(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Forgets the conversation, anything queued and the last statistics.
    pub fn reset(&mut self) {
        self.session.reset();
        self.pending.clear();
        self.window.reset();
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
    ///
    /// With context shift on, a conversation that leaves less than a quarter
    /// of the context free loses its oldest turns after the kept prefix
    /// ([`ChatWindow::fit`]); messages dropped once stay dropped while the app
    /// keeps sending them at the start of the history.
    pub fn chat(
        &mut self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
    ) -> Result<usize, Error> {
        let shift = self.context_shift.then_some(self.keep_tokens);
        let ids = self.window.fit(
            &mut self.session,
            messages,
            add_generation_prompt,
            enable_thinking,
            shift,
        )?;
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
    /// `generated_tokens`) — except when it releases text held back as the
    /// possible start of a stop string: that text comes in one last call with
    /// the end token's id. With nothing queued it continues after the last
    /// token in the cache. Returns the number of tokens handed to `on_token`
    /// (the statistics' `stop` says why it ended: a cancel is `Cancelled`).
    pub fn generate(
        &mut self,
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&Piece) -> bool,
    ) -> Result<usize, Error> {
        // Refuse bad settings before touching the queue or the cache.
        let checked = GenerateOptions {
            max_tokens: params.max_tokens,
            sampling: params.sampling,
            stop_at_eog: true,
            logit_bias: params.logit_bias.clone(),
            stop: params.stop.clone(),
            context_shift: None,
        };
        checked
            .validate(self.model.model.cfg.vocab)
            .map_err(|e| e.to_string())?;
        if !checked.stop.is_empty() && self.model.model.tokenizer.is_none() {
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
        let context_shift = self.context_shift.then(|| {
            let n_after = self.session.n_past() + prompt.len();
            let ctx = self.session.ctx();
            if n_after.saturating_add(params.max_tokens) <= ctx {
                ContextShift::default() // no shift can happen
            } else {
                self.window.context_shift(&self.session, self.keep_tokens)
            }
        });
        let opts = GenerateOptions {
            max_tokens: params.max_tokens,
            sampling: params.sampling,
            stop_at_eog: true,
            logit_bias: params.logit_bias.clone(),
            stop: params.stop.clone(),
            context_shift,
        };
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
                    if let Some(t) = tokenizer.filter(|t| t.is_eog(e.id)) {
                        // generate() stops after it. Its event may release text
                        // held back for a stop string: that text is delivered
                        // (with the end token's id), the end token's own text is not.
                        let own = t.token_text(e.id);
                        let held = own
                            .as_deref()
                            .and_then(|o| e.piece.strip_suffix(o))
                            .unwrap_or(e.piece);
                        if held.is_empty() {
                            return true;
                        }
                        return emit(Event {
                            id: e.id,
                            piece: held.to_string(),
                            depth: e.depth,
                        });
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
        self.window.record(&g.shifts);
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

/// What a chat keeps in view when it outgrows the context: the messages the
/// model no longer sees and where the turns of the rest begin. `ApiSession`
/// and `tah chat` hold one per conversation.
///
/// A turn starts at a `user` message and runs to the next one; the kept
/// prefix is the leading system message (or, with `keep_tokens`, the leading
/// messages that render within that many tokens) and is never dropped, nor is
/// the last turn. "Fits" means at least a quarter of the context is left free
/// for the answer.
#[derive(Clone, Debug, Default)]
pub struct ChatWindow {
    /// Leading messages every shift keeps.
    n_fixed: usize,
    /// The messages after them that shifts dropped, as the app sent them.
    dropped: Vec<ChatMessage>,
    /// The conversation the model sees (the fixed messages, then the app's
    /// messages after the dropped ones), as last rendered.
    view: Vec<ChatMessage>,
    add_generation_prompt: bool,
    enable_thinking: Option<bool>,
    /// The view's tokens: the session holds them first once they are fed.
    ids: Vec<u32>,
    /// For the running generation ([`ChatWindow::context_shift`]): the kept
    /// prefix, and per droppable turn (its index in `view`, its position).
    keep: usize,
    turns: Vec<(usize, usize)>,
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl ChatWindow {
    /// A new conversation: nothing dropped.
    pub fn reset(&mut self) {
        *self = ChatWindow::default();
    }

    /// The conversation as the model sees it (after the last [`ChatWindow::fit`]).
    pub fn view(&self) -> &[ChatMessage] {
        &self.view
    }

    /// Messages dropped so far (the app may keep sending them).
    pub fn dropped(&self) -> usize {
        self.dropped.len()
    }

    fn render(
        &self,
        tmpl: &ChatTemplate,
        tok: &Tokenizer,
        msgs: &[ChatMessage],
    ) -> Result<Vec<u32>, Error> {
        // Message contents never become control tokens: only the template's
        // own markers do (ChatTemplate::encode).
        tmpl.encode(
            tok,
            msgs,
            self.add_generation_prompt,
            self.enable_thinking,
            true,
        )
        .map_err(|e| e.to_string())
    }

    /// The token ids of `messages` as the model should see them. Without
    /// `shift` (`None`): the whole conversation, checked by the caller. With
    /// `shift` (`Some(keep_tokens)`): the messages dropped before are left out
    /// while the app still sends them; when the rest leaves less than a
    /// quarter of `session`'s context free, the oldest turns after the kept
    /// prefix are dropped too (the fewest that make room) and the session's
    /// cache is shifted so that the kept turns' cached tokens stay in use. An
    /// error when even the kept prefix and the last turn do not fit. The
    /// caller then keeps the session's shared prefix and feeds the rest.
    pub fn fit(
        &mut self,
        session: &mut Session,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
        shift: Option<Option<usize>>,
    ) -> Result<Vec<u32>, Error> {
        let model = Arc::clone(&session.model);
        let tmpl = model
            .chat_template
            .as_ref()
            .ok_or("this model has no chat template")?;
        let tok = model
            .tokenizer
            .as_ref()
            .ok_or("this model has no tokenizer")?;
        self.add_generation_prompt = add_generation_prompt;
        self.enable_thinking = enable_thinking;
        self.turns.clear();
        let Some(keep_tokens) = shift else {
            self.dropped.clear();
            self.n_fixed = 0;
            self.view = messages.to_vec();
            self.ids = self.render(tmpl, tok, &self.view)?;
            return Ok(self.ids.clone());
        };
        // Still the conversation whose start was dropped? (The app sends the
        // dropped messages again, right after the fixed ones, and more.)
        let (nf, nd) = (self.n_fixed, self.dropped.len());
        let continues =
            nd > 0 && messages.len() > nf + nd && messages[nf..nf + nd] == self.dropped[..];
        if !continues {
            self.dropped.clear();
            let keep_tokens = keep_tokens.map(|k| k.min(session.ctx()));
            self.n_fixed = self.fixed_messages(tmpl, tok, messages, keep_tokens)?;
        }
        let nf = self.n_fixed;
        let rest = &messages[nf + self.dropped.len()..];
        self.view.clear();
        self.view.extend_from_slice(&messages[..nf]);
        self.view.extend_from_slice(rest);
        self.ids = self.render(tmpl, tok, &self.view)?;
        let ctx = session.ctx();
        let limit = ctx - ctx / 4;
        if self.ids.len() <= limit {
            return Ok(self.ids.clone());
        }
        // Drop the fewest oldest turns that make it fit: the first kept
        // message is a later user message (binary search over them; the
        // length falls as turns go).
        let starts: Vec<usize> = (nf + 1..self.view.len())
            .filter(|&j| self.view[j].role == "user")
            .collect();
        let without = |w: &ChatWindow, j: usize| -> Result<Vec<u32>, Error> {
            let mut v = w.view[..nf].to_vec();
            v.extend_from_slice(&w.view[j..]);
            w.render(tmpl, tok, &v)
        };
        let (mut lo, mut hi) = (0, starts.len());
        let mut best: Option<(usize, Vec<u32>)> = None;
        while lo < hi {
            let mid = (lo + hi) / 2;
            let ids = without(self, starts[mid])?;
            if ids.len() <= limit {
                best = Some((starts[mid], ids));
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let (first, ids) = match best {
            Some(b) => b,
            // Nothing leaves a quarter free: keep only the last turn, if it
            // fits at all (room for one token).
            None => match starts.last() {
                Some(&j) => (j, without(self, j)?),
                None => (nf, self.ids.clone()),
            },
        };
        if ids.len() >= ctx {
            return Err(format!(
                "the conversation's kept start and last turn ({} tokens) do not fit the context ({ctx} tokens)",
                ids.len()
            ));
        }
        self.dropped.extend_from_slice(&self.view[nf..first]);
        self.view.drain(nf..first);
        self.ids = ids;
        reuse_cache(session, &self.ids)?;
        Ok(self.ids.clone())
    }

    /// How many leading messages a shift keeps: the system message (or none),
    /// or with `keep_tokens` the leading messages rendered within that many
    /// tokens (the caller bounds it by the context: the renderings stop
    /// there). Never the last message.
    fn fixed_messages(
        &self,
        tmpl: &ChatTemplate,
        tok: &Tokenizer,
        messages: &[ChatMessage],
        keep_tokens: Option<usize>,
    ) -> Result<usize, Error> {
        let last = messages.len().saturating_sub(1);
        let Some(k) = keep_tokens else {
            let system = messages.first().is_some_and(|m| m.role == "system");
            return Ok(usize::from(system).min(last));
        };
        let mut m = 0;
        while m < last {
            let ids = tmpl
                .render(&messages[..m + 1], false, self.enable_thinking)
                .map_err(|e| e.to_string())
                .and_then(|t| tok.encode(&t, true).map_err(|e| e.to_string()))?;
            if ids.len() > k {
                break;
            }
            m += 1;
        }
        Ok(m)
    }

    /// The context-shift settings of a generation that follows [`ChatWindow::fit`]
    /// (the session holds or has queued the view's tokens): the kept prefix
    /// and the positions where the droppable turns begin, found by rendering
    /// the conversation without the turns before each one and matching its
    /// tokens against the view's. `keep_tokens` raises the kept prefix.
    pub fn context_shift(&mut self, session: &Session, keep_tokens: Option<usize>) -> ContextShift {
        self.turns.clear();
        self.keep = keep_tokens.unwrap_or(0);
        let model = Arc::clone(&session.model);
        let (Some(tmpl), Some(tok)) = (model.chat_template.as_ref(), model.tokenizer.as_ref())
        else {
            return ContextShift {
                keep: self.keep,
                turn_starts: Vec::new(),
            };
        };
        let nf = self.n_fixed;
        // The session's tokens must be the view's (a prompt may have been
        // queued after it; that comes later and is fine).
        let held = session.tokens();
        if self.view.is_empty() || common_prefix(held, &self.ids) < held.len().min(self.ids.len()) {
            return ContextShift {
                keep: self.keep,
                turn_starts: Vec::new(),
            };
        }
        // Per user message j after the fixed ones: the view without
        // view[nf..j] renders to ids[..k] ++ ids[k + drop..] for any k in
        // [len - common suffix, common prefix].
        let mut cands = Vec::new();
        for j in (nf + 1..self.view.len()).filter(|&j| self.view[j].role == "user") {
            let mut v = self.view[..nf].to_vec();
            v.extend_from_slice(&self.view[j..]);
            let Ok(n) = self.render(tmpl, tok, &v) else {
                continue;
            };
            if n.len() >= self.ids.len() {
                continue;
            }
            let pre = common_prefix(&self.ids, &n);
            let suf = self
                .ids
                .iter()
                .rev()
                .zip(n.iter().rev())
                .take_while(|(a, b)| a == b)
                .count();
            let lo = n.len() - suf.min(n.len());
            if lo <= pre {
                cands.push((j, lo, pre, self.ids.len() - n.len()));
            }
        }
        // One kept prefix for all: the largest lower bound; turns whose range
        // does not hold it are left out.
        self.keep = cands.iter().map(|c| c.1).fold(self.keep, usize::max);
        for &(j, _, pre, drop) in &cands {
            if self.keep <= pre {
                self.turns.push((j, self.keep + drop));
            }
        }
        ContextShift {
            keep: self.keep,
            turn_starts: self.turns.iter().map(|t| t.1).collect(),
        }
    }

    /// Takes note of the shifts a generation made: one that dropped whole
    /// turns ([`ChatWindow::context_shift`]'s) drops their messages from the
    /// view; another (half of the tokens) leaves the view, which the cache no
    /// longer matches — the next `fit` feeds again what differs.
    pub fn record(&mut self, shifts: &[Shift]) {
        for s in shifts {
            let Some(i) = self
                .turns
                .iter()
                .position(|&(_, t)| s.keep == self.keep && t == s.keep + s.drop)
            else {
                self.turns.clear();
                continue;
            };
            let (j, _) = self.turns[i];
            let nf = self.n_fixed;
            self.dropped.extend_from_slice(&self.view[nf..j]);
            self.view.drain(nf..j);
            self.ids.drain(s.keep..s.keep + s.drop);
            self.turns.drain(..=i);
            for t in &mut self.turns {
                t.0 -= j - nf;
                t.1 -= s.drop;
            }
        }
    }
}

/// After [`ChatWindow::fit`] dropped messages: shifts the session's cache so
/// that as many cached tokens as possible are `ids`' own — the shared prefix
/// stays, and the cached tokens of the kept turns (found where they match
/// `ids` after it) move down to follow it. `Session::keep_shared_prefix` does
/// the rest.
fn reuse_cache(session: &mut Session, ids: &[u32]) -> Result<(), Error> {
    let held = session.tokens();
    let a = common_prefix(held, ids);
    if a >= ids.len() || a >= held.len() {
        return Ok(());
    }
    // The cut d whose tail matches most of ids[a..]: candidates start with
    // ids[a]; the work is bounded (a few passes over the cache) whatever the
    // tokens.
    let mut budget = 4 * held.len();
    let (mut best_d, mut best_m) = (0, 0);
    for d in 1..held.len() - a {
        if held[a + d] != ids[a] {
            continue;
        }
        let m = common_prefix(&held[a + d..], &ids[a..]);
        if m > best_m {
            (best_d, best_m) = (d, m);
        }
        // A longer cut cannot match more than a tail matched whole.
        if a + d + m == held.len() || budget <= m {
            break;
        }
        budget -= m + 1;
    }
    if best_m > 0 {
        session.shift(a, best_d).map_err(|e| e.to_string())?;
    }
    Ok(())
}
