//! The checked-in `include/cops_responder.h` must equal a fresh cbindgen run
//! over `cops-responder/src/ffi.rs` with `cbindgen.toml`.
//!
//! After changing the ABI, update it with:
//! `UPDATE_HEADER=1 cargo test -p cops-c-bindings --test header`

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn generate() -> String {
    let root = root();
    let config =
        cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("../cops-responder/src/ffi.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn checked_in_header_is_fresh() {
    let fresh = generate();
    let path = root().join("include/cops_responder.h");
    if std::env::var_os("UPDATE_HEADER").is_some() {
        std::fs::write(&path, &fresh).expect("write header");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != fresh {
        let first = checked_in
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(fresh.lines().count()));
        panic!(
            "{} is stale: it differs from a fresh cbindgen run from line {} on\n  \
             checked in: {:?}\n  fresh:      {:?}\n\
             Update it with: UPDATE_HEADER=1 cargo test -p cops-c-bindings --test header",
            path.display(),
            first + 1,
            checked_in.lines().nth(first).unwrap_or("<end of file>"),
            fresh.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn header_has_the_names_of_cops_md() {
    let h = generate();
    for needle in [
        "typedef struct cops_responder cops_responder;",
        "typedef enum cops_status {",
        "} cops_status;",
        "COPS_ERR_BUFFER_TOO_SMALL = -3,",
        "const char *cops_status_str(cops_status s);",
        "enum cops_status cops_responder_set_liveness_window(struct cops_responder *r, uint32_t window_ms);",
        "enum cops_status cops_responder_tick(struct cops_responder *r);",
        "extern \"C\" {",
    ] {
        assert!(h.contains(needle), "header lacks {needle:?}:\n{h}");
    }
}

/// The panic boundary needs unwinding: no profile may set `panic = "abort"`.
#[test]
fn no_profile_aborts_on_panic() {
    let manifest = std::fs::read_to_string(root().join("../Cargo.toml")).expect("root Cargo.toml");
    let compact: String = manifest.split_whitespace().collect();
    assert!(
        !compact.contains("panic=\"abort\""),
        "a profile in the root Cargo.toml sets panic = \"abort\": the C ABI's \
         panic boundary (COPS_ERR_PANIC) would abort the host process instead"
    );
}
