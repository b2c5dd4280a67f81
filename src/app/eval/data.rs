//! Evaluation sets: JSON lines, one problem per line, with a `question` (or
//! `problem`) and an `answer` (or `solution`) field.
//!
//! - `gsm8k`: the answer is a worked solution whose last line is `#### N`.
//! - `boxed`: the answer is either a solution containing `\boxed{N}` (the last
//!   box counts) or the bare answer (`"42"`, `42`, `"\\frac{3}{4}"`).
//!
//! Without a format, each line is read as `gsm8k` when its answer has `####`,
//! else as `boxed`.

use super::grade::last_boxed;
use serde_json::Value;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    Gsm8k,
    Boxed,
}

impl FromStr for DataFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gsm8k" => Ok(DataFormat::Gsm8k),
            "boxed" => Ok(DataFormat::Boxed),
            _ => Err(format!("unknown data format '{s}' (gsm8k, boxed)")),
        }
    }
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataFormat::Gsm8k => "gsm8k",
            DataFormat::Boxed => "boxed",
        })
    }
}

/// One problem of an evaluation set.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// 1-based line number in the file.
    pub line: usize,
    pub question: String,
    /// The answer field as written (a solution or a bare answer).
    pub answer: String,
    /// The ground truth extracted from `answer`.
    pub expected: String,
}

/// The ground truth in an answer field: after the last `####` (gsm8k), else the
/// last `\boxed{…}` or the whole field (boxed).
pub fn expected_answer(answer: &str, format: Option<DataFormat>) -> Result<String, String> {
    let format = format.unwrap_or(if answer.contains("####") {
        DataFormat::Gsm8k
    } else {
        DataFormat::Boxed
    });
    let e = match format {
        DataFormat::Gsm8k => {
            let i = answer
                .rfind("####")
                .ok_or("the answer has no '#### N' line (gsm8k format)")?;
            answer[i + 4..].trim().to_string()
        }
        DataFormat::Boxed => last_boxed(answer).unwrap_or(answer).trim().to_string(),
    };
    if e.is_empty() {
        return Err("the answer is empty".into());
    }
    Ok(e)
}

/// Problems from JSON-lines text (blank lines skipped).
pub fn parse_jsonl(text: &str, format: Option<DataFormat>) -> Result<Vec<Problem>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |m: String| format!("line {line_no}: {m}");
        let v: Value = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        let field = |names: &[&str]| -> Option<String> {
            names.iter().find_map(|n| match v.get(n)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(x) => Some(x.to_string()),
                _ => None,
            })
        };
        let question =
            field(&["question", "problem"]).ok_or_else(|| err("no \"question\" field".into()))?;
        let answer =
            field(&["answer", "solution"]).ok_or_else(|| err("no \"answer\" field".into()))?;
        let expected = expected_answer(&answer, format).map_err(err)?;
        out.push(Problem {
            line: line_no,
            question,
            answer,
            expected,
        });
    }
    Ok(out)
}

/// Problems from a JSON-lines file.
pub fn load(path: &Path, format: Option<DataFormat>) -> Result<Vec<Problem>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let problems = parse_jsonl(&text, format).map_err(|e| format!("{}: {e}", path.display()))?;
    if problems.is_empty() {
        return Err(format!("{}: no problems", path.display()));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats() {
        let text = r#####"{"question": "1+1?", "answer": "1+1 = 2\n#### 2"}

{"problem": "Half?", "solution": "It is \\boxed{\\frac{1}{2}}."}
{"question": "Big?", "answer": 1234}
{"question": "Sum?", "answer": "#### 1,234"}"#####;
        let p = parse_jsonl(text, None).unwrap();
        let e: Vec<&str> = p.iter().map(|p| p.expected.as_str()).collect();
        assert_eq!(e, ["2", "\\frac{1}{2}", "1234", "1,234"]);
        assert_eq!(p[1].line, 3);
    }

    #[test]
    fn a_forced_format_is_checked() {
        let text = r#"{"question": "q", "answer": "42"}"#;
        let e = parse_jsonl(text, Some(DataFormat::Gsm8k)).unwrap_err();
        assert!(e.contains("line 1") && e.contains("####"), "{e}");
        assert!(parse_jsonl("{\"answer\": \"1\"}", None)
            .unwrap_err()
            .contains("question"));
        assert!(parse_jsonl("not json", None)
            .unwrap_err()
            .starts_with("line 1"));
    }
}
