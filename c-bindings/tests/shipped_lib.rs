//! The C library the tests link is the one that ships: built with the
//! workspace's feature set, where no crate turns on `tokio` for `fims` or
//! `cops-responder`, it carries no tokio and no mio (issue 16). A test build
//! that pulled them in would test a different, bigger library than
//! `make -C c-bindings` ships.

mod common;

use std::path::Path;
use std::process::Command;

/// Names from the async stack a shipped library must not define (Rust
/// legacy and v0 mangling both spell crate names as `<len><name>`).
const FORBIDDEN: &[&str] = &["5tokio", "3mio"];

fn defined_symbols(lib: &Path) -> Vec<String> {
    let out = Command::new("nm")
        .args(["--defined-only", "--format=just-symbols"])
        .arg(lib)
        .output()
        .expect("nm runs (binutils comes with gcc)");
    assert!(
        out.status.success(),
        "nm {}: {}",
        lib.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_c_libraries_carry_no_tokio_or_mio() {
    let dir = common::lib_dir();
    for file in ["libcops_responder.a", "libcops_responder.so"] {
        let lib = dir.join(file);
        let symbols = defined_symbols(&lib);
        assert!(
            symbols.iter().any(|s| s == "cops_responder_handle"),
            "{file} does not define cops_responder_handle: is it the responder?"
        );
        let bad: Vec<&String> = symbols
            .iter()
            .filter(|s| FORBIDDEN.iter().any(|f| s.contains(f)))
            .take(5)
            .collect();
        assert!(
            bad.is_empty(),
            "{} defines tokio/mio symbols, e.g. {bad:?}.\n\
             Either a crate in the workspace turns on `fims/tokio` or \
             `cops-responder/tokio` again (keep those to the explicit \
             `--features tokio` steps of .ci/run), or a `--features tokio` build \
             left its library in place: cops-responder's libraries carry no hash \
             in their names, so cargo can take that file for the workspace's. \
             `touch cops-responder/src/lib.rs` and run the tests again.",
            lib.display()
        );
    }
}
