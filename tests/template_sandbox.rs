//! Hostile chat templates: each must fail with a clear error (at load or at
//! render), or render a bounded result, never panic, overflow the stack,
//! allocate without bound or run without bound.

use std::time::{Duration, Instant};

use tah::text::{ChatMessage, ChatTemplate};

fn msgs() -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", "hi")]
}

/// The load error for `src`.
fn refused(src: &str) -> String {
    match ChatTemplate::new(src, None, None) {
        Ok(_) => panic!("loaded: {src}"),
        Err(e) => e.to_string(),
    }
}

/// The render error for `src` (which loads), and how long it took.
fn fails(src: &str) -> (String, Duration) {
    let t = ChatTemplate::new(src, None, None).unwrap_or_else(|e| panic!("{src}: {e}"));
    let start = Instant::now();
    let e = t.render(&msgs(), true, None).expect_err(src).to_string();
    (e, start.elapsed())
}

fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "{text:?} lacks {part:?}");
}

#[test]
fn loop_cycle_without_arguments_is_refused() {
    let e = refused("{% for x in [1] %}{{ loop.cycle() }}{% endfor %}");
    assert_contains(&e, "loop.cycle() needs at least one argument");
    // With arguments it works.
    let t = ChatTemplate::new(
        "{% for x in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{% endfor %}",
        None,
        None,
    )
    .unwrap();
    assert_eq!(t.render(&[], false, None).unwrap(), "aba");
}

#[test]
fn deep_nesting_through_a_loop_is_refused() {
    for src in [
        "{% set ns = namespace(x=[]) %}{% for i in range(30000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
        "{% set ns = namespace(x=[]) %}{% for i in range(30000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x|tojson }}",
    ] {
        assert_contains(&refused(src), "the variable `ns` could grow without bound");
    }
}

#[test]
fn deep_nesting_through_a_filter_stops_at_the_depth_limit() {
    let (e, _) = fails(
        "{% set ns = namespace(x=[1]) %}{% for i in range(30000) %}{% set ns.x = ns.x|batch(1) %}{% endfor %}{{ ns.x }}",
    );
    assert_contains(&e, "a value is nested more than 100 deep");
}

#[test]
fn deep_source_nesting_is_a_syntax_error() {
    for src in [
        format!("{{{{ {}1{} }}}}", "(".repeat(100_000), ")".repeat(100_000)),
        format!(
            "{}x{}",
            "{% if true %}".repeat(10_000),
            "{% endif %}".repeat(10_000)
        ),
        format!("{{{{ {}1{} }}}}", "[".repeat(30_000), "]".repeat(30_000)),
    ] {
        let e = refused(&src);
        assert_contains(&e, "does not parse");
    }
}

#[test]
fn string_doubling_is_refused() {
    for src in [
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set s = 'x' %}{% for i in range(40) %}{% set s = s ~ s %}{% endfor %}",
        // Through an alias.
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set a = ns.s %}{% set ns.s = a ~ a %}{% endfor %}",
    ] {
        let e = refused(src);
        assert_contains(&e, "could grow without bound");
    }
}

#[test]
fn macro_doubling_its_argument_is_refused() {
    let e = refused("{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ d('x', 40) }}");
    assert_contains(&e, "the variable `params` could grow without bound");
}

#[test]
fn macro_recursion_hits_the_recursion_limit() {
    let (e, _) = fails("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert_contains(&e, "recursion");
    // caller() recursion and self-recursion of blocks end the same way.
    let (e, _) =
        fails("{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}{{ m() }}{% endcall %}");
    assert!(!e.is_empty());
}

#[test]
fn string_repetition_is_limited() {
    assert_contains(
        &refused("{{ 'x' * 10**9 }}"),
        "`*` is only allowed between two literals",
    );
    assert_contains(
        &refused("{{ 'x' * 1000000000 }}"),
        "a repeated string of more than 16 MiB",
    );
    assert_contains(
        &refused("{% set n = 5 %}{{ 'x' * n }}"),
        "`*` is only allowed between two literals",
    );
    assert_contains(
        &refused("{{ [1] * 3 }}"),
        "`*` is only allowed between two literals",
    );
    let t = ChatTemplate::new("{{ '-' * 3 }}{{ 2 * 3 }}", None, None).unwrap();
    assert_eq!(t.render(&[], false, None).unwrap(), "---6");
}

#[test]
fn growing_filters_refuse_huge_arguments() {
    for (src, part) in [
        (
            "{{ 'a\nb'|indent(1000000000) }}",
            "the indent filter would make a value larger than 16 MiB",
        ),
        (
            "{{ 'ab'|indent(width=-1) }}",
            "indent: the width must be a non-negative integer",
        ),
        (
            "{{ ('x' * 1000000)|replace('x', 'yyyyyyyyyyyyyyyyyyyy') }}",
            "the replace filter would make a value larger",
        ),
        (
            "{{ ('x' * 1000000).replace('x', 'yyyyyyyyyyyyyyyyyyyy') }}",
            "the .replace() method would make a value larger",
        ),
        (
            "{{ range(100000)|join('x' * 1000) }}",
            "the join filter would make a value larger",
        ),
        (
            "{{ ('x' * 1000).join(range(100000)|map('string')) }}",
            "the .join() method would make a value larger",
        ),
        (
            "{{ [1, 2]|batch(1000000000, 'x') }}",
            "batch: the count must be between 1 and",
        ),
        (
            "{{ [1, 2]|batch(0) }}",
            "batch: the count must be between 1 and",
        ),
        (
            "{{ [1, 2]|slice(0) }}",
            "slice: the count must be between 1 and",
        ),
        (
            "{{ [1, 2]|slice(1000000000) }}",
            "slice: the count must be between 1 and",
        ),
        (
            "{{ '%1000000000s'|format('x') }}",
            "the format filter would make a value larger",
        ),
        (
            "{{ '{:>1000000000}'.format('x') }}",
            "the .format() method would make a value larger",
        ),
        (
            "{{ [1]|tojson(indent=1000000000) }}",
            "tojson: indent must be between 0 and 64",
        ),
        (
            "{{ ('<' * 16000000)|escape }}",
            "the escape filter would make a value larger",
        ),
    ] {
        let (e, took) = fails(src);
        assert_contains(&e, part);
        assert!(took < Duration::from_secs(5), "{src}: {took:?}");
    }
}

#[test]
fn replace_loop_on_a_big_string_runs_out_of_work() {
    // 10 MB × 100,000 replaces: stops after ~13 of them.
    let (e, took) = fails(
        "{% set s = 'x' * 10000000 %}{% for i in range(100000) %}{% set t = s|replace('y', 'z') %}{% endfor %}",
    );
    assert_contains(&e, "the template did more than 128 MiB of work");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (e, took) = fails(
        "{% set s = 'x' * 10000000 %}{% for i in range(100000) %}{% set t = s.replace('y', 'z') %}{% endfor %}",
    );
    assert_contains(&e, "the template did more than 128 MiB of work");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn includes_and_imports_are_refused() {
    for src in [
        "{% include 'chat_template' %}",
        "{% import 'chat_template' as m %}",
        "{% from 'chat_template' import x %}",
        "{% extends 'chat_template' %}",
    ] {
        assert_contains(&refused(src), "is not available in chat templates");
    }
}

#[test]
fn aliasing_namespaces_and_macros_is_refused() {
    assert_contains(
        &refused("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}"),
        "the namespace ns is used as a value",
    );
    assert_contains(
        &refused("{% macro m() %}x{% endmacro %}{% set f = m %}{{ f() }}"),
        "the macro m is used as a value",
    );
    assert_contains(&refused("{% set s = self %}"), "`self` is used as a value");
}

#[test]
fn huge_numbers_and_ranges_fail_cleanly() {
    let (e, _) = fails("{{ range(10**18)|length }}");
    assert_contains(&e, "range");
    assert_contains(
        &refused("{{ 99999999999999999999999999999999999999999 * 99999999999999999 }}"),
        "invalid integer (too large)",
    );
    let (e, _) = fails("{{ 9999999999999999999999999999999999999 * 99999999999999999 }}");
    assert_contains(&e, "unable to calculate");
    let (e, _) =
        fails("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}");
    assert_contains(&e, "fuel");
}

#[test]
fn long_source_is_refused() {
    let src = "x".repeat(300 << 10);
    assert_contains(&refused(&src), "its source is longer than 256 KiB");
}

#[test]
fn dictsort_and_items_on_big_dicts_are_bounded() {
    // 100,000-entry dicts are fine; the sort is charged.
    let t = ChatTemplate::new(
        "{% set ns = namespace(d={}) %}{{ dict(a=1, b=2)|dictsort|length }}{{ dict(a=1).items()|list|length }}",
        None,
        None,
    )
    .unwrap();
    assert_eq!(t.render(&[], false, None).unwrap(), "21");
}

#[test]
fn debug_is_not_available() {
    let (e, _) = fails("{{ debug() }}");
    assert_contains(&e, "debug() is not available");
}

#[test]
fn templates_that_cannot_render_a_conversation_fail_the_check() {
    let t = ChatTemplate::new("{{ raise_exception('no') }}", None, None).unwrap();
    let e = t.check_renders().unwrap_err().to_string();
    assert_contains(
        &e,
        "it fails on a typical conversation (system, user, assistant, user): ",
    );
    assert_contains(&e, "no");
    // A template that refuses system turns still passes (Gemma does this).
    let t = ChatTemplate::new(
        "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok",
        None,
        None,
    )
    .unwrap();
    t.check_renders().unwrap();
}

#[test]
fn real_qwen3_template_renders_and_passes_the_check() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/tokenizers/qwen3-tokenizer_config.json"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let t = ChatTemplate::new(
        v["chat_template"].as_str().unwrap(),
        None,
        Some("<|im_end|>".into()),
    )
    .unwrap();
    t.check_renders().unwrap();
    assert_eq!(
        t.render(&msgs(), true, Some(false)).unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
}
