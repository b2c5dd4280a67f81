//! The chat template's sandbox: the template is Jinja from an untrusted model
//! file, so rendering it must never panic, overflow the stack, allocate without
//! bound or run without bound.
//!
//! minijinja gives three levers: fuel (instructions per render), a recursion
//! limit (macro/block depth) and the functions the environment registers. Its
//! operators (`~`, `+`, `*`, comparisons, slicing) and the storage of values
//! (`{% set %}`, namespaces) have no hooks. So the sandbox has two halves:
//!
//! **Dynamic (every call the template can make):** every built-in filter, test
//! and global function, every Python-style method (minijinja-contrib's
//! pycompat) and the printing of every `{{ value }}` (the formatter, which also
//! sees prints into captured blocks and macro output) go through a wrapper
//! that, before the call, refuses arguments whose result would exceed
//! [`MAX_VALUE`] (`indent`, `replace`, `join`, `format`, `batch`, `slice`,
//! `escape`, case mappings, `tojson(indent=…)`, ...), and after the call
//! measures the result: more than [`MAX_VALUE`] units (bytes of text, one per
//! list item) or nested deeper than [`MAX_DEPTH`] is an error. The inputs and
//! the result are charged to a per-render work budget ([`MAX_WORK`]): a loop
//! calling `replace` on a 10 MB string stops after ~13 calls, however much
//! fuel is left. The walk that measures a value stops at the first limit, so
//! a value that shares sublists (2^40 items in 40 nodes) costs at most the
//! limit to measure.
//!
//! **Static (what the operators can do):** [`check_source`] scans the source
//! once at load and refuses what the operators could grow without bound:
//! - a value that could feed its own growth: for every assignment (`set`,
//!   `for`, `with`, macro arguments), an upper bound of how many "units" (one
//!   input string, literal or call result) the target can hold is relaxed to a
//!   fixed point; growth operators (`~`, `+` unless with a number, list/dict/
//!   tuple literals) add their operands' bounds, anything else takes the
//!   maximum. More than [`MAX_UNITS`] (a doubling loop, `ns.x = [ns.x]`, a
//!   macro doubling its argument when it recurses) is refused.
//! - except a *linear accumulator* `v = v + e` / `v = v ~ e` (DeepSeek-R1
//!   gathers its system turns this way) where `e` cannot hold `v`'s value (no
//!   assignment path from `v`, no macro output), in a place that runs a
//!   bounded number of times: outside macros, `call` and `block` bodies and
//!   recursive loops, and inside only loops over `messages`, `tools`,
//!   `documents` (sliced, filtered, or through a variable only set to such),
//!   a literal list or `range` of at most [`MAX_LITERAL_LOOP`]. It counts as
//!   `e`'s units: its own count is the conversation's size. Anywhere else it
//!   is refused as above (`range(1000000)`, recursion, `v = v + v`). At render
//!   the head `v` is wrapped in [`GROW`], which charges its size to the work
//!   budget (each `+` copies it: 20,000 accumulated 1 KB turns stop at the
//!   work limit in well under a second) and refuses it past [`MAX_VALUE`].
//! - `*` except between two literals (`'-' * 3`), and then at most
//!   [`MAX_LITERAL_REPEAT`] bytes;
//! - `include`, `import`, `from`, `extends` (there is no other template, and
//!   including itself would recurse with a growing context);
//! - `loop.cycle()` with no argument (minijinja divides by zero);
//! - a namespace, macro, `caller` or `self` used as a plain value (an alias
//!   would hide mutation or calls from the scan above);
//! - more than [`MAX_SOURCE`] bytes of source, or more than
//!   [`MAX_LITERAL_BRACKETS`] list/dict literals (with the parser's own depth
//!   limit of 150, this bounds how deep a value can be built without a call).
//!
//! What stays bounded only by fuel: a loop that applies an operator to a large
//! value it does not grow (e.g. `{% set t = s ~ s %}` 10^6 times on a 10 MB
//! `s`) costs fuel × the size of the largest value, which is bounded (values
//! are at most [`MAX_UNITS`] × max([`MAX_VALUE`], input size)) but can take
//! minutes. Closing that needs hooks in minijinja's operators.
//!
//! The render runs on its own thread with a [`STACK`]-byte stack, under
//! `catch_unwind`: values are at most a few hundred deep and macros at most
//! 500, so that stack is known to suffice, and a panic inside minijinja still
//! becomes an error.

use std::cell::Cell;
use std::collections::HashMap;

use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

/// Largest template source, in bytes (real templates are 1-20 KiB).
pub const MAX_SOURCE: usize = 256 << 10;
/// Largest value a filter, function or method may return or the template may
/// print, in units: bytes of text plus one per list item or map entry.
pub const MAX_VALUE: usize = 16 << 20;
/// Deepest nesting of lists and maps a value may have where it is checked.
pub const MAX_DEPTH: usize = 100;
/// Work one render may do in filters, functions, methods and prints, in units
/// of the values they take and return: many times a long conversation, and
/// ~0.1 s of copying (a few seconds under the fuzzer's sanitizers).
pub const MAX_WORK: u64 = 128 << 20;
/// Largest `'literal' * count` product, in bytes.
pub const MAX_LITERAL_REPEAT: usize = 16 << 20;
/// Most values (inputs, literals, call results) one variable may combine.
pub const MAX_UNITS: u64 = 64;
/// Most list/dict literals in one template.
pub const MAX_LITERAL_BRACKETS: usize = 1024;
/// The function [`check_source`] wraps accumulator heads in.
pub const GROW: &str = "__tah_grow";
/// The render thread's stack.
pub const STACK: usize = 256 << 20;

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

thread_local! {
    static WORK: Cell<u64> = const { Cell::new(0) };
}

/// Starts a render's work budget (on the render thread).
pub fn reset_work() {
    WORK.with(|w| w.set(0));
}

fn charge(units: usize) -> Result<(), Error> {
    WORK.with(|w| {
        let total = w.get().saturating_add(units as u64);
        w.set(total);
        if total > MAX_WORK {
            Err(err(format!(
                "the template did more than {} MiB of work in filters and prints",
                MAX_WORK >> 20
            )))
        } else {
            Ok(())
        }
    })
}

/// The size of `v` in units, or an error past [`MAX_VALUE`] or [`MAX_DEPTH`].
pub fn measure(v: &Value) -> Result<usize, Error> {
    let mut units = 0usize;
    walk(v, 0, &mut units)?;
    Ok(units)
}

fn walk(v: &Value, depth: usize, units: &mut usize) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(err(format!("a value is nested more than {MAX_DEPTH} deep")));
    }
    *units += 1;
    match v.kind() {
        ValueKind::String => *units += v.as_str().map_or(0, str::len),
        ValueKind::Bytes => *units += v.as_bytes().map_or(0, <[u8]>::len),
        ValueKind::Seq | ValueKind::Iterable => {
            if let Ok(items) = v.try_iter() {
                for item in items {
                    walk(&item, depth + 1, units)?;
                    too_big(*units)?;
                }
            }
        }
        ValueKind::Map => {
            if let Ok(keys) = v.try_iter() {
                for k in keys {
                    walk(&k, depth + 1, units)?;
                    if let Ok(item) = v.get_item(&k) {
                        walk(&item, depth + 1, units)?;
                    }
                    too_big(*units)?;
                }
            }
        }
        _ => {}
    }
    too_big(*units)
}

fn too_big(units: usize) -> Result<(), Error> {
    if units > MAX_VALUE {
        Err(err(format!(
            "a value is larger than {} MiB",
            MAX_VALUE >> 20
        )))
    } else {
        Ok(())
    }
}

/// Refuses an estimated result size above [`MAX_VALUE`].
fn estimate(what: &str, units: u128) -> Result<(), Error> {
    if units > MAX_VALUE as u128 {
        Err(err(format!(
            "{what} would make a value larger than {} MiB",
            MAX_VALUE >> 20
        )))
    } else {
        Ok(())
    }
}

fn str_len(v: Option<&Value>) -> usize {
    v.and_then(|v| v.as_str()).map_or(0, str::len)
}

fn positional(args: &[Value]) -> Vec<&Value> {
    args.iter().filter(|a| !a.is_kwargs()).collect()
}

fn kwarg(args: &[Value], name: &str) -> Option<Value> {
    let last = args.last()?;
    if !last.is_kwargs() {
        return None;
    }
    last.get_attr(name).ok().filter(|v| !v.is_undefined())
}

fn as_count(v: Option<&Value>) -> Option<i128> {
    v.and_then(|v| i128::try_from(v.clone()).ok())
}

/// `count(old)` replacements of `old` by `new` in `s`.
fn replace_estimate(s: &str, old: &str, new: &str) -> u128 {
    let n = if old.is_empty() {
        s.chars().count() as u128 + 1
    } else {
        s.matches(old).count() as u128
    };
    s.len() as u128 + n * new.len() as u128
}

/// Any number in a format string (a width or precision) over the limit.
fn format_estimate(fmt: &str, args_units: usize) -> u128 {
    let mut widest = 0u128;
    let mut cur = 0u128;
    for c in fmt.chars() {
        if let Some(d) = c.to_digit(10) {
            cur = cur.saturating_mul(10).saturating_add(d as u128);
            widest = widest.max(cur);
        } else {
            cur = 0;
        }
    }
    // Each argument may be padded to the widest width.
    fmt.len() as u128 + args_units as u128 + widest.saturating_mul(args_units.max(1) as u128)
}

/// The whole size of a filter's subject, charged (the filter walks it).
fn deep(v: Option<&Value>) -> Result<usize, Error> {
    let units = v.map_or(Ok(0), measure)?;
    charge(units)?;
    Ok(units)
}

/// Checks a filter's arguments before it runs.
fn filter_precheck(name: &str, args: &[Value], in_units: usize) -> Result<(), Error> {
    let pos = positional(args);
    let subject = pos.first().copied();
    let what = format!("the {name} filter");
    match name {
        "indent" => {
            let s = str_len(subject);
            let lines = subject
                .and_then(|v| v.as_str())
                .map_or(0, |s| s.lines().count())
                + 1;
            let width = match pos.get(1).copied().or(kwarg(args, "width").as_ref()) {
                Some(w) if w.as_str().is_some() => str_len(Some(w)) as u128,
                Some(w) => match as_count(Some(w)) {
                    Some(n) if n >= 0 => n as u128,
                    _ => return Err(err("indent: the width must be a non-negative integer")),
                },
                None => 4,
            };
            estimate(&what, s as u128 + lines as u128 * width)
        }
        "replace" => {
            let s = subject.and_then(|v| v.as_str()).unwrap_or("");
            let old = pos.get(1).and_then(|v| v.as_str()).unwrap_or("");
            let new = pos.get(2).and_then(|v| v.as_str()).unwrap_or("");
            estimate(&what, replace_estimate(s, old, new))
        }
        "join" => {
            let n = subject.and_then(|v| v.len()).unwrap_or(0) as u128;
            let sep = pos
                .get(1)
                .copied()
                .or(kwarg(args, "d").as_ref())
                .map_or(0, |v| str_len(Some(v)));
            let items = subject.map_or(Ok(0), measure)?;
            estimate(&what, items as u128 + n * sep as u128)
        }
        "batch" | "slice" => {
            let n = pos.get(1).copied().and_then(|v| as_count(Some(v)));
            match n {
                Some(n) if n >= 1 && n <= MAX_VALUE as i128 => {
                    let len = subject.and_then(|v| v.len()).unwrap_or(0) as u128;
                    estimate(&what, len + 2 * n as u128)
                }
                _ => Err(err(format!(
                    "{name}: the count must be between 1 and {MAX_VALUE}"
                ))),
            }
        }
        "format" => {
            let fmt = subject.and_then(|v| v.as_str()).unwrap_or("");
            let mut units = 0usize;
            for a in pos.get(1..).unwrap_or(&[]) {
                units = units.saturating_add(measure(a)?);
            }
            estimate(&what, format_estimate(fmt, units.max(in_units)))
        }
        // These write out or copy the whole value: measure it first.
        "escape" | "e" => estimate(&what, 6 * deep(subject)? as u128),
        "upper" | "lower" | "title" | "capitalize" | "string" | "pprint" | "list" | "items"
        | "dictsort" | "sort" | "unique" | "reverse" | "sum" | "tojson" => {
            estimate(&what, 3 * deep(subject)? as u128)
        }
        _ => Ok(()),
    }
}

/// Checks a Python string method's arguments before it runs.
fn method_precheck(value: &Value, method: &str, args: &[Value]) -> Result<(), Error> {
    let s = value.as_str().unwrap_or("");
    let what = format!("the .{method}() method");
    match method {
        "replace" => {
            let old = args.first().and_then(|v| v.as_str()).unwrap_or("");
            let new = args.get(1).and_then(|v| v.as_str()).unwrap_or("");
            estimate(&what, replace_estimate(s, old, new))
        }
        "join" => {
            let mut units = 0usize;
            let mut n = 0u128;
            if let Some(items) = args.first() {
                units = measure(items)?;
                n = items.len().unwrap_or(0) as u128;
            }
            estimate(&what, units as u128 + n * s.len() as u128)
        }
        "format" => {
            let mut units = 0;
            for a in args {
                units += measure(a)?;
            }
            estimate(&what, format_estimate(s, units))
        }
        "upper" | "lower" | "title" | "capitalize" => estimate(&what, 3 * s.len() as u128),
        _ => Ok(()),
    }
}

/// What an input costs: its text's bytes, or 1 for anything else (charging a
/// list's length would make `messages|length` in a loop quadratic; filters
/// that walk a whole list measure it in their pre-check). Results are
/// measured whole.
fn shallow(v: &Value) -> usize {
    1 + match v.kind() {
        ValueKind::String => v.as_str().map_or(0, str::len),
        ValueKind::Bytes => v.as_bytes().map_or(0, <[u8]>::len),
        _ => 0,
    }
}

fn charged_inputs(args: &[Value]) -> Result<usize, Error> {
    let mut units = 0usize;
    for a in args {
        units = units.saturating_add(shallow(a));
    }
    charge(units)?;
    Ok(units)
}

fn checked_result(v: Value) -> Result<Value, Error> {
    charge(measure(&v)?)?;
    Ok(v)
}

macro_rules! builtins {
    ($($name:literal => $f:path),* $(,)?) => {
        vec![$(($name, Value::from_function($f))),*]
    };
}

/// Registers the wrapped filters, tests, functions, methods and formatter.
/// `own_filters` (e.g. `tojson`) are wrapped the same way as the built-ins.
pub fn install(env: &mut Environment<'static>, own_filters: Vec<(&'static str, Value)>) {
    use minijinja::{filters as f, tests as t};
    let mut filters = builtins![
        "safe" => f::safe, "escape" => f::escape, "e" => f::escape,
        "lower" => f::lower, "upper" => f::upper, "title" => f::title,
        "capitalize" => f::capitalize, "replace" => f::replace,
        "length" => f::length, "count" => f::length, "dictsort" => f::dictsort,
        "items" => f::items, "reverse" => f::reverse, "trim" => f::trim,
        "join" => f::join, "split" => f::split, "lines" => f::lines,
        "default" => f::default, "d" => f::default, "round" => f::round,
        "abs" => f::abs, "int" => f::int, "float" => f::float, "attr" => f::attr,
        "first" => f::first, "last" => f::last, "min" => f::min, "max" => f::max,
        "sort" => f::sort, "list" => f::list, "string" => f::string,
        "bool" => f::bool, "batch" => f::batch, "slice" => f::slice,
        "sum" => f::sum, "indent" => f::indent, "select" => f::select,
        "reject" => f::reject, "selectattr" => f::selectattr,
        "rejectattr" => f::rejectattr, "map" => f::map, "groupby" => f::groupby,
        "unique" => f::unique, "chain" => f::chain, "zip" => f::zip,
        "pprint" => f::pprint, "format" => f::format,
    ];
    filters.extend(own_filters);
    for (name, orig) in filters {
        env.add_filter(name, move |state: &State, args: Rest<Value>| {
            let units = charged_inputs(&args)?;
            filter_precheck(name, &args, units)?;
            checked_result(orig.call(state, &args)?)
        });
    }
    let tests = builtins![
        "undefined" => t::is_undefined, "defined" => t::is_defined, "none" => t::is_none,
        "safe" => t::is_safe, "escaped" => t::is_safe, "boolean" => t::is_boolean,
        "odd" => t::is_odd, "even" => t::is_even, "divisibleby" => t::is_divisibleby,
        "number" => t::is_number, "integer" => t::is_integer, "int" => t::is_integer,
        "float" => t::is_float, "string" => t::is_string, "sequence" => t::is_sequence,
        "iterable" => t::is_iterable, "mapping" => t::is_mapping,
        "startingwith" => t::is_startingwith, "endingwith" => t::is_endingwith,
        "lower" => t::is_lower, "upper" => t::is_upper, "sameas" => t::is_sameas,
        "in" => t::is_in, "true" => t::is_true, "false" => t::is_false,
        "filter" => t::is_filter, "test" => t::is_test,
        "eq" => t::is_eq, "equalto" => t::is_eq, "==" => t::is_eq,
        "ne" => t::is_ne, "!=" => t::is_ne, "lt" => t::is_lt, "<" => t::is_lt,
        "le" => t::is_le, "<=" => t::is_le, "gt" => t::is_gt, ">" => t::is_gt,
        "ge" => t::is_ge, ">=" => t::is_ge,
    ];
    for (name, orig) in tests {
        env.add_test(name, move |state: &State, args: Rest<Value>| {
            charged_inputs(&args)?;
            Ok(orig.call(state, &args)?.is_true())
        });
    }
    let functions = builtins![
        "range" => minijinja::functions::range,
        "dict" => minijinja::functions::dict,
        "namespace" => minijinja::functions::namespace,
    ];
    for (name, orig) in functions {
        env.add_function(name, move |state: &State, args: Rest<Value>| {
            charged_inputs(&args)?;
            checked_result(orig.call(state, &args)?)
        });
    }
    // The head of a linear accumulator: the operator copies it, so its size
    // is charged (bounding the copying to MAX_WORK) and capped.
    env.add_function(GROW, |v: Value| -> Result<Value, Error> {
        charge(measure(&v)?)?;
        Ok(v)
    });
    // `debug()` prints the whole context, unchecked.
    env.add_function("debug", || -> Result<Value, Error> {
        Err(err("debug() is not available in chat templates"))
    });
    env.set_unknown_method_callback(|state, value, method, args| {
        charge(shallow(value))?;
        charged_inputs(args)?;
        method_precheck(value, method, args)?;
        checked_result(minijinja_contrib::pycompat::unknown_method_callback(
            state, value, method, args,
        )?)
    });
    env.set_formatter(|out, state, value| {
        charge(measure(value)?)?;
        minijinja::escape_formatter(out, state, value)
    });
}

/// Runs `f` on a fresh thread with a [`STACK`]-byte stack, turning a panic
/// into `Err(message)`.
pub fn on_render_thread<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("chat-template".into())
            .stack_size(STACK)
            .spawn_scoped(scope, || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    reset_work();
                    f()
                }))
            })
            .map_err(|e| format!("cannot start the template thread: {e}"))?;
        match handle.join() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(p)) | Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(format!("the template engine panicked: {msg}"))
            }
        }
    })
}

// ---- the static scan ----------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ident,
    Str,
    Int,
    Float,
    Op,
}

#[derive(Clone, Debug)]
struct Tok<'a> {
    kind: Kind,
    text: &'a str,
    /// The literal's length (strings) or value (integers).
    n: u128,
}

/// One `{% %}` or `{{ }}` tag: its tokens and whether it is a statement.
struct Tag<'a> {
    stmt: bool,
    toks: Vec<Tok<'a>>,
}

fn scan_error(msg: impl std::fmt::Display) -> String {
    format!("the template is refused: {msg}")
}

/// The tags of `src` (comments and `raw` blocks skipped).
fn tags(src: &str) -> Result<Vec<Tag<'_>>, String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_raw = false;
    while i + 1 < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        match b[i + 1] {
            b'#' => {
                i = src[i + 2..].find("#}").map_or(b.len(), |p| i + 2 + p + 2);
            }
            c @ (b'{' | b'%') => {
                let stmt = c == b'%';
                // `{%-`/`{{+`: whitespace control, not an operator.
                let start = i + 2 + usize::from(matches!(b.get(i + 2), Some(b'-' | b'+')));
                let (toks, end) = tokenize(src, start, if stmt { b'%' } else { b'}' })?;
                i = end;
                let first = toks.first().map(|t| t.text);
                if in_raw {
                    if stmt && first == Some("endraw") {
                        in_raw = false;
                    }
                    continue;
                }
                if stmt && first == Some("raw") {
                    in_raw = true;
                    continue;
                }
                out.push(Tag { stmt, toks });
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// Tokens from `start` up to the closing `close` + `}`; returns the end offset.
fn tokenize(src: &str, start: usize, close: u8) -> Result<(Vec<Tok<'_>>, usize), String> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = start;
    let mut depth = 0usize;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // `-`/`+` whitespace control before the closing delimiter.
        if depth == 0 {
            let j = if (c == b'-' || c == b'+') && b.get(i + 1) == Some(&close) {
                i + 1
            } else {
                i
            };
            if b[j] == close && b.get(j + 1) == Some(&b'}') {
                return Ok((toks, j + 2));
            }
        }
        let s = i;
        if c == b'\'' || c == b'"' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            toks.push(Tok {
                kind: Kind::Str,
                text: &src[s..i],
                n: (i - s).saturating_sub(2) as u128,
            });
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            let text = &src[s..i];
            let digits: String = text.chars().filter(|c| *c != '_').collect();
            match digits.parse::<u128>() {
                Ok(n) => toks.push(Tok {
                    kind: Kind::Int,
                    text,
                    n,
                }),
                Err(_) => toks.push(Tok {
                    kind: Kind::Float,
                    text,
                    n: 0,
                }),
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
                i += 1;
            }
            toks.push(Tok {
                kind: Kind::Ident,
                text: &src[s..i],
                n: 0,
            });
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let len = if matches!(two, "**" | "//" | "==" | "!=" | "<=" | ">=") {
                2
            } else {
                1
            };
            match c {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            i += len;
            toks.push(Tok {
                kind: Kind::Op,
                text: &src[s..i],
                n: 0,
            });
        }
    }
    // Unterminated: the parser reports it.
    Ok((toks, b.len()))
}

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
    "recursive",
];

/// What an expression can hold: the variables it reads and whether it
/// combines them (growth) or picks one (no growth).
#[derive(Default)]
struct Expr {
    names: Vec<String>,
    growth: bool,
    /// Calls to macros (their arguments flow into the macro parameters).
    macro_calls: usize,
}

fn ends_operand(t: Option<&Tok<'_>>) -> bool {
    match t {
        Some(t) => match t.kind {
            Kind::Op => matches!(t.text, ")" | "]" | "}"),
            Kind::Ident => {
                !KEYWORDS.contains(&t.text)
                    || matches!(
                        t.text,
                        "true" | "false" | "none" | "True" | "False" | "None"
                    )
            }
            _ => true,
        },
        None => false,
    }
}

struct Scan {
    macros: Vec<String>,
    namespaces: Vec<String>,
}

impl Scan {
    fn expr(&self, toks: &[Tok<'_>]) -> Result<Expr, String> {
        let mut e = Expr::default();
        // Bracket kinds: b'c' call, b'g' group, b'l' list, b'd' dict, b's' subscript.
        let mut stack: Vec<u8> = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            let prev = if i > 0 { toks.get(i - 1) } else { None };
            let next = toks.get(i + 1);
            match (t.kind, t.text) {
                (Kind::Op, "~") => e.growth = true,
                (Kind::Op, "+") => {
                    // `n + 1` is arithmetic (`'s' + 1` is an error).
                    let numeric = |t: Option<&Tok<'_>>| {
                        t.is_some_and(|t| matches!(t.kind, Kind::Int | Kind::Float))
                    };
                    if !numeric(prev) && !numeric(next) {
                        e.growth = true;
                    }
                }
                (Kind::Op, "*") => {
                    let (Some(a), Some(b)) = (prev, next) else {
                        return Err(scan_error("`*` needs two literal operands"));
                    };
                    let lit = |t: &Tok<'_>| matches!(t.kind, Kind::Str | Kind::Int | Kind::Float);
                    let after = toks.get(i + 2).map(|t| t.text);
                    let before = if i >= 2 {
                        toks.get(i - 2).map(|t| t.text)
                    } else {
                        None
                    };
                    if !lit(a)
                        || !lit(b)
                        || matches!(after, Some("**" | "." | "[" | "(" | "|"))
                        || matches!(before, Some("." | "|"))
                    {
                        return Err(scan_error(
                            "`*` is only allowed between two literals (as in '-' * 3)",
                        ));
                    }
                    let bytes = match (a.kind, b.kind) {
                        (Kind::Str, Kind::Int) => a.n.saturating_mul(b.n),
                        (Kind::Int, Kind::Str) => b.n.saturating_mul(a.n),
                        _ => 0,
                    };
                    if bytes > MAX_LITERAL_REPEAT as u128 {
                        return Err(scan_error(format!(
                            "a repeated string of more than {} MiB",
                            MAX_LITERAL_REPEAT >> 20
                        )));
                    }
                }
                (Kind::Op, "(") => {
                    if ends_operand(prev) {
                        stack.push(b'c');
                        let callee = prev.map_or("", |t| t.text);
                        let method = i >= 2 && toks[i - 2].text == ".";
                        let on_self = i >= 3 && method && toks[i - 3].text == "self";
                        if on_self
                            || (!method
                                && (self.macros.iter().any(|m| m == callee)
                                    || matches!(callee, "caller" | "loop" | "super")))
                        {
                            e.macro_calls += 1;
                        }
                        if method && callee == "cycle" && next.map(|t| t.text) == Some(")") {
                            return Err(scan_error("loop.cycle() needs at least one argument"));
                        }
                    } else {
                        stack.push(b'g');
                    }
                }
                (Kind::Op, "[") => {
                    if ends_operand(prev) {
                        stack.push(b's');
                    } else {
                        stack.push(b'l');
                        e.growth = true;
                    }
                }
                (Kind::Op, "{") => {
                    stack.push(b'd');
                    e.growth = true;
                }
                (Kind::Op, ")" | "]" | "}") => {
                    stack.pop();
                }
                (Kind::Op, ",") => {
                    if matches!(stack.last(), None | Some(b'g')) {
                        e.growth = true; // a tuple
                    }
                }
                (Kind::Ident, name) => {
                    let attr = prev.is_some_and(|p| p.text == "." || p.text == "|");
                    let test = prev.is_some_and(|p| {
                        p.text == "is" || (p.text == "not" && i >= 2 && toks[i - 2].text == "is")
                    });
                    let kwarg =
                        next.is_some_and(|n| n.text == "=") && matches!(stack.last(), Some(b'c'));
                    if attr || test || kwarg || KEYWORDS.contains(&name) {
                        continue;
                    }
                    let follows = next.map_or("", |n| n.text);
                    if (self.macros.iter().any(|m| m == name) || name == "caller") && follows != "("
                    {
                        return Err(scan_error(format!("the macro {name} is used as a value")));
                    }
                    if name == "self" && follows != "." {
                        return Err(scan_error("`self` is used as a value"));
                    }
                    if self.namespaces.iter().any(|n| n == name) && follows != "." {
                        return Err(scan_error(format!(
                            "the namespace {name} is used as a value"
                        )));
                    }
                    e.names.push(name.to_string());
                }
                _ => {}
            }
        }
        Ok(e)
    }
}

/// A block the scan is inside: one that bounds how often its body runs by the
/// caller's input or a small literal, or one that does not (a loop over
/// anything else, a macro, `call` or `block` body, which can run again and
/// again or recurse).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Fine,
    Unbounded,
}

/// Most iterations of a literal `range(n)` loop that still counts as bounded.
pub const MAX_LITERAL_LOOP: u128 = 1024;

/// The inputs whose size the caller controls (the renderer bounds them).
const INPUTS: [&str; 3] = ["messages", "tools", "documents"];

/// Filters that keep or shrink a list's length.
const SAME_LENGTH: [&str; 9] = [
    "reverse",
    "selectattr",
    "rejectattr",
    "select",
    "reject",
    "list",
    "sort",
    "unique",
    "map",
];

/// The index of the bracket closing the one at `open`.
fn matching_close(t: &[Tok<'_>], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, x) in t.iter().enumerate().skip(open) {
        match x.text {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether iterating `t` runs at most as often as the caller's input is long
/// (`messages`, `messages[1:]`, `messages|selectattr(...)|reverse`, a
/// variable only ever set to such), or a small literal count (`[a, b]`,
/// `range(3)`).
fn bounded_iter(t: &[Tok<'_>], vars: &[String]) -> bool {
    let Some(first) = t.first() else {
        return false;
    };
    if first.text == "[" {
        return matching_close(t, 0) == Some(t.len() - 1);
    }
    if first.text == "range" {
        let args = match t {
            [_, open, args @ .., close] if open.text == "(" && close.text == ")" => args,
            _ => return false,
        };
        return !args.is_empty()
            && args.iter().enumerate().all(|(i, a)| {
                if i % 2 == 0 {
                    a.kind == Kind::Int && a.n <= MAX_LITERAL_LOOP
                } else {
                    a.text == ","
                }
            });
    }
    if first.kind != Kind::Ident || !vars.iter().any(|v| v == first.text) {
        return false;
    }
    let mut i = 1;
    while i < t.len() {
        match t[i].text {
            "[" => {
                // A slice with literal bounds.
                let Some(close) = matching_close(t, i) else {
                    return false;
                };
                let inner = &t[i + 1..close];
                if !inner.iter().any(|x| x.text == ":")
                    || !inner
                        .iter()
                        .all(|x| x.kind == Kind::Int || matches!(x.text, ":" | "-"))
                {
                    return false;
                }
                i = close + 1;
            }
            "|" => {
                if !t.get(i + 1).is_some_and(|f| SAME_LENGTH.contains(&f.text)) {
                    return false;
                }
                i += 2;
                if t.get(i).map(|x| x.text) == Some("(") {
                    let Some(close) = matching_close(t, i) else {
                        return false;
                    };
                    i = close + 1;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Whether a `set` tag (its tokens after `set`) captures a block (`set x`,
/// `set x | f(a=1)`) rather than assigning an expression.
fn is_block_set(after_set: &[Tok<'_>]) -> bool {
    match after_set.iter().position(|x| x.text == "=") {
        None => true,
        Some(eq) => after_set[..eq].iter().any(|x| x.text == "|"),
    }
}

/// The caller's inputs and the variables only ever set to a bounded iterable
/// of them (`{% set loop_messages = messages[1:] %}`).
fn bounded_vars<'a>(tags: &[Tag<'a>], params: &[String], namespaces: &[String]) -> Vec<String> {
    let mut ok: HashMap<&'a str, bool> = HashMap::new();
    let inputs: Vec<String> = INPUTS.iter().map(|s| s.to_string()).collect();
    for tag in tags.iter().filter(|t| t.stmt) {
        let t = &tag.toks;
        let mut assigned = |name: &'a str, bounded: bool| {
            *ok.entry(name).or_insert(true) &= bounded;
        };
        match t.first().map(|x| x.text) {
            Some("set") => {
                if t.len() > 3 && t[2].text == "=" && t[1].kind == Kind::Ident {
                    assigned(t[1].text, bounded_iter(&t[3..], &inputs));
                } else {
                    let end = t.iter().position(|x| x.text == "=").unwrap_or(t.len());
                    for x in t[1..end.max(1)].iter().filter(|x| x.kind == Kind::Ident) {
                        assigned(x.text, false);
                    }
                }
            }
            Some("for") => {
                let in_at = t.iter().position(|x| x.text == "in").unwrap_or(t.len());
                for x in t[1..in_at.max(1)].iter().filter(|x| x.kind == Kind::Ident) {
                    assigned(x.text, false);
                }
            }
            Some("with") => {
                for (i, x) in t.iter().enumerate() {
                    if x.kind == Kind::Ident && t.get(i + 1).map(|y| y.text) == Some("=") {
                        assigned(x.text, false);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<String> = INPUTS
        .iter()
        .filter(|n| ok.get(*n).copied().unwrap_or(true))
        .map(|n| n.to_string())
        .collect();
    out.extend(
        ok.iter()
            .filter(|(n, b)| **b && !INPUTS.contains(n))
            .map(|(n, _)| n.to_string()),
    );
    out.retain(|n| !params.contains(n) && !namespaces.contains(n));
    out
}

/// Follows the block structure (the parser has already checked it nests).
fn track_blocks(open: &mut Vec<Open>, t: &[Tok<'_>], vars: &[String]) {
    let Some(kw) = t.first().map(|x| x.text) else {
        return;
    };
    match kw {
        "for" => {
            let in_at = t.iter().position(|x| x.text == "in").unwrap_or(t.len());
            let recursive = t.iter().any(|x| x.text == "recursive");
            // The iterable ends at a loop filter (`if`) or `recursive`.
            let mut end = t.len();
            let mut depth = 0usize;
            for (i, x) in t.iter().enumerate().skip(in_at + 1) {
                match x.text {
                    "(" | "[" | "{" => depth += 1,
                    ")" | "]" | "}" => depth = depth.saturating_sub(1),
                    "if" | "recursive" if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let iter = &t[(in_at + 1).min(end)..end];
            open.push(if !recursive && bounded_iter(iter, vars) {
                Open::Fine
            } else {
                Open::Unbounded
            });
        }
        "macro" | "call" | "block" => open.push(Open::Unbounded),
        "if" | "with" | "filter" | "autoescape" => open.push(Open::Fine),
        "set" if is_block_set(&t[1..]) => open.push(Open::Fine),
        "endfor" | "endmacro" | "endcall" | "endblock" | "endif" | "endwith" | "endfilter"
        | "endautoescape" | "endset" => {
            open.pop();
        }
        _ => {}
    }
}

/// A candidate linear accumulator: `set v = v + e` / `set v = v ~ e`.
struct Accumulator {
    /// Its index in the assignments.
    assign: usize,
    /// The byte span of the head `v` in the source.
    head: (usize, usize),
    /// `e`.
    rest: Expr,
    /// Whether every enclosing block runs a bounded number of times.
    bounded: bool,
}

/// For `set <targets> = <rhs>`: the number of head tokens if `rhs` starts
/// with exactly the (single) target followed by `+` or `~` and more.
fn accumulator_head(targets: &[Tok<'_>], rhs: &[Tok<'_>]) -> Option<usize> {
    let simple = match targets {
        [v] => v.kind == Kind::Ident,
        [ns, dot, field] => ns.kind == Kind::Ident && dot.text == "." && field.kind == Kind::Ident,
        _ => false,
    };
    let n = targets.len();
    let same = rhs.len() > n + 1 && targets.iter().zip(rhs).all(|(a, b)| a.text == b.text);
    (simple && same && matches!(rhs[n].text, "+" | "~")).then_some(n)
}

/// The byte span of `toks` (non-empty, borrowed from `src`) in `src`.
fn span(src: &str, toks: &[Tok<'_>]) -> (usize, usize) {
    let base = src.as_ptr() as usize;
    let first = toks.first().map_or(0, |t| t.text.as_ptr() as usize - base);
    let last = toks
        .last()
        .map_or(0, |t| t.text.as_ptr() as usize - base + t.text.len());
    (first, last)
}

/// Whether the values named by `names` can never hold `target`'s value (no
/// path of assignments from `target`, no macro output, `caller`, `self`).
fn independent(
    assigns: &[Assign],
    names: &[String],
    target: &str,
    macros: &[String],
    node: &dyn Fn(&str) -> String,
) -> bool {
    let mut seen: Vec<String> = Vec::new();
    let mut todo: Vec<String> = names.iter().map(|n| node(n)).collect();
    while let Some(n) = todo.pop() {
        if seen.contains(&n) {
            continue;
        }
        if n == target || macros.contains(&n) || matches!(n.as_str(), "caller" | "self" | "super") {
            return false;
        }
        for a in assigns.iter().filter(|a| a.target == n) {
            if a.from.macro_calls > 0 {
                return false;
            }
            todo.extend(a.from.names.iter().map(|m| node(m)));
        }
        seen.push(n);
    }
    true
}

/// One flow of values into a variable.
struct Assign {
    target: String,
    from: Expr,
}

/// Refuses templates whose operators could grow a value without bound (see the
/// module doc). Returns the source to compile: `src` with the head of every
/// linear accumulator (`ns.s` in `ns.s + e`) wrapped in [`GROW`], which charges
/// its size to the work budget and caps it.
pub fn check_source(src: &str) -> Result<String, String> {
    if src.len() > MAX_SOURCE {
        return Err(scan_error(format!(
            "its source is longer than {} KiB",
            MAX_SOURCE >> 10
        )));
    }
    let tags = tags(src)?;
    // Pass 1: macro names, namespaces and parameters.
    let mut scan = Scan {
        macros: Vec::new(),
        namespaces: Vec::new(),
    };
    let mut params: Vec<String> = Vec::new();
    let mut literals = 0usize;
    for tag in &tags {
        let t = &tag.toks;
        for (i, tok) in t.iter().enumerate() {
            if (tok.text == "[" && !ends_operand(if i > 0 { t.get(i - 1) } else { None }))
                || tok.text == "{"
            {
                literals += 1;
            }
        }
        if !tag.stmt || t.is_empty() {
            continue;
        }
        match t[0].text {
            "include" | "import" | "from" | "extends" => {
                return Err(scan_error(format!(
                    "`{}` is not available in chat templates",
                    t[0].text
                )));
            }
            "macro" => {
                if let Some(name) = t.get(1) {
                    scan.macros.push(name.text.to_string());
                }
                params.extend(
                    t.iter()
                        .skip(2)
                        .filter(|x| x.kind == Kind::Ident)
                        .map(|x| x.text.to_string()),
                );
            }
            "call" if t.get(1).map(|x| x.text) == Some("(") => {
                let close = t.iter().position(|x| x.text == ")").unwrap_or(t.len());
                params.extend(
                    t[2..close]
                        .iter()
                        .filter(|x| x.kind == Kind::Ident)
                        .map(|x| x.text.to_string()),
                );
            }
            "for" if t.iter().any(|x| x.text == "recursive") => {
                let in_at = t.iter().position(|x| x.text == "in").unwrap_or(t.len());
                params.extend(
                    t[1..in_at]
                        .iter()
                        .filter(|x| x.kind == Kind::Ident)
                        .map(|x| x.text.to_string()),
                );
            }
            "set" => {
                if let (Some(name), Some(eq), Some(call)) = (t.get(1), t.get(2), t.get(3)) {
                    if eq.text == "=" && call.text == "namespace" {
                        scan.namespaces.push(name.text.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    if literals > MAX_LITERAL_BRACKETS {
        return Err(scan_error(format!(
            "more than {MAX_LITERAL_BRACKETS} list or dict literals"
        )));
    }
    const PARAMS: &str = "\u{0}params";
    let node = |name: &str| -> String {
        if params.iter().any(|p| p == name) {
            PARAMS.to_string()
        } else {
            name.to_string()
        }
    };
    let bounded_vars = bounded_vars(&tags, &params, &scan.namespaces);
    // Pass 2: the assignments.
    let mut assigns: Vec<Assign> = Vec::new();
    let mut block_sets: Vec<(String, Expr)> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut accumulators: Vec<Accumulator> = Vec::new();
    for tag in &tags {
        let t = &tag.toks;
        if tag.stmt {
            track_blocks(&mut open, t, &bounded_vars);
        }
        let mut exprs: Vec<(Option<String>, &[Tok<'_>])> = Vec::new();
        if !tag.stmt {
            exprs.push((None, t));
        } else if let Some(kw) = t.first().map(|x| x.text) {
            match kw {
                "set" => {
                    match t.iter().position(|x| x.text == "=") {
                        Some(eq) => {
                            if let Some(head) = accumulator_head(&t[1..eq], &t[eq + 1..]) {
                                accumulators.push(Accumulator {
                                    assign: assigns.len(),
                                    head: span(src, &t[eq + 1..eq + 1 + head]),
                                    rest: scan.expr(&t[eq + 2 + head..])?,
                                    bounded: !open.contains(&Open::Unbounded),
                                });
                            }
                            for target in t[1..eq].iter().filter(|x| x.kind == Kind::Ident).take(1)
                            {
                                exprs.push((Some(target.text.to_string()), &t[eq + 1..]));
                            }
                            // `set a, b = ...` unpacks: every name gets the value.
                            for target in t[1..eq].iter().filter(|x| x.kind == Kind::Ident).skip(1)
                            {
                                if t[1..eq].iter().any(|x| x.text == ",") {
                                    exprs.push((Some(target.text.to_string()), &t[eq + 1..]));
                                }
                            }
                        }
                        None => {
                            let target = t.get(1).map_or("", |x| x.text).to_string();
                            block_sets.push((
                                target,
                                Expr {
                                    growth: true,
                                    ..Expr::default()
                                },
                            ));
                            continue;
                        }
                    }
                }
                "endset" => {
                    if let Some((target, from)) = block_sets.pop() {
                        assigns.push(Assign {
                            target: node(&target),
                            from,
                        });
                    }
                    continue;
                }
                "for" => {
                    let in_at = t.iter().position(|x| x.text == "in").unwrap_or(t.len());
                    let end = t
                        .iter()
                        .position(|x| x.text == "recursive")
                        .unwrap_or(t.len());
                    let rhs = &t[(in_at + 1).min(end)..end];
                    for target in t[1..in_at].iter().filter(|x| x.kind == Kind::Ident) {
                        exprs.push((Some(target.text.to_string()), rhs));
                    }
                }
                "with" => {
                    // `with a = e1, b = e2`: each target from the whole tag.
                    for (i, x) in t.iter().enumerate().skip(1) {
                        if x.kind == Kind::Ident && t.get(i + 1).map(|y| y.text) == Some("=") {
                            exprs.push((Some(x.text.to_string()), &t[i + 2..]));
                        }
                    }
                }
                "macro" | "call" | "block" | "filter" | "endmacro" | "endcall" | "endblock"
                | "endfilter" | "endfor" | "endif" | "endwith" | "else" | "break" | "continue"
                | "raw" | "endraw" | "autoescape" | "endautoescape" => {
                    if kw == "call" {
                        // The callee's arguments.
                        let start = if t.get(1).map(|x| x.text) == Some("(") {
                            t.iter()
                                .position(|x| x.text == ")")
                                .map_or(t.len(), |p| p + 1)
                        } else {
                            1
                        };
                        exprs.push((None, &t[start..]));
                    } else if kw == "macro" {
                        // Defaults flow into the parameters.
                        exprs.push((Some(PARAMS.to_string()), &t[2.min(t.len())..]));
                    }
                }
                _ => exprs.push((None, &t[1..])),
            }
        }
        for (target, toks) in exprs {
            let e = scan.expr(toks)?;
            if e.macro_calls > 0 {
                // Arguments flow into the parameters (growth if they combine).
                assigns.push(Assign {
                    target: PARAMS.to_string(),
                    from: Expr {
                        names: e.names.clone(),
                        growth: e.growth,
                        macro_calls: 0,
                    },
                });
            }
            // Prints inside a block `set` feed its target.
            if target.is_none() && !tag.stmt {
                for (_, from) in block_sets.iter_mut() {
                    from.names.extend(e.names.iter().cloned());
                }
            }
            if let Some(target) = target {
                assigns.push(Assign {
                    target: node(&target),
                    from: e,
                });
            }
        }
    }
    // A linear accumulator in a bounded place adds its other operand's units
    // once: its own count is the conversation's size, which the renderer
    // bounds (and GROW charges the copies).
    let mut rewrites: Vec<(usize, usize)> = Vec::new();
    for acc in accumulators {
        let target = &assigns[acc.assign].target;
        if acc.bounded
            && acc.rest.macro_calls == 0
            && target != PARAMS
            && independent(&assigns, &acc.rest.names, target, &scan.macros, &node)
        {
            assigns[acc.assign].from = Expr {
                growth: true,
                ..acc.rest
            };
            rewrites.push(acc.head);
        }
    }
    // Relax the unit bounds to a fixed point; past MAX_UNITS a value grows
    // without bound (or too far).
    let mut units: HashMap<String, u64> = HashMap::new();
    // Each round raises some bound (each at most MAX_UNITS) or ends.
    loop {
        let mut changed = false;
        for a in &assigns {
            let get = |n: &String| units.get(&node(n)).copied().unwrap_or(1);
            // A macro's output holds whatever it printed: a fresh value.
            let v = if a.from.growth || a.from.macro_calls > 0 {
                a.from.names.iter().map(get).fold(1u64, u64::saturating_add)
            } else {
                a.from.names.iter().map(get).max().unwrap_or(1)
            };
            let old = units.get(&a.target).copied().unwrap_or(1);
            if v > old {
                if v > MAX_UNITS {
                    return Err(scan_error(format!(
                        "the variable `{}` could grow without bound (it combines its own value, or more than {MAX_UNITS} values)",
                        a.target.trim_start_matches('\u{0}')
                    )));
                }
                units.insert(a.target.clone(), v);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut out = String::with_capacity(src.len() + rewrites.len() * (GROW.len() + 2));
    let mut at = 0;
    for (start, end) in rewrites {
        out.push_str(&src[at..start]);
        out.push_str(GROW);
        out.push('(');
        out.push_str(&src[start..end]);
        out.push(')');
        at = end;
    }
    out.push_str(&src[at..]);
    Ok(out)
}
