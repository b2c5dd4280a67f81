//! The tutor web page of `tah serve` (`GET /`) and the files it loads
//! (`GET /assets/…`): a chat that streams answers from
//! `/v1/chat/completions`, shades every token by its depth like `tah run
//! --html`, typesets math with KaTeX and folds the model's thinking away.
//!
//! Everything is compiled into the binary: a fixed table of (path, bytes,
//! content type), so no path from a URL ever reaches the file system. The
//! page works with no internet. KaTeX is vendored by `scripts/vendor-katex.sh`
//! (pinned version and checksum; MIT licence in `page/katex/LICENSE`).

use tah::app::tutor::TUTOR_SYSTEM_PROMPT;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const WOFF2: &str = "font/woff2";
const PROMPT: &[u8] = TUTOR_SYSTEM_PROMPT.as_bytes();

/// A vendored KaTeX file (under `page/katex/`, served under `assets/katex/`).
macro_rules! katex {
    ($file:literal, $kind:expr) => {
        (
            concat!("assets/katex/", $file),
            include_bytes!(concat!("page/katex/", $file)),
            $kind,
        )
    };
}

/// Every file served, by URL path without its leading slash.
static FILES: &[(&str, &[u8], &str)] = &[
    ("", include_bytes!("page/index.html"), HTML),
    ("assets/tutor.css", include_bytes!("page/tutor.css"), CSS),
    ("assets/tutor.js", include_bytes!("page/tutor.js"), JS),
    // The page sends it as the system message (one copy of the text: the CLI's).
    ("assets/tutor-prompt.txt", PROMPT, TEXT),
    katex!("katex.min.js", JS),
    katex!("katex.min.css", CSS),
    katex!("LICENSE", TEXT),
    katex!("fonts/KaTeX_AMS-Regular.woff2", WOFF2),
    katex!("fonts/KaTeX_Caligraphic-Bold.woff2", WOFF2),
    katex!("fonts/KaTeX_Caligraphic-Regular.woff2", WOFF2),
    katex!("fonts/KaTeX_Fraktur-Bold.woff2", WOFF2),
    katex!("fonts/KaTeX_Fraktur-Regular.woff2", WOFF2),
    katex!("fonts/KaTeX_Main-Bold.woff2", WOFF2),
    katex!("fonts/KaTeX_Main-BoldItalic.woff2", WOFF2),
    katex!("fonts/KaTeX_Main-Italic.woff2", WOFF2),
    katex!("fonts/KaTeX_Main-Regular.woff2", WOFF2),
    katex!("fonts/KaTeX_Math-BoldItalic.woff2", WOFF2),
    katex!("fonts/KaTeX_Math-Italic.woff2", WOFF2),
    katex!("fonts/KaTeX_SansSerif-Bold.woff2", WOFF2),
    katex!("fonts/KaTeX_SansSerif-Italic.woff2", WOFF2),
    katex!("fonts/KaTeX_SansSerif-Regular.woff2", WOFF2),
    katex!("fonts/KaTeX_Script-Regular.woff2", WOFF2),
    katex!("fonts/KaTeX_Size1-Regular.woff2", WOFF2),
    katex!("fonts/KaTeX_Size2-Regular.woff2", WOFF2),
    katex!("fonts/KaTeX_Size3-Regular.woff2", WOFF2),
    katex!("fonts/KaTeX_Size4-Regular.woff2", WOFF2),
    katex!("fonts/KaTeX_Typewriter-Regular.woff2", WOFF2),
];

/// The file at a URL path without its leading slash (`""` is the page,
/// `"assets/…"` the rest): its bytes and content type; `None` if there is none.
pub fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|&(_, bytes, kind)| (bytes, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> &'static str {
        std::str::from_utf8(asset(path).unwrap().0).unwrap()
    }

    /// The values of `attr="…"` in `s`.
    fn attrs<'a>(s: &'a str, attr: &str) -> Vec<&'a str> {
        let key = format!("{attr}=\"");
        s.match_indices(&key)
            .map(|(i, _)| {
                let v = &s[i + key.len()..];
                &v[..v.find('"').unwrap()]
            })
            .collect()
    }

    #[test]
    fn the_page_and_everything_it_loads_are_served() {
        let (page, kind) = asset("").unwrap();
        assert_eq!(kind, HTML);
        let page = std::str::from_utf8(page).unwrap();
        let mut refs = attrs(page, "src");
        refs.extend(attrs(page, "href"));
        assert_eq!(refs.len(), 4, "{refs:?}");
        for r in refs {
            assert!(asset(r).is_some(), "{r} is not served");
        }
        // What the script fetches.
        let js = text("assets/tutor.js");
        for r in ["assets/tutor-prompt.txt", "v1/chat/completions"] {
            assert!(js.contains(&format!("\"{r}\"")), "{r}");
        }
        assert_eq!(text("assets/tutor-prompt.txt"), TUTOR_SYSTEM_PROMPT);
        assert!(text("assets/katex/LICENSE").contains("MIT"));
    }

    #[test]
    fn every_woff2_font_katex_css_names_is_served_with_its_type() {
        let css = text("assets/katex/katex.min.css");
        let mut n = 0;
        for (i, _) in css.match_indices("url(fonts/") {
            let name = &css[i + 4..];
            let name = &name[..name.find(')').unwrap()];
            if name.ends_with(".woff2") {
                let (bytes, kind) = asset(&format!("assets/katex/{name}")).unwrap();
                assert_eq!((kind, &bytes[..4]), (WOFF2, &b"wOF2"[..]), "{name}");
                n += 1;
            }
        }
        assert_eq!(n, 20);
    }

    #[test]
    fn only_the_table_is_served() {
        for p in [
            "/",
            "index.html",
            "assets",
            "assets/",
            "assets/katex/../tutor.js",
            "assets/katex/fonts/KaTeX_Main-Regular.woff",
            "assets/katex/fonts/KaTeX_Main-Regular.ttf",
            "ASSETS/TUTOR.JS",
            "../Cargo.toml",
            "assets/../../Cargo.toml",
        ] {
            assert!(asset(p).is_none(), "{p}");
        }
        // Paths are unique.
        for (i, a) in FILES.iter().enumerate() {
            assert!(FILES[i + 1..].iter().all(|b| b.0 != a.0), "{}", a.0);
        }
    }
}
