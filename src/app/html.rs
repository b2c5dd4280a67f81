//! A self-contained HTML page of generated text with every token shaded by the
//! depth it ran to and the decider's probability in its tooltip (`--html`).
//! Inline CSS only: no scripts, fonts or other external resources.

use std::fmt::Write as _;

/// One generated token as the page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct HtmlToken {
    pub id: u32,
    /// Its text (empty while a character is split across tokens; those are not
    /// drawn). For a model without a tokenizer, e.g. `[17]`.
    pub text: String,
    pub depth: u8,
    /// The decider's depth-1 continue-probability (`None` where it did not run).
    pub prob: Option<f32>,
    /// Inside a `<think>…</think>` span.
    pub thinking: bool,
}

/// A part of the page.
#[derive(Clone, Debug)]
enum Block {
    /// A heading.
    Heading(String),
    /// Text not produced by the model (a prompt, a user turn), with a label.
    Plain { label: String, text: String },
    /// Generated tokens, with a label.
    Tokens {
        label: String,
        tokens: Vec<HtmlToken>,
    },
    /// A short note (a grade, statistics).
    Note(String),
}

/// A page under construction.
#[derive(Clone, Debug)]
pub struct HtmlPage {
    title: String,
    blocks: Vec<Block>,
    /// An extra line under the title (model, think mode).
    subtitle: String,
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

const CSS: &str = "
body { font-family: -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif; margin: 24px auto; max-width: 920px; color: #1d2330; background: #ffffff; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 17px; margin: 22px 0 6px 0; border-bottom: 1px solid #dde2ea; padding-bottom: 3px; }
.sub { color: #5a6475; font-size: 13px; margin-bottom: 10px; }
.summary { font-size: 14px; margin: 8px 0; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; font-size: 13px; padding: 8px 10px; background: #f4f6f9; border: 1px solid #dde2ea; border-radius: 6px; }
.legend .sw { display: inline-block; width: 26px; height: 16px; border: 1px solid #b8c0cc; border-radius: 3px; vertical-align: middle; margin-right: 5px; }
.label { font-size: 12px; font-weight: 600; color: #5a6475; text-transform: uppercase; letter-spacing: 0.04em; margin: 10px 0 3px 0; }
.plain, .gen { white-space: pre-wrap; word-wrap: break-word; font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 14px; line-height: 1.65; padding: 8px 10px; border-radius: 6px; }
.plain { background: #f4f6f9; color: #3a4352; border: 1px solid #e3e7ee; }
.gen { background: #ffffff; border: 1px solid #dde2ea; }
.note { font-size: 13px; color: #3a4352; margin: 4px 0; }
.d1 { background: #ffffff; }
.d2 { background: #ffc94d; }
.d3 { background: #ff7a59; color: #ffffff; }
.gen span { border-radius: 2px; }
.gen span:hover { outline: 1px solid #1d2330; }
.think { font-style: italic; color: #6b7485; }
.d2.think { color: #5a4a10; }
";

fn depth_class(depth: u8) -> &'static str {
    match depth {
        0 | 1 => "d1",
        2 => "d2",
        _ => "d3",
    }
}

impl HtmlPage {
    pub fn new(title: impl Into<String>) -> HtmlPage {
        HtmlPage {
            title: title.into(),
            blocks: Vec::new(),
            subtitle: String::new(),
        }
    }

    pub fn subtitle(&mut self, s: impl Into<String>) {
        self.subtitle = s.into();
    }

    pub fn heading(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Heading(s.into()));
    }

    pub fn plain(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.blocks.push(Block::Plain {
            label: label.into(),
            text: text.into(),
        });
    }

    pub fn tokens(&mut self, label: impl Into<String>, tokens: Vec<HtmlToken>) {
        self.blocks.push(Block::Tokens {
            label: label.into(),
            tokens,
        });
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Note(s.into()));
    }

    /// (generated tokens, hard tokens, sum of depths) over the page.
    fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for b in &self.blocks {
            if let Block::Tokens { tokens, .. } = b {
                for t in tokens {
                    c.0 += 1;
                    c.1 += (t.depth >= 2) as usize;
                    c.2 += t.depth as usize;
                }
            }
        }
        c
    }

    /// The page.
    pub fn render(&self) -> String {
        let mut h = String::new();
        let (n, hard, depth_sum) = self.counts();
        let rate = 100.0 * hard as f64 / n.max(1) as f64;
        let avg = depth_sum as f64 / n.max(1) as f64;
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
            escape(&self.title),
            escape(&self.title)
        );
        if !self.subtitle.is_empty() {
            let _ = writeln!(h, "<div class=\"sub\">{}</div>", escape(&self.subtitle));
        }
        let _ = writeln!(
            h,
            "<div class=\"summary\">{n} generated tokens, <b>hard rate {rate:.1}%</b> ({hard} tokens ran depth &ge; 2), average depth {avg:.3}</div>"
        );
        h.push_str(
            "<div class=\"legend\"><span><span class=\"sw d1\"></span>depth 1 (base pass only)</span>\
             <span><span class=\"sw d2\"></span>depth 2 (hard token: second pass)</span>\
             <span><span class=\"sw d3\"></span>depth 3+</span>\
             <span class=\"think\">italic: inside &lt;think&gt;</span>\
             <span>hover a token: its depth and the decider&rsquo;s probability</span></div>\n",
        );
        for b in &self.blocks {
            match b {
                Block::Heading(s) => {
                    let _ = writeln!(h, "<h2>{}</h2>", escape(s));
                }
                Block::Note(s) => {
                    let _ = writeln!(h, "<div class=\"note\">{}</div>", escape(s));
                }
                Block::Plain { label, text } => {
                    let _ = writeln!(
                        h,
                        "<div class=\"label\">{}</div>\n<div class=\"plain\">{}</div>",
                        escape(label),
                        escape(text)
                    );
                }
                Block::Tokens { label, tokens } => {
                    let hard = tokens.iter().filter(|t| t.depth >= 2).count();
                    let _ = write!(
                        h,
                        "<div class=\"label\">{} &middot; {} tokens, hard rate {:.1}%</div>\n<div class=\"gen\">",
                        escape(label),
                        tokens.len(),
                        100.0 * hard as f64 / tokens.len().max(1) as f64
                    );
                    for t in tokens {
                        if t.text.is_empty() {
                            continue;
                        }
                        let prob = match t.prob {
                            Some(p) => format!("decider p = {p:.4}"),
                            None => "decider not run".to_string(),
                        };
                        let think = if t.thinking { " think" } else { "" };
                        let _ = write!(
                            h,
                            "<span class=\"{}{think}\" title=\"token {} &middot; depth {} &middot; {prob}\">{}</span>",
                            depth_class(t.depth),
                            t.id,
                            t.depth,
                            escape(&t.text)
                        );
                    }
                    h.push_str("</div>\n");
                }
            }
        }
        h.push_str("</body>\n</html>\n");
        h
    }

    /// Writes the page to `path` ([`crate::app::output`]: atomically, errors
    /// naming the file).
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let page = self.render();
        crate::app::output::write_output(path, |w| std::io::Write::write_all(w, page.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(text: &str, depth: u8, prob: Option<f32>) -> HtmlToken {
        HtmlToken {
            id: 7,
            text: text.into(),
            depth,
            prob,
            thinking: false,
        }
    }

    #[test]
    fn tokens_are_escaped_shaded_and_explained() {
        let mut p = HtmlPage::new("a <title>");
        p.plain("prompt", "x < y & \"z\"");
        p.tokens(
            "answer",
            vec![
                tok("<script>", 1, Some(0.25)),
                tok("", 2, None),
                tok(" & 'b'", 2, Some(0.9)),
                tok("!", 3, None),
            ],
        );
        let h = p.render();
        assert!(h.contains("<title>a &lt;title&gt;</title>"));
        assert!(h.contains("x &lt; y &amp; &quot;z&quot;"));
        assert!(!h.contains("<script>"));
        assert!(h.contains(
            "<span class=\"d1\" title=\"token 7 &middot; depth 1 &middot; decider p = 0.2500\">&lt;script&gt;</span>"
        ));
        assert!(h.contains("class=\"d2\" title=\"token 7 &middot; depth 2 &middot; decider p = 0.9000\"> &amp; &#39;b&#39;</span>"));
        assert!(h.contains("decider not run\">!</span>"));
        // 2 of 3 counted tokens... the split token counts too: 3 of 4 are hard.
        assert!(h.contains("hard rate 75.0%"), "{h}");
        assert!(h.contains("class=\"legend\""));
        // Self-contained: no external references.
        assert!(!h.contains("http") && !h.contains("src=") && !h.contains("<link"));
    }
}
