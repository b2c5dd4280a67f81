//! `include/tah.h` must be what cbindgen generates from src/ffi.rs now. The
//! generator is the cbindgen CLI (`cargo install cbindgen`; `$CBINDGEN` names
//! another binary). Without it this test fails, unless TAH_SKIP_HEADER_CHECK=1.
//! Regenerate with: cbindgen --config cbindgen.toml --output include/tah.h src/ffi.rs

use std::path::Path;
use std::process::Command;

#[test]
fn committed_header_matches_cbindgen() {
    if std::env::var("TAH_SKIP_HEADER_CHECK").is_ok_and(|v| v == "1") {
        eprintln!("TAH_SKIP_HEADER_CHECK=1: include/tah.h not checked");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("tah-header-{}.h", std::process::id()));
    let bin = std::env::var("CBINDGEN").unwrap_or_else(|_| "cbindgen".into());
    let res = Command::new(&bin)
        .current_dir(root)
        .args(["--config", "cbindgen.toml", "--quiet", "--output"])
        .arg(&out)
        .arg("src/ffi.rs")
        .output();
    let res = match res {
        Ok(r) => r,
        Err(e) => panic!(
            "cannot run {bin} ({e}): install it with `cargo install cbindgen` \
             (or set TAH_SKIP_HEADER_CHECK=1 to skip this check)"
        ),
    };
    assert!(
        res.status.success(),
        "{bin} failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let fresh = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let committed = std::fs::read_to_string(root.join("include/tah.h")).unwrap_or_default();
    if fresh != committed {
        let line = fresh
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(fresh.lines().count().min(committed.lines().count()));
        panic!(
            "include/tah.h is stale (first difference at line {}): regenerate it with\n  \
             cbindgen --config cbindgen.toml --output include/tah.h src/ffi.rs",
            line + 1
        );
    }
}
