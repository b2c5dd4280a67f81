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

/// The DeepSeek-R1 (and R1-Distill) chat template: system turns accumulate
/// into `ns.system_prompt` with `ns.system_prompt + ...` in the loop.
const DEEPSEEK_R1: &str = concat!(
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}",
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}",
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}",
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}",
    "{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}",
    "{%- endif %}{%- endfor %}",
    "{{ bos_token }}{{ ns.system_prompt }}",
    "{%- for message in messages %}",
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}",
    "{%- if message['role'] == 'assistant' and 'tool_calls' in message %}{%- set ns.is_tool = false -%}",
    "{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none %}",
    "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}",
    "{%- else %}",
    "{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}",
    "{%- endif %}{%- set ns.is_first = true -%}{%- else %}",
    "{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}",
    "{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}",
    "{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}",
    "{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}",
    "{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}",
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}",
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}",
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}",
    "{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}",
    "{%- endfor -%}",
    "{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}",
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}",
);

fn deepseek() -> ChatTemplate {
    ChatTemplate::new(DEEPSEEK_R1, Some("<｜begin▁of▁sentence｜>".into()), None).unwrap()
}

#[test]
fn deepseek_r1_accumulating_template_loads_and_renders() {
    let t = deepseek();
    t.check_renders().unwrap();
    let turns = [
        ChatMessage::new("system", "You are a math tutor."),
        ChatMessage::new("system", "Answer briefly."),
        ChatMessage::new("user", "What is 2+2?"),
        ChatMessage::new("assistant", "<think>\nEasy.\n</think>\n\n4"),
    ];
    assert_eq!(
        t.render(&turns, true, None).unwrap(),
        "<｜begin▁of▁sentence｜>You are a math tutor.\n\nAnswer briefly.<｜User｜>What is 2+2?<｜Assistant｜>\n\n4<｜end▁of▁sentence｜><｜Assistant｜><think>\n"
    );
}

#[test]
fn accumulators_in_bounded_loops_load() {
    for src in [
        "{% set ns = namespace(s='') %}{% for m in messages[1:] %}{% set ns.s = ns.s ~ m.content %}{% endfor %}{{ ns.s }}",
        "{% set ns = namespace(s='') %}{% for m in messages|selectattr('role', 'equalto', 'user')|reverse %}{% set ns.s = ns.s ~ m.content ~ '|' %}{% endfor %}{{ ns.s }}",
        "{% set loop_messages = messages[1:] %}{% set ns = namespace(s='') %}{% for m in loop_messages %}{% set ns.s = ns.s + m.content %}{% endfor %}{{ ns.s }}",
        "{% set ns = namespace(s='') %}{% for i in range(3) %}{% for m in messages %}{% set ns.s = ns.s + m.content %}{% endfor %}{% endfor %}{{ ns.s }}",
        "{% set ns = namespace(l=[]) %}{% for x in ['a', 'b'] %}{% set ns.l = ns.l + [x] %}{% endfor %}{{ ns.l|join(',') }}",
    ] {
        let t = ChatTemplate::new(src, None, None).unwrap_or_else(|e| panic!("{src}: {e}"));
        t.render(&msgs(), false, None).unwrap();
    }
    let t = ChatTemplate::new(
        "{% set ns = namespace(s='') %}{% for x in ['a', 'b'] %}{% set ns.s = ns.s + x %}{% endfor %}{{ ns.s }}",
        None,
        None,
    )
    .unwrap();
    assert_eq!(t.render(&[], false, None).unwrap(), "ab");
}

#[test]
fn accumulators_in_unbounded_places_are_refused() {
    for src in [
        // A loop the template controls.
        "{% set ns = namespace(s='') %}{% for i in range(1000000) %}{% set ns.s = ns.s + 'x' %}{% endfor %}{{ ns.s|length }}",
        "{% set n = 5 %}{% set ns = namespace(s='') %}{% for i in range(n) %}{% set ns.s = ns.s + 'x' %}{% endfor %}",
        "{% set ns = namespace(s='') %}{% for i in range(0, 10**9) %}{% set ns.s = ns.s ~ 'x' %}{% endfor %}",
        "{% set ns = namespace(s='') %}{% for c in messages[0].content %}{% set ns.s = ns.s ~ 'x' %}{% endfor %}",
        "{% set messages = range(1000000) %}{% set ns = namespace(s='') %}{% for m in messages %}{% set ns.s = ns.s ~ 'x' %}{% endfor %}",
        // Recursion.
        "{% set ns = namespace(s='') %}{% macro f(n) %}{% set ns.s = ns.s + 'x' %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% set ns = namespace(s='') %}{% for m in messages recursive %}{% set ns.s = ns.s + 'x' %}{{ loop(messages) }}{% endfor %}",
        "{% set ns = namespace(s='') %}{% block b %}{% set ns.s = ns.s + 'x' %}{% endblock %}{% for m in messages %}{{ self.b() }}{% endfor %}",
        // Doubling, directly or through an alias or a macro's output.
        "{% set ns = namespace(s='x') %}{% for m in messages %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for m in messages %}{% set a = ns.s %}{% set ns.s = ns.s ~ a %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% macro m() %}{{ ns.s }}{% endmacro %}{% for x in messages %}{% set ns.s = ns.s ~ m() %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% macro m() %}{{ ns.s }}{% endmacro %}{% for x in messages %}{% set t = m() %}{% set ns.s = ns.s ~ t %}{% endfor %}",
        "{% set s = 'x' %}{% for m in messages %}{% set t %}{{ s }}{% endset %}{% set s = s ~ t %}{% endfor %}",
        // Whitespace control does not hide a tag from the scan.
        "{%- set ns = namespace(s='') %}{%- for i in range(1000000) %}{%- set ns.s = ns.s + 'x' -%}{%+ endfor %}",
        "{%- set ns = namespace(s='x') %}{%- for i in range(40) %}{%- set ns.s = ns.s ~ ns.s %}{%- endfor %}",
    ] {
        assert_contains(&refused(src), "could grow without bound");
    }
}

/// `n` messages of `len` bytes each, all with `role`.
fn many(n: usize, len: usize, role: &str) -> Vec<ChatMessage> {
    (0..n)
        .map(|_| ChatMessage::new(role, "x".repeat(len)))
        .collect()
}

#[test]
fn accumulating_a_huge_conversation_is_bounded() {
    let t = deepseek();
    // 20,000 turns of 1 KB, none accumulated: renders whole.
    let turns: Vec<ChatMessage> = (0..20_000)
        .map(|i| ChatMessage::new(["user", "assistant"][i % 2], "x".repeat(1000)))
        .collect();
    let start = Instant::now();
    let out = t.render(&turns, false, None).unwrap();
    let bos = "<｜begin▁of▁sentence｜>".len();
    let user = "<｜User｜>".len() + 1000;
    let assistant = "<｜Assistant｜>".len() + 1000 + "<｜end▁of▁sentence｜>".len();
    assert_eq!(out.len(), bos + 10_000 * (user + assistant));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // 20,000 system turns of 1 KB: each `+` copies the accumulated prompt,
    // which is charged to the work budget.
    let start = Instant::now();
    let e = t
        .render(&many(20_000, 1000, "system"), false, None)
        .unwrap_err();
    assert_contains(&e.to_string(), "the template did more than 128 MiB of work");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn an_accumulated_value_is_capped_in_size() {
    let t = deepseek();
    // Two 10 MB system turns: a 20 MB prompt, refused when printed.
    let e = t
        .render(&many(2, 10 << 20, "system"), false, None)
        .unwrap_err();
    assert_contains(&e.to_string(), "a value is larger than 16 MiB");
    // Three: refused when it grows on.
    let e = t
        .render(&many(3, 10 << 20, "system"), false, None)
        .unwrap_err();
    assert_contains(&e.to_string(), "a value is larger than 16 MiB");
}
