//! Arbitrary chat templates rendering arbitrary conversations: the input is a
//! template, then (after the first NUL) messages cut at further NULs. Loading
//! and rendering must succeed or fail with an error, never panic, overflow the
//! stack, hang or exhaust memory (the sandbox in `tah::text::template_sandbox`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tah::text::{ChatMessage, ChatTemplate};

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (src, rest) = s.split_once('\0').unwrap_or((s, "user\0hi"));
    let msgs: Vec<ChatMessage> = rest
        .split('\0')
        .enumerate()
        .map(|(i, c)| ChatMessage::new(ROLES[(i + c.len()) % ROLES.len()], c))
        .collect();
    if let Ok(t) = ChatTemplate::new(src, Some("<s>".into()), Some("</s>".into())) {
        let _ = t.render(&msgs, true, None);
        let _ = t.render(&msgs, false, Some(false));
        let _ = t.check_renders();
    }
});
