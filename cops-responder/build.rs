//! Gives the C shared library (`libcops_responder.so`, the cdylib) the SONAME
//! `libcops_responder.so.<SOVERSION>`, so that programs linked against it ask
//! the loader for the ABI generation they were built with, and the packages can
//! ship `libcops_responder.so.0.1.0` with the usual `.so.0` / `.so` links.
//!
//! Only the cdylib gets the argument (`rustc-cdylib-link-arg`): the rlib and
//! the staticlib are unaffected.
//!
//! Exports: rustc already links every cdylib with a version script of its own
//! that makes exactly the crate's `#[no_mangle] extern "C"` functions global
//! and everything else local. A second script cannot narrow that list: GNU ld
//! refuses two (`anonymous version tag cannot be combined with other version
//! tags`) and rust-lld, Rust's default linker on x86_64 Linux, merges them. So
//! no version script is added here; `c-bindings/tests/abi_symbols.rs` checks
//! the exported list against the functions of `cops_responder.h` instead.

/// The ABI generation. Bump it (and `SOVERSION` in `c-bindings/Makefile` and
/// the file names in this crate's package metadata) on every incompatible
/// change of the C ABI; a test compares it with the built library.
const SOVERSION: &str = "0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // ELF targets only: macOS names dylibs with -install_name instead.
    if matches!(
        target_os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd"
    ) {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcops_responder.so.{SOVERSION}");
    }
}
