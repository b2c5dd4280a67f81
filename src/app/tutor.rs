//! The offline math tutor (`tah chat --tutor`): its system prompt, and a
//! streaming filter that separates the model's thinking (`<think>…</think>`)
//! from the answer so a front end can hide it.

/// The tutor's system prompt.
pub const TUTOR_SYSTEM_PROMPT: &str = "\
You are a patient math tutor for school students. Work step by step and keep \
each step short and clear. When the student shows their own working, check \
every step: say what is right, and point to the first step that goes wrong \
without fixing it for them. Prefer guiding questions (\"What do we know?\", \
\"What does the question ask for?\", \"What operation links these numbers?\") \
that let the student find the next step. Do not give the final answer unless \
the student asks for it directly or has already found it; then confirm it and \
explain why it is right. Use plain language, check units, and put a final \
numeric answer in \\boxed{} when you do give one.";

pub const THINK_OPEN: &str = "<think>";
pub const THINK_CLOSE: &str = "</think>";

/// Splits streamed text into thinking and answer parts. The tags themselves
/// count as thinking, and so does the whitespace right after `</think>`. A tag
/// split across pieces is held back until it is complete.
#[derive(Clone, Debug, Default)]
pub struct ThinkFilter {
    inside: bool,
    /// Text that may be the start of a tag.
    pending: String,
    /// Just after `</think>`: leading whitespace is still thinking.
    after_close: bool,
}

impl ThinkFilter {
    /// `inside`: the stream starts inside a thinking span (the prompt opened
    /// `<think>`, see [`prompt_opens_thinking`]).
    pub fn new(inside: bool) -> ThinkFilter {
        ThinkFilter {
            inside,
            ..Default::default()
        }
    }

    /// Whether the stream is inside a thinking span now.
    pub fn inside(&self) -> bool {
        self.inside
    }

    /// Feeds one piece; `out(thinking, text)` receives its classified parts
    /// (never empty ones).
    pub fn push(&mut self, piece: &str, out: &mut dyn FnMut(bool, &str)) {
        self.pending.push_str(piece);
        let mut buf = std::mem::take(&mut self.pending);
        let mut rest: &str = &buf;
        loop {
            if self.after_close && !self.inside {
                let t = rest.trim_start();
                let ws = &rest[..rest.len() - t.len()];
                if !ws.is_empty() {
                    out(true, ws);
                }
                rest = t;
                if rest.is_empty() {
                    break;
                }
                self.after_close = false;
            }
            let tag = if self.inside { THINK_CLOSE } else { THINK_OPEN };
            if let Some(i) = rest.find(tag) {
                if i > 0 {
                    out(self.inside, &rest[..i]);
                }
                out(true, tag);
                rest = &rest[i + tag.len()..];
                self.inside = !self.inside;
                self.after_close = !self.inside;
                continue;
            }
            // Hold back a tail that could begin the tag.
            let keep = (1..tag.len())
                .rev()
                .find(|&k| {
                    rest.len() >= k
                        && rest.is_char_boundary(rest.len() - k)
                        && tag.starts_with(&rest[rest.len() - k..])
                })
                .unwrap_or(0);
            let emit = &rest[..rest.len() - keep];
            if !emit.is_empty() {
                out(self.inside, emit);
            }
            rest = &rest[rest.len() - keep..];
            break;
        }
        let kept = rest.to_string();
        buf.clear();
        buf.push_str(&kept);
        self.pending = buf;
    }

    /// Ends the stream: whatever was held back goes out as it stands.
    pub fn flush(&mut self, out: &mut dyn FnMut(bool, &str)) {
        if !self.pending.is_empty() {
            let p = std::mem::take(&mut self.pending);
            out(self.inside, &p);
        }
    }
}

/// Whether a rendered prompt leaves a `<think>` span open (some templates start
/// the assistant's turn inside it).
pub fn prompt_opens_thinking(prompt: &str) -> bool {
    match (prompt.rfind(THINK_OPEN), prompt.rfind(THINK_CLOSE)) {
        (Some(o), Some(c)) => o > c,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The answer part of a whole text (thinking removed).
pub fn strip_thinking(text: &str, inside: bool) -> String {
    let mut f = ThinkFilter::new(inside);
    let mut s = String::new();
    let mut keep = |thinking: bool, t: &str| {
        if !thinking {
            s.push_str(t)
        }
    };
    f.push(text, &mut keep);
    f.flush(&mut keep);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pieces: &[&str], inside: bool) -> (String, String) {
        let mut f = ThinkFilter::new(inside);
        let (mut think, mut answer) = (String::new(), String::new());
        let mut out = |t: bool, s: &str| {
            assert!(!s.is_empty());
            if t {
                think.push_str(s)
            } else {
                answer.push_str(s)
            }
        };
        for p in pieces {
            f.push(p, &mut out);
        }
        f.flush(&mut out);
        (think, answer)
    }

    #[test]
    fn thinking_is_separated_even_with_split_tags() {
        let whole = "<think>\n2+2 is 4</think>\n\nThe answer is \\boxed{4}.";
        let (t, a) = split(&[whole], false);
        assert_eq!(t, "<think>\n2+2 is 4</think>\n\n");
        assert_eq!(a, "The answer is \\boxed{4}.");
        // Every split point gives the same result.
        for i in 1..whole.len() {
            let (t2, a2) = split(&[&whole[..i], &whole[i..]], false);
            assert_eq!(
                (t2.as_str(), a2.as_str()),
                (t.as_str(), a.as_str()),
                "split at {i}"
            );
        }
        // One character at a time.
        let chars: Vec<String> = whole.chars().map(|c| c.to_string()).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(split(&refs, false), (t, a));
    }

    #[test]
    fn starting_inside_and_look_alike_text() {
        let (t, a) = split(&["so x = 3", "</th", "ink>", "x is 3"], true);
        assert_eq!((t.as_str(), a.as_str()), ("so x = 3</think>", "x is 3"));
        // A '<' that is not a tag is passed on once it cannot be one.
        let (t, a) = split(&["a <", "b and <thi", "s>"], false);
        assert_eq!((t.as_str(), a.as_str()), ("", "a <b and <this>"));
        // An unfinished span at the end stays thinking.
        let (t, a) = split(&["hi <think>hmm"], false);
        assert_eq!((t.as_str(), a.as_str()), ("<think>hmm", "hi "));
    }

    #[test]
    fn prompt_state() {
        assert!(prompt_opens_thinking("<|im_start|>assistant\n<think>\n"));
        assert!(!prompt_opens_thinking(
            "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        ));
        assert!(!prompt_opens_thinking("<|im_start|>assistant\n"));
        assert_eq!(strip_thinking("<think>x</think> y", false), "y");
    }
}
