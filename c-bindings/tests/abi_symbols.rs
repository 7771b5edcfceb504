//! The shared library is one packagers accept: it exports exactly the
//! functions `cops_responder.h` declares (nothing of Rust's standard library
//! or of the responder's insides), it carries the SONAME
//! `libcops_responder.so.<SOVERSION>`, and the ABI generation is the same
//! number in the three places that name it (cops-responder/build.rs,
//! c-bindings/Makefile, the package metadata of cops-responder/Cargo.toml).
//! Needs binutils (`nm`, `readelf`), which every C toolchain brings.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not run ({e}); binutils is needed"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `text` without its `/* ... */` and `// ...` comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else {
            let c = rest.chars().next().expect("rest is not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Every `cops_...(` in the header outside comments: the declared functions.
fn header_functions() -> BTreeSet<String> {
    let path = common::crate_dir().join("include/cops_responder.h");
    let text = std::fs::read_to_string(&path).expect("read the header");
    let code = strip_comments(&text);
    let mut names = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while let Some(found) = code[i..].find("cops_") {
        let start = i + found;
        let ident_before =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let len = code[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(code.len() - start);
        let end = start + len;
        if !ident_before && code[end..].trim_start().starts_with('(') {
            names.insert(code[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// Every symbol the shared library defines in its dynamic symbol table.
fn exported(so: &Path) -> BTreeSet<String> {
    run(Command::new("nm")
        .args(["-D", "--defined-only", "-P"])
        .arg(so))
    .lines()
    .filter_map(|l| l.split_whitespace().next())
    .map(|name| name.split('@').next().unwrap_or(name).to_owned())
    .collect()
}

fn soname(so: &Path) -> Option<String> {
    let dynamic = run(Command::new("readelf").arg("-d").arg(so));
    let line = dynamic.lines().find(|l| l.contains("(SONAME)"))?;
    let start = line.find('[')? + 1;
    let end = line.rfind(']')?;
    Some(line[start..end].to_owned())
}

/// The value of `pattern<value><close>` in `file` (relative to the workspace).
fn find_value(file: &str, pattern: &str, close: char) -> String {
    let path = common::crate_dir().join("..").join(file);
    let text = std::fs::read_to_string(&path).expect("read the file");
    let at = text
        .find(pattern)
        .unwrap_or_else(|| panic!("{file} has no `{pattern}`"));
    let rest = &text[at + pattern.len()..];
    rest[..rest.find(close).expect("value ends")]
        .trim()
        .to_owned()
}

#[test]
fn exports_exactly_the_header_functions() {
    let so = common::lib_dir().join("libcops_responder.so");
    let declared = header_functions();
    assert!(
        declared.len() >= 9,
        "the header parse found too few functions: {declared:?}"
    );
    let exported = exported(&so);
    let extra: Vec<_> = exported.difference(&declared).collect();
    let missing: Vec<_> = declared.difference(&exported).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{} exports symbols the header does not declare: {extra:?}; \
         declared but not exported: {missing:?}",
        so.display()
    );
}

#[test]
fn soname_and_soversion_agree_everywhere() {
    let so = common::lib_dir().join("libcops_responder.so");
    let from_build_rs = find_value("cops-responder/build.rs", "const SOVERSION: &str = \"", '"');
    let from_makefile = find_value("c-bindings/Makefile", "\nSOVERSION    := ", '\n');
    assert_eq!(
        from_build_rs, from_makefile,
        "SOVERSION of build.rs and Makefile"
    );
    let expected = format!("libcops_responder.so.{from_build_rs}");
    assert_eq!(
        soname(&so).as_deref(),
        Some(expected.as_str()),
        "SONAME of {}",
        so.display()
    );
    assert_eq!(common::SONAME, expected, "tests/common SONAME");

    // The packages name the real file after the crate version and link the
    // SONAME to it.
    let version = env!("CARGO_PKG_VERSION");
    let manifest =
        std::fs::read_to_string(common::crate_dir().join("../cops-responder/Cargo.toml"))
            .expect("read cops-responder/Cargo.toml");
    for needle in [
        format!("libcops_responder.so.{version}\""),
        format!("\"usr/lib/{expected}\""),
        format!("/usr/lib64/{expected}"),
        format!("libcops-responder0 (= {version}-1)"),
        format!("libcops-responder = \"= {version}\""),
    ] {
        assert!(
            manifest.contains(&needle),
            "cops-responder/Cargo.toml does not name `{needle}`: update its package metadata"
        );
    }
}
