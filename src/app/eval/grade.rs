//! Grading a model's answer against the expected one.
//!
//! - [`extract_answer`]: the model's final answer — the content of the last
//!   `\boxed{…}` (braces balanced, so `\boxed{\frac{3}{4}}` is whole), else the
//!   last number in the text.
//! - [`parse_number`]: an answer's value, after taking away what does not change
//!   it: `$`, `%`, thousands separators, `\text{…}` wrappers and words around the
//!   number ("12 apples"), a trailing `.0`; fractions `3/4`, `\frac{3}{4}`,
//!   `\dfrac34`; a unicode minus.
//! - [`answers_match`]: numeric comparison when both sides have a value, else
//!   the texts compared without case and spaces.

/// The model's final answer in `output`: the last balanced `\boxed{…}` (or
/// `\fbox{…}`), else the last number. `None` when there is neither.
pub fn extract_answer(output: &str) -> Option<String> {
    if let Some(b) = last_boxed(output) {
        return Some(b.trim().to_string());
    }
    numbers(output).last().map(|n| n.text.to_string())
}

/// The content of the last `\boxed{…}` / `\fbox{…}` whose braces close.
pub fn last_boxed(s: &str) -> Option<&str> {
    let mut best: Option<(usize, &str)> = None;
    for tag in ["\\boxed", "\\fbox"] {
        let mut from = 0;
        while let Some(i) = s[from..].find(tag) {
            let at = from + i;
            from = at + tag.len();
            let rest = s[from..].trim_start();
            let open = s.len() - rest.len();
            if !rest.starts_with('{') {
                continue;
            }
            if let Some(inner) = braced(s, open) {
                if best.is_none_or(|(p, _)| at > p) {
                    best = Some((at, inner));
                }
            }
        }
    }
    best.map(|(_, inner)| inner)
}

/// The text between the `{` at byte `open` and its matching `}`.
fn braced(s: &str, open: usize) -> Option<&str> {
    let mut depth = 0usize;
    for (i, c) in s[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[open + 1..open + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// One number found in a text.
#[derive(Clone, Debug, PartialEq)]
pub struct Number<'a> {
    /// As written (sign, separators and `%` included).
    pub text: &'a str,
    pub value: f64,
}

/// Every number in `s`, in order: `-1,234.5`, `3/4`, `.5`, `45%`, `−7`. A comma
/// belongs to a number only when exactly three digits follow it (`1,234`), so a
/// list `1,2,3` or `1, 2, 3` is three numbers. A `-` is a sign only where no
/// letter or digit comes right before it (`3-4` is 3 and 4).
pub fn numbers(s: &str) -> Vec<Number<'_>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let mut j = i;
        let mut neg = false;
        let prev_ok = start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'.');
        if b[j] == b'-' && prev_ok {
            neg = true;
            j += 1;
        } else if s[j..].starts_with('\u{2212}') && prev_ok {
            neg = true;
            j += '\u{2212}'.len_utf8();
        }
        let digit_at = |k: usize| k < b.len() && b[k].is_ascii_digit();
        let starts = digit_at(j) || (j + 1 < b.len() && b[j] == b'.' && digit_at(j + 1));
        if !starts || (start > 0 && !neg && (b[start - 1].is_ascii_digit())) {
            i += s[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        // Integer part, with thousands separators.
        let int_start = j;
        while digit_at(j) {
            j += 1;
        }
        let mut digits: String = s[int_start..j].to_string();
        if j - int_start <= 3 && j > int_start {
            while j + 3 < b.len()
                && b[j] == b','
                && (1..=3).all(|k| digit_at(j + k))
                && !digit_at(j + 4)
            {
                digits.push_str(&s[j + 1..j + 4]);
                j += 4;
            }
        }
        // Decimals.
        if j + 1 < b.len() && b[j] == b'.' && digit_at(j + 1) {
            let d0 = j;
            j += 1;
            while digit_at(j) {
                j += 1;
            }
            digits.push_str(&s[d0..j]);
        }
        let mut value: f64 = digits.parse().unwrap_or(f64::NAN);
        // A fraction a/b.
        if j + 1 < b.len() && b[j] == b'/' && digit_at(j + 1) {
            let d0 = j + 1;
            j += 1;
            while digit_at(j) {
                j += 1;
            }
            let den: f64 = s[d0..j].parse().unwrap_or(f64::NAN);
            value /= den;
        }
        if j < b.len() && b[j] == b'%' {
            j += 1;
        }
        if neg {
            value = -value;
        }
        if value.is_finite() {
            out.push(Number {
                text: &s[start..j],
                value,
            });
        }
        i = j;
    }
    out
}

/// LaTeX taken apart to plain text: `\boxed{x}`, `\text{x}` and friends → `x`;
/// `\frac{a}{b}` → `a/b`; spacing commands, `$`, `\left`/`\right` dropped.
pub fn strip_latex(s: &str) -> String {
    let mut t = s.to_string();
    // Wrappers whose content is the value.
    for w in [
        "\\boxed", "\\fbox", "\\text", "\\textbf", "\\mathrm", "\\mathbf", "\\mbox",
    ] {
        while let Some(i) = find_command(&t, w) {
            let open = i + w.len();
            match braced(&t, open) {
                Some(inner) => {
                    let inner = inner.to_string();
                    let end = open + inner.len() + 2;
                    t.replace_range(i..end, &inner);
                }
                None => {
                    t.replace_range(i..open, "");
                }
            }
        }
    }
    // Fractions: \frac{a}{b}, \dfrac{a}{b}, \tfrac{a}{b}, and the short \frac34.
    for f in ["\\dfrac", "\\tfrac", "\\frac"] {
        while let Some(i) = t.find(f) {
            let at = i + f.len();
            let (num, after_num) = latex_arg(&t, at);
            let (den, after_den) = latex_arg(&t, after_num);
            let unbrace = |a: &str| a.replace(['{', '}'], "");
            let repl = format!("{}/{}", unbrace(&num), unbrace(&den));
            t.replace_range(i..after_den, &repl);
        }
    }
    for junk in [
        "\\left",
        "\\right",
        "\\!",
        "\\,",
        "\\;",
        "\\:",
        "\\ ",
        "\\$",
        "\\%",
        "^\\circ",
        "^{\\circ}",
        "$",
    ] {
        t = t.replace(junk, if junk == "\\ " { " " } else { "" });
    }
    t
}

/// Position of `cmd` followed by `{` (spaces allowed) in `t`.
fn find_command(t: &str, cmd: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = t[from..].find(cmd) {
        let at = from + i;
        let rest = &t[at + cmd.len()..];
        // `\text` must not match `\textbf`: the command ends at a non-letter.
        if rest.starts_with('{') {
            return Some(at);
        }
        from = at + cmd.len();
    }
    None
}

/// One LaTeX argument at byte `at`: `{…}` or a single character. Returns the
/// argument and the byte after it.
fn latex_arg(t: &str, at: usize) -> (String, usize) {
    let rest = &t[at..];
    let skipped = rest.len() - rest.trim_start().len();
    let at = at + skipped;
    if t[at..].starts_with('{') {
        if let Some(inner) = braced(t, at) {
            return (inner.to_string(), at + inner.len() + 2);
        }
    }
    match t[at..].chars().next() {
        Some(c) => (c.to_string(), at + c.len_utf8()),
        None => (String::new(), at),
    }
}

/// The numeric value of an answer (expected or extracted): the last number left
/// after [`strip_latex`]. `None` when there is no number.
pub fn parse_number(answer: &str) -> Option<f64> {
    let t = strip_latex(answer);
    numbers(&t).last().map(|n| n.value)
}

/// The text form used when a side has no number: no case, no spaces, no `$`.
fn text_key(s: &str) -> String {
    strip_latex(s)
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .trim_end_matches('.')
        .to_string()
}

/// Whether the model's extracted answer `got` matches `expected`: numerically
/// (relative tolerance 1e-6) when both have a value, else as texts.
pub fn answers_match(expected: &str, got: &str) -> bool {
    match (parse_number(expected), parse_number(got)) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1.0),
        (None, None) => text_key(expected) == text_key(got) && !text_key(expected).is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Option<f64> {
        parse_number(s)
    }

    #[test]
    fn money_and_separators() {
        assert_eq!(num("$1,234.00"), Some(1234.0));
        assert_eq!(num("\\$1,234"), Some(1234.0));
        assert_eq!(num("1,234,567"), Some(1234567.0));
        assert_eq!(num("18.0"), Some(18.0));
        assert!(answers_match("1234", "$1,234.00"));
        assert!(answers_match("18", "18.0"));
    }

    #[test]
    fn fractions() {
        assert_eq!(num("\\frac{3}{4}"), Some(0.75));
        assert_eq!(num("\\dfrac{3}{4}"), Some(0.75));
        assert_eq!(num("\\frac34"), Some(0.75));
        assert_eq!(num("3/4"), Some(0.75));
        assert_eq!(num("-\\frac{1}{2}"), Some(-0.5));
        assert!(answers_match("0.75", "\\frac{3}{4}"));
        assert!(answers_match("\\frac{3}{4}", "0.75"));
        assert!(!answers_match("0.75", "\\frac{3}{5}"));
    }

    #[test]
    fn units_and_words() {
        let out = "So she has \\boxed{\\text{12 apples}} left.";
        assert_eq!(extract_answer(out).as_deref(), Some("\\text{12 apples}"));
        assert!(answers_match("12", &extract_answer(out).unwrap()));
        assert_eq!(num("12 apples"), Some(12.0));
        assert_eq!(num("\\boxed{5\\text{ cm}}"), Some(5.0));
        assert_eq!(num("90^\\circ"), Some(90.0));
    }

    #[test]
    fn negatives() {
        assert_eq!(num("-7"), Some(-7.0));
        assert_eq!(num("\u{2212}7"), Some(-7.0));
        assert_eq!(num("the change is -3.5 degrees"), Some(-3.5));
        assert!(answers_match("-7", "\\boxed{-7}"));
        assert!(!answers_match("7", "-7"));
        // A hyphen between numbers is not a sign.
        let n: Vec<f64> = numbers("pages 3-4").iter().map(|n| n.value).collect();
        assert_eq!(n, [3.0, 4.0]);
    }

    #[test]
    fn percentages() {
        assert_eq!(num("45%"), Some(45.0));
        assert_eq!(num("45\\%"), Some(45.0));
        assert!(answers_match("45", "45 %"));
        assert_eq!(extract_answer("a rise of 12.5%.").as_deref(), Some("12.5%"));
    }

    #[test]
    fn last_box_wins() {
        let out = "First \\boxed{3}, then I fix it: \\boxed{4}. Final: \\boxed{5}";
        assert_eq!(extract_answer(out).as_deref(), Some("5"));
        // \fbox counts too, and the later one wins whatever its name.
        assert_eq!(extract_answer("\\boxed{1} \\fbox{2}").as_deref(), Some("2"));
        // An unclosed box (a cut-off answer) is skipped.
        assert_eq!(
            extract_answer("\\boxed{7} and \\boxed{8").as_deref(),
            Some("7")
        );
    }

    #[test]
    fn nested_braces() {
        let out = "\\boxed{\\frac{\\sqrt{4}}{8}}";
        assert_eq!(extract_answer(out).as_deref(), Some("\\frac{\\sqrt{4}}{8}"));
        assert_eq!(
            extract_answer("\\boxed{{1,000}}").as_deref(),
            Some("{1,000}")
        );
        assert_eq!(num("{1,000}"), Some(1000.0));
        assert_eq!(num("\\frac{{3}}{{4}}"), Some(0.75));
    }

    #[test]
    fn no_box_takes_the_last_number() {
        let out = "He buys 3 packs of 12, so 3 * 12 = 36 pens. The answer is 36.";
        assert_eq!(extract_answer(out).as_deref(), Some("36"));
        assert_eq!(extract_answer("no numbers here"), None);
        assert_eq!(extract_answer("It costs $2,500."), Some("2,500".into()));
        assert!(answers_match("2500", "2,500"));
    }

    #[test]
    fn thousands_commas_versus_list_commas() {
        let vals = |s: &str| numbers(s).iter().map(|n| n.value).collect::<Vec<_>>();
        assert_eq!(vals("1,234"), [1234.0]);
        assert_eq!(vals("1, 2, 3"), [1.0, 2.0, 3.0]);
        assert_eq!(vals("1,2,3"), [1.0, 2.0, 3.0]);
        assert_eq!(vals("12,34"), [12.0, 34.0]);
        assert_eq!(vals("1,2345"), [1.0, 2345.0]);
        assert_eq!(vals("5,000, 6,000"), [5000.0, 6000.0]);
        assert_eq!(vals("1234,567"), [1234.0, 567.0]);
        assert_eq!(extract_answer("the sums are 10, 20, 30"), Some("30".into()));
    }

    #[test]
    fn text_answers_compare_without_case_or_spaces() {
        assert!(answers_match("Yes", "\\text{yes}"));
        assert!(!answers_match("yes", "no"));
        assert!(!answers_match("5", "five"));
        assert!(!answers_match("", ""));
    }

    #[test]
    fn trailing_sentence_dot_is_not_a_decimal() {
        assert_eq!(extract_answer("Total: 42."), Some("42".into()));
        assert_eq!(num(".5"), Some(0.5));
    }
}
