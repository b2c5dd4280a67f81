//! The bundled problem set `data/arith-100.jsonl`: at least 100 problems in
//! GSM8K's format, every solution step `EXPR = VALUE` re-computed here (exact
//! rationals), the answer after `####` equal to the last step, and the
//! expected answer readable by the grader.

use tah::app::eval::data::{load, DataFormat};
use tah::app::eval::grade::parse_number;

/// Exact value of `+ - * / ( )` over decimal numbers, as a fraction (num, den).
fn eval(expr: &str) -> (i128, i128) {
    fn gcd(a: i128, b: i128) -> i128 {
        if b == 0 {
            a.abs()
        } else {
            gcd(b, a % b)
        }
    }
    fn norm((n, d): (i128, i128)) -> (i128, i128) {
        let g = gcd(n, d).max(1) * d.signum();
        (n / g, d / g)
    }
    struct P<'a>(&'a [u8], usize);
    impl P<'_> {
        fn ws(&mut self) {
            while self.1 < self.0.len() && self.0[self.1] == b' ' {
                self.1 += 1;
            }
        }
        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.0.get(self.1).copied()
        }
        fn sum(&mut self) -> (i128, i128) {
            let mut a = self.prod();
            while let Some(op @ (b'+' | b'-')) = self.peek() {
                self.1 += 1;
                let b = self.prod();
                let s = if op == b'+' { 1 } else { -1 };
                a = norm((a.0 * b.1 + s * b.0 * a.1, a.1 * b.1));
            }
            a
        }
        fn prod(&mut self) -> (i128, i128) {
            let mut a = self.atom();
            while let Some(op @ (b'*' | b'/')) = self.peek() {
                self.1 += 1;
                let b = self.atom();
                a = if op == b'*' {
                    norm((a.0 * b.0, a.1 * b.1))
                } else {
                    assert!(b.0 != 0, "division by zero");
                    norm((a.0 * b.1, a.1 * b.0))
                };
            }
            a
        }
        fn atom(&mut self) -> (i128, i128) {
            match self.peek() {
                Some(b'(') => {
                    self.1 += 1;
                    let v = self.sum();
                    assert_eq!(self.peek(), Some(b')'));
                    self.1 += 1;
                    v
                }
                Some(b'-') => {
                    self.1 += 1;
                    let (n, d) = self.atom();
                    (-n, d)
                }
                _ => {
                    let start = self.1;
                    while self.1 < self.0.len()
                        && (self.0[self.1].is_ascii_digit() || self.0[self.1] == b'.')
                    {
                        self.1 += 1;
                    }
                    decimal(std::str::from_utf8(&self.0[start..self.1]).unwrap())
                }
            }
        }
    }
    fn decimal(s: &str) -> (i128, i128) {
        assert!(!s.is_empty(), "a number was expected");
        let (i, f) = s.split_once('.').unwrap_or((s, ""));
        let den = 10i128.pow(f.len() as u32);
        let num: i128 = format!("{i}{f}").parse().unwrap();
        norm((num, den))
    }
    let mut p = P(expr.as_bytes(), 0);
    let v = p.sum();
    assert_eq!(p.peek(), None, "trailing text in {expr}");
    v
}

fn value_of(s: &str) -> (i128, i128) {
    let neg = s.starts_with('-');
    let (n, d) = eval(s.trim_start_matches('-'));
    (if neg { -n } else { n }, d)
}

#[test]
fn bundled_set_is_gsm8k_and_every_step_checks_out() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/arith-100.jsonl");
    let problems = load(&path, Some(DataFormat::Gsm8k)).unwrap();
    assert!(problems.len() >= 100, "{} problems", problems.len());
    let mut questions = std::collections::HashSet::new();
    for p in &problems {
        assert!(
            questions.insert(p.question.clone()),
            "duplicate: {}",
            p.question
        );
        let (solution, answer) = p.answer.rsplit_once("####").unwrap();
        assert_eq!(answer.trim(), p.expected);
        let mut last = None;
        for line in solution.lines() {
            let Some((lhs, rhs)) = line.split_once('=') else {
                continue;
            };
            // The expression: the arithmetic run just before '='.
            let expr: String = lhs
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit() || " .+-*/()".contains(*c))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let rhs = rhs.trim_start();
            let val: String = rhs
                .chars()
                .enumerate()
                .take_while(|&(i, c)| c.is_ascii_digit() || (c == '-' && i == 0) || c == '.')
                .map(|(_, c)| c)
                .collect();
            let val = val.trim_end_matches('.');
            assert_eq!(eval(expr.trim()), value_of(val), "line {}: {line}", p.line);
            last = Some(value_of(val));
        }
        assert_eq!(last, Some(value_of(&p.expected)), "line {}", p.line);
        assert!(parse_number(&p.expected).is_some(), "line {}", p.line);
    }
}

#[test]
fn the_expression_checker_checks() {
    assert_eq!(eval("2 * (3 + 4)"), (14, 1));
    assert_eq!(eval("300 / 100 * 2.5"), (15, 2));
    assert_eq!(eval("1 - 2 - 3"), (-4, 1));
    assert_eq!(value_of("-15"), (-15, 1));
}
