//! Gives `libtah.so` the SONAME `libtah.so.0` on Linux and Android, so programs
//! linked against it record `libtah.so.0` (the ABI's major version: see
//! `TAH_ABI_VERSION` in include/tah.h) and a distribution can ship
//! `libtah.so.0` with a `libtah.so` development symlink.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtah.so.0");
    }
}
