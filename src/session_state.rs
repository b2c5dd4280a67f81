//! Saving and restoring a session's complete state: its tokens, per-token
//! depths and decider probabilities, every cache depth (dense depth 1, sparse
//! depths ≥ 2 with their positions), the TaH step's state (the think-budget
//! controller, the `--hard-rate` picker) and the tokens an app queued but has
//! not fed yet. The layout is docs/FORMAT.md § "Saved session state".
//!
//! Why these parts and no others: the sampler keeps nothing between
//! generations (each [`crate::generate::generate`] call builds its sampler and
//! seeds its random stream from [`crate::sample::SamplingParams::seed`]; the
//! penalties read the session's tokens), and the logits of the last token are
//! recomputed by the next generation (it feeds at least one token), so neither
//! is saved. A restored [`Session`]'s [`Session::logits`] are therefore not the
//! saved session's: feed a token first.
//!
//! Restoring is all or nothing: every length, count, id, depth and position
//! is checked against the bytes and against the session (its model, KV type,
//! think settings, context) *before* the session is touched, so a damaged,
//! hostile or mismatched state leaves it as it was. A checksum over the whole
//! state makes damage a clear error rather than a strange conversation. The
//! cache rows are copied as stored ([`KvCache::raw_rows`]), whatever the KV
//! type, so a state restores bit-identically and generation continues exactly
//! as it would have.

use crate::model::kv_cache::KvCache;
use crate::model::Model;
use crate::session::Session;
use crate::tah::budget::WINDOW;
use crate::tah::TokenInfo;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The first bytes of a saved state.
pub const MAGIC: [u8; 8] = *b"TAHSTATE";
/// The layout version this build writes and reads.
pub const VERSION: u32 = 1;
/// Longest model name kept in a state (longer names are cut, at a character).
const MAX_NAME: usize = 256;
/// Longest KV type name.
const MAX_TYPE: usize = 16;
/// The checksum trailer.
const SUM_BYTES: usize = 8;
/// The largest decision count a state may hold (9 years at a million tokens a
/// second): the counters then never overflow as the session goes on.
const MAX_COUNT: u64 = 1 << 48;

/// Why a state could not be saved or restored.
#[derive(Debug, PartialEq, Eq)]
pub enum StateError {
    /// The bytes are not a saved state, or one of another layout version.
    NotAState(String),
    /// The bytes are damaged: truncated, a wrong checksum, an impossible value.
    Corrupt(String),
    /// A sound state that does not fit this session: another model, KV type
    /// or think setting, or a context too small.
    Mismatch(String),
    /// A buffer for the state could not be reserved.
    Memory(String),
    /// Reading or writing a state file failed.
    Io(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::NotAState(s) => write!(f, "not a saved session state: {s}"),
            StateError::Corrupt(s) => write!(f, "damaged session state: {s}"),
            StateError::Mismatch(s) => write!(f, "the saved state does not fit this session: {s}"),
            StateError::Memory(s) | StateError::Io(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for StateError {}

fn corrupt<T>(s: impl Into<String>) -> Result<T, StateError> {
    Err(StateError::Corrupt(s.into()))
}

fn mismatch<T>(s: impl Into<String>) -> Result<T, StateError> {
    Err(StateError::Mismatch(s.into()))
}

/// FNV-1a 64 offset basis: the hash of no bytes.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 of `bytes`, continuing from `h` ([`FNV_OFFSET`] to start). Any
/// single changed byte changes the hash (each step is a bijection of `h`).
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The checksum a state ends with: FNV-1a 64 of everything before it.
/// (Public so that the fuzz target can forge valid checksums.)
pub fn checksum(body: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, body)
}

/// The model's identity in a saved state: FNV-1a 64 over the file's GGUF
/// header, metadata and tensor infos (everything before the tensor data), then
/// the file length. Weights are not hashed (gigabytes); a file that differs
/// only in tensor bytes of the same size is not told apart. Costs a pass over
/// the header (megabytes for a large vocabulary): compute it once per model
/// (`ApiModel` caches it).
pub fn model_fingerprint(model: &Model) -> u64 {
    let file = model.file();
    let raw = file.raw();
    let head = usize::try_from(file.data_start)
        .ok()
        .and_then(|n| raw.get(..n))
        .unwrap_or(raw);
    fnv1a(fnv1a(FNV_OFFSET, head), &file.file_size().to_le_bytes())
}

/// The model's name as a state records it: `general.name`, else the file name.
fn model_name(model: &Model) -> String {
    let file = model.file();
    let name = match file.get_str("general.name") {
        Some(n) => n.to_string(),
        None => file
            .path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
    };
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// The KV type's name in a state ("f16", "f32", "q8_0").
fn kv_type_name(cache: &KvCache) -> String {
    let mut s = cache.ty.name().to_string();
    s.truncate(MAX_TYPE);
    s
}

/// What the fixed part of a state says (everything before the tokens).
struct Header {
    fingerprint: u64,
    name: Vec<u8>,
    kv_type: Vec<u8>,
    row_bytes: usize,
    n_layers: usize,
    kv_dim: usize,
    n_depths: usize,
    n_tokens: usize,
    n_pending: usize,
    /// Filled slots at depths 2..=n_depths.
    sparse: Vec<usize>,
    hard_decided: u64,
    /// The think-budget controller: decisions seen, debt, ring.
    budget: Option<(u64, f32, [f32; WINDOW])>,
}

impl Header {
    /// Bytes of the header, the payload and the checksum; `None` on overflow.
    fn total(&self) -> Option<usize> {
        let header = MAGIC.len()
            + 4 // version
            + 8 // fingerprint
            + 2
            + self.name.len()
            + 1
            + self.kv_type.len()
            + 4 * 6 // row_bytes, layers, kv_dim, depths, tokens, pending
            + 4 * self.sparse.len()
            + 8 // hard_decided
            + 1 // budget flag
            + if self.budget.is_some() { 8 + 4 + 4 * WINDOW } else { 0 };
        let n_slots = self
            .sparse
            .iter()
            .try_fold(self.n_tokens, |a, &n| a.checked_add(n))?;
        let positions = n_slots.checked_sub(self.n_tokens)?.checked_mul(4)?;
        let per_token = self.n_tokens.checked_mul(4 + 1 + 4)?;
        let pending = self.n_pending.checked_mul(4)?;
        let kv = [self.n_layers, 2, self.row_bytes]
            .iter()
            .try_fold(n_slots, |a, &m| a.checked_mul(m))?;
        [per_token, pending, positions, kv, SUM_BYTES]
            .iter()
            .try_fold(header, |a, &n| a.checked_add(n))
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.name);
        out.push(self.kv_type.len() as u8);
        out.extend_from_slice(&self.kv_type);
        for n in [
            self.row_bytes,
            self.n_layers,
            self.kv_dim,
            self.n_depths,
            self.n_tokens,
            self.n_pending,
        ]
        .iter()
        .chain(&self.sparse)
        {
            out.extend_from_slice(&(*n as u32).to_le_bytes());
        }
        out.extend_from_slice(&self.hard_decided.to_le_bytes());
        match &self.budget {
            None => out.push(0),
            Some((seen, debt, ring)) => {
                out.push(1);
                out.extend_from_slice(&seen.to_le_bytes());
                out.extend_from_slice(&debt.to_bits().to_le_bytes());
                for p in ring {
                    out.extend_from_slice(&p.to_bits().to_le_bytes());
                }
            }
        }
    }
}

/// Reads a state front to back; running out of bytes is an error.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StateError> {
        match self
            .at
            .checked_add(n)
            .and_then(|end| self.buf.get(self.at..end))
        {
            Some(s) => {
                self.at += n;
                Ok(s)
            }
            None => corrupt(format!(
                "truncated: the {what} at byte {} is cut off",
                self.at
            )),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, StateError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, StateError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }

    fn u32(&mut self, what: &str) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn count(&mut self, what: &str) -> Result<usize, StateError> {
        Ok(self.u32(what)? as usize)
    }
}

/// Little-endian u32s of a slice whose length is a multiple of 4.
fn u32s(b: &[u8]) -> impl Iterator<Item = u32> + '_ {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
}

fn refuse_big_endian() -> Result<(), StateError> {
    // The cache rows are copied as stored, in the machine's byte order, and the
    // layout says little-endian.
    if cfg!(target_endian = "big") {
        return Err(StateError::Io(
            "session states are not supported on big-endian machines".into(),
        ));
    }
    Ok(())
}

/// The header that describes `session` as it is now, with `n_pending` queued tokens.
fn describe(session: &Session, n_pending: usize, fingerprint: u64) -> Header {
    let cache = &session.cache;
    let step = session.decisions();
    Header {
        fingerprint,
        name: model_name(&session.model).into_bytes(),
        kv_type: kv_type_name(cache).into_bytes(),
        row_bytes: cache.row_bytes(),
        n_layers: cache.n_layers(),
        kv_dim: cache.kv_dim,
        n_depths: cache.max_depth(),
        n_tokens: session.n_past(),
        n_pending,
        sparse: (2..=cache.max_depth()).map(|d| cache.len(d)).collect(),
        hard_decided: step.hard_decided(),
        budget: step.budget().map(|b| {
            let (ring, seen, debt) = b.state();
            (seen, debt, *ring)
        }),
    }
}

/// The most bytes a state for `session` can take (a bound for reading files):
/// every token and queued token at every depth.
pub fn max_state_bytes(session: &Session) -> usize {
    let ctx = session.ctx();
    let mut h = describe(session, ctx, 0);
    h.name = vec![0; MAX_NAME];
    h.kv_type = vec![0; MAX_TYPE];
    h.n_tokens = ctx;
    h.sparse.iter_mut().for_each(|n| *n = ctx);
    h.budget = Some((0, 0.0, [0.0; WINDOW]));
    h.total().unwrap_or(usize::MAX)
}

/// The state of `session` with `pending` tokens queued (not yet fed), for the
/// model whose [`model_fingerprint`] is `fingerprint`.
pub fn save(session: &Session, pending: &[u32], fingerprint: u64) -> Result<Vec<u8>, StateError> {
    refuse_big_endian()?;
    let cache = &session.cache;
    let n = session.n_past();
    if cache.len(1) != n || n + pending.len() > session.ctx() {
        // Session keeps these equal; a state that broke it would not restore.
        return Err(StateError::Corrupt(format!(
            "the session is inconsistent: {n} tokens, {} cached, {} queued, context {}",
            cache.len(1),
            pending.len(),
            session.ctx()
        )));
    }
    let h = describe(session, pending.len(), fingerprint);
    let too_large = || StateError::Memory("the session state is too large to address".into());
    let total = h.total().ok_or_else(too_large)?;
    let mut out = Vec::new();
    out.try_reserve_exact(total).map_err(|_| {
        StateError::Memory(format!(
            "cannot reserve {total} bytes for the session state"
        ))
    })?;
    h.write(&mut out);
    for &t in session.tokens() {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend(session.token_info().iter().map(|i| i.depth));
    for i in session.token_info() {
        out.extend_from_slice(&i.prob.to_bits().to_le_bytes());
    }
    for &t in pending {
        out.extend_from_slice(&t.to_le_bytes());
    }
    for d in 2..=cache.max_depth() {
        for &p in cache.positions(d) {
            out.extend_from_slice(&(p as u32).to_le_bytes());
        }
    }
    for d in 1..=cache.max_depth() {
        for l in 0..cache.n_layers() {
            let (k, v) = cache.raw_rows(d, l, cache.len(d));
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        }
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    debug_assert_eq!(out.len(), total);
    Ok(out)
}

/// Checks the magic, the version and the checksum; returns the bytes the
/// checksum covers.
fn check_envelope(bytes: &[u8]) -> Result<&[u8], StateError> {
    let fixed = MAGIC.len() + 4;
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] {
        return Err(StateError::NotAState(
            "it does not begin with TAHSTATE".into(),
        ));
    }
    if bytes.len() < fixed + SUM_BYTES {
        return corrupt(format!("truncated: {} bytes", bytes.len()));
    }
    let version = u32::from_le_bytes(bytes[MAGIC.len()..fixed].try_into().unwrap());
    if version != VERSION {
        return Err(StateError::NotAState(format!(
            "layout version {version}; this build reads version {VERSION}"
        )));
    }
    let (body, sum) = bytes.split_at(bytes.len() - SUM_BYTES);
    if checksum(body).to_le_bytes() != sum {
        return corrupt("checksum mismatch (the state was changed or cut short)");
    }
    Ok(body)
}

/// Parses the header and checks it against `session`: the model, the KV
/// type, the cache's shape and depths, the context, the think controller.
fn read_header(r: &mut Reader, session: &Session, fingerprint: u64) -> Result<Header, StateError> {
    r.take(MAGIC.len() + 4, "magic")?;
    let fp = r.u64("model fingerprint")?;
    let n = r.u16("model name length")? as usize;
    let name = r.take(n, "model name")?.to_vec();
    let n = r.u8("KV type length")? as usize;
    let kv_type = r.take(n, "KV type")?.to_vec();
    let ours = model_name(&session.model);
    if fp != fingerprint || name != ours.as_bytes() {
        return mismatch(format!(
            "it was saved from model \"{}\" (fingerprint {fp:016x}), this session runs \"{ours}\" \
             (fingerprint {fingerprint:016x})",
            String::from_utf8_lossy(&name),
        ));
    }
    let cache = &session.cache;
    let our_type = kv_type_name(cache);
    if kv_type != our_type.as_bytes() {
        return mismatch(format!(
            "KV cache type {} saved, this session's is {our_type}",
            String::from_utf8_lossy(&kv_type)
        ));
    }
    let row_bytes = r.count("row size")?;
    let n_layers = r.count("layer count")?;
    let kv_dim = r.count("KV width")?;
    let n_depths = r.count("depth count")?;
    if (row_bytes, n_layers, kv_dim) != (cache.row_bytes(), cache.n_layers(), cache.kv_dim) {
        return corrupt(format!(
            "cache shape {n_layers} layers × {kv_dim} values ({row_bytes} bytes a row) does not \
             match the model's {} × {} ({} bytes)",
            cache.n_layers(),
            cache.kv_dim,
            cache.row_bytes()
        ));
    }
    if n_depths != cache.max_depth() {
        return mismatch(format!(
            "{n_depths} cache depths saved, this session has {} (another think mode or max depth)",
            cache.max_depth()
        ));
    }
    let n_tokens = r.count("token count")?;
    let n_pending = r.count("queued token count")?;
    let ctx = session.ctx();
    if n_tokens.saturating_add(n_pending) > ctx.min(cache.capacity) {
        return mismatch(format!(
            "{n_tokens} tokens and {n_pending} queued do not fit this session's context of {ctx} \
             tokens"
        ));
    }
    let mut sparse = Vec::new();
    let mut above = n_tokens;
    for d in 2..=n_depths {
        let len = r.count("sparse slot count")?;
        if len > above {
            return corrupt(format!(
                "{len} slots at depth {d}, more than the {above} of the depth above"
            ));
        }
        above = len;
        sparse.push(len);
    }
    let hard_decided = r.u64("hard-rate count")?;
    if hard_decided > MAX_COUNT {
        return corrupt(format!("hard-rate count {hard_decided} is out of range"));
    }
    let budget = match r.u8("budget flag")? {
        0 => None,
        1 => {
            let seen = r.u64("budget count")?;
            let debt = f32::from_bits(r.u32("budget debt")?);
            let mut ring = [0.0f32; WINDOW];
            for (p, b) in ring
                .iter_mut()
                .zip(u32s(r.take(4 * WINDOW, "budget ring")?))
            {
                *p = f32::from_bits(b);
            }
            if seen > MAX_COUNT {
                return corrupt(format!("budget count {seen} is out of range"));
            }
            if !crate::tah::budget::Budget::valid_debt(debt) {
                return corrupt(format!("budget debt {debt} is out of range"));
            }
            if let Some(p) = ring.iter().find(|p| !valid_prob(**p)) {
                return corrupt(format!("budget probability {p} is outside [0, 1]"));
            }
            Some((seen, debt, ring))
        }
        f => return corrupt(format!("budget flag {f}")),
    };
    match (budget.is_some(), session.budget().is_some()) {
        (true, false) => {
            return mismatch("it holds a think-budget controller, this session thinks without one")
        }
        (false, true) => {
            return mismatch("this session has a think budget, the state was saved without one")
        }
        _ => {}
    }
    Ok(Header {
        fingerprint: fp,
        name,
        kv_type,
        row_bytes,
        n_layers,
        kv_dim,
        n_depths,
        n_tokens,
        n_pending,
        sparse,
        hard_decided,
        budget,
    })
}

/// A decider probability: in [0, 1], or NaN where the decider did not run.
fn valid_prob(p: f32) -> bool {
    p.is_nan() || (0.0..=1.0).contains(&p)
}

/// The payload's parts, borrowed from the state.
struct Payload<'a> {
    tokens: &'a [u8],
    depths: &'a [u8],
    probs: &'a [u8],
    pending: &'a [u8],
    /// Positions of depths 2..=n_depths.
    positions: Vec<&'a [u8]>,
    /// Keys then values of each depth and layer, `kv[(d - 1) * layers + l]`.
    kv: Vec<(&'a [u8], &'a [u8])>,
}

/// Splits the payload and checks every value in it.
fn read_payload<'a>(
    r: &mut Reader<'a>,
    h: &Header,
    vocab: usize,
) -> Result<Payload<'a>, StateError> {
    let n = h.n_tokens;
    let tokens = r.take(4 * n, "tokens")?;
    let depths = r.take(n, "token depths")?;
    let probs = r.take(4 * n, "decider probabilities")?;
    let pending = r.take(4 * h.n_pending, "queued tokens")?;
    let mut positions = Vec::new();
    for &len in &h.sparse {
        positions.push(r.take(4 * len, "sparse positions")?);
    }
    let mut kv = Vec::new();
    for d in 1..=h.n_depths {
        let len = if d == 1 { n } else { h.sparse[d - 2] };
        for _ in 0..h.n_layers {
            // `total` checked these products against the state's length.
            let k = r.take(len * h.row_bytes, "keys")?;
            let v = r.take(len * h.row_bytes, "values")?;
            kv.push((k, v));
        }
    }
    for (i, t) in u32s(tokens).chain(u32s(pending)).enumerate() {
        if t as usize >= vocab {
            return corrupt(format!(
                "token {i} is id {t}, outside the vocabulary (size {vocab})"
            ));
        }
    }
    if let Some((i, d)) = depths
        .iter()
        .enumerate()
        .find(|(_, &d)| d == 0 || d as usize > h.n_depths)
    {
        return corrupt(format!(
            "token {i} has depth {d}; depths run from 1 to {}",
            h.n_depths
        ));
    }
    if let Some(p) = u32s(probs).map(f32::from_bits).find(|p| !valid_prob(*p)) {
        return corrupt(format!("decider probability {p} is outside [0, 1]"));
    }
    // A depth's slots are exactly the tokens that reached it, in order.
    for (d, list) in (2..).zip(&positions) {
        let mut reached = depths
            .iter()
            .enumerate()
            .filter(|(_, &t)| t as usize >= d)
            .map(|(i, _)| i);
        let mut slots = u32s(list).map(|p| p as usize);
        if !reached.by_ref().eq(slots.by_ref()) {
            return corrupt(format!(
                "the slots of depth {d} are not the positions of the tokens that reached it"
            ));
        }
    }
    Ok(Payload {
        tokens,
        depths,
        probs,
        pending,
        positions,
        kv,
    })
}

/// Restores what [`save`] wrote into `session`, and its queued tokens into
/// `pending`. `fingerprint` is the session model's [`model_fingerprint`].
/// Nothing is changed unless the whole state checks out.
pub fn restore(
    session: &mut Session,
    pending: &mut Vec<u32>,
    fingerprint: u64,
    bytes: &[u8],
) -> Result<(), StateError> {
    refuse_big_endian()?;
    let body = check_envelope(bytes)?;
    let mut r = Reader { buf: body, at: 0 };
    let h = read_header(&mut r, session, fingerprint)?;
    match h.total() {
        Some(t) if t == bytes.len() => {}
        t => {
            return corrupt(format!(
                "its header describes {} bytes, it has {}",
                t.map_or("too many".to_string(), |t| t.to_string()),
                bytes.len()
            ))
        }
    }
    let p = read_payload(&mut r, &h, session.model.cfg.vocab)?;
    let mut queued = Vec::new();
    queued
        .try_reserve_exact(h.n_pending)
        .map_err(|_| StateError::Memory("cannot reserve the queued tokens".into()))?;
    queued.extend(u32s(p.pending));

    // Checked: from here on nothing fails (the session's buffers were
    // reserved for its context).
    let (tokens, info, cache, step) = session.restore_parts();
    tokens.extend(u32s(p.tokens));
    info.extend(
        p.depths
            .iter()
            .zip(u32s(p.probs))
            .map(|(&depth, prob)| TokenInfo {
                depth,
                prob: f32::from_bits(prob),
            }),
    );
    let laid = cache.set_layout(h.n_tokens, |d| u32s(p.positions[d - 2]).map(|p| p as usize));
    if laid.is_ok() {
        for d in 1..=h.n_depths {
            let len = cache.len(d);
            for l in 0..h.n_layers {
                let (k, v) = cache.raw_rows_mut(d, l, len);
                let (sk, sv) = p.kv[(d - 1) * h.n_layers + l];
                k.copy_from_slice(sk);
                v.copy_from_slice(sv);
            }
        }
        step.set_hard_decided(h.hard_decided);
        if let (Some(b), Some((seen, debt, ring))) = (step.budget_mut(), &h.budget) {
            b.set_state(ring, *seen, *debt);
        }
    }
    if let Err(e) = laid {
        // Unreachable: read_payload checked the positions.
        session.reset();
        return corrupt(format!("{e} (the session was reset)"));
    }
    *pending = queued;
    Ok(())
}

/// Writes `bytes` to `path` whole or not at all: into a new temporary file
/// beside it (same directory, so the rename stays on one file system), synced,
/// then renamed over `path`. A crash leaves the old file or the new one, never
/// a part; a failure removes the temporary file.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        StateError::Io(format!("cannot {what} {}: {e}", p.display()))
    };
    let name = path
        .file_name()
        .ok_or_else(|| StateError::Io(format!("{} is not a file name", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Unique per process and call: two threads saving at once do not collide,
    // and `create_new` never follows or reuses an existing file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| io("write", &tmp, e))?;
        f.sync_all().map_err(|e| io("sync", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io("replace", path, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // The rename itself is durable once the directory is synced (POSIX; other
    // systems may refuse to open a directory: best effort).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a state file of at most `max` bytes ([`max_state_bytes`]): a larger
/// file is refused before anything is read.
pub fn read_file(path: &Path, max: usize) -> Result<Vec<u8>, StateError> {
    let io = |e: std::io::Error| StateError::Io(format!("cannot read {}: {e}", path.display()));
    let f = std::fs::File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(StateError::Io(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let len = meta.len();
    if len > max as u64 {
        return mismatch(format!(
            "{} holds {len} bytes, more than a state of this session can ({max} bytes)",
            path.display()
        ));
    }
    let mut out = Vec::new();
    out.try_reserve_exact(len as usize).map_err(|_| {
        StateError::Memory(format!("cannot reserve {len} bytes for {}", path.display()))
    })?;
    // `take`: a file that grows while being read stays within the bound.
    f.take(max as u64 + 1).read_to_end(&mut out).map_err(io)?;
    if out.len() > max {
        return mismatch(format!(
            "{} grew past {max} bytes while read",
            path.display()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            fnv1a(fnv1a(FNV_OFFSET, b"foo"), b"bar"),
            0x8594_4171_f739_67e8
        );
    }
}
