//! Shared by the C tests: build the responder's libraries with cargo (same target
//! dir and profile as this test binary), compile C/C++ sources against the
//! checked-in header with `-Wall -Wextra -Werror`, run programs as guarded children.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use testkit::ChildGuard;

/// Extra libraries a static link of the Rust staticlib needs on Linux.
pub const STATIC_LIBS: &[&str] = &["-lpthread", "-ldl", "-lm"];

/// How a program links the responder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// `libcops_responder.a`.
    Static,
    /// `libcops_responder.so` with an rpath.
    Shared,
}

/// `c-bindings/`.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The SONAME of `libcops_responder.so` (cops-responder/build.rs), the file a
/// program linked against it asks the loader for.
pub const SONAME: &str = "libcops_responder.so.0";

/// Builds the workspace (once per test process) and returns the directory
/// holding `libcops_responder.a` and `libcops_responder.so`, with the
/// `libcops_responder.so.0` link next to them that programs linked against
/// the `.so` load (cargo makes only the unversioned file).
///
/// That is `target/<profile>/deps` (testkit::lib): cargo writes the libraries
/// there on every build (their names carry no hash), while the copies in
/// `target/<profile>` are refreshed only when `cops-responder` itself is the
/// package asked for, so after a build of another feature set they can be stale.
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shared = testkit::lib("cops-responder", "libcops_responder.so");
        let dir = shared.parent().expect("profile dir").to_path_buf();
        let fixed = testkit::lib("cops-responder", "libcops_responder.a");
        assert_eq!(
            fixed.parent(),
            Some(dir.as_path()),
            "both libraries side by side"
        );
        soname_link(&dir);
        dir
    })
}

/// `dir/libcops_responder.so.0 -> libcops_responder.so`. Several test
/// processes may race here: whoever loses finds the link made.
fn soname_link(dir: &Path) {
    let link = dir.join(SONAME);
    if std::fs::read_link(&link).is_ok_and(|t| t == Path::new("libcops_responder.so")) {
        return;
    }
    let _ = std::fs::remove_file(&link);
    match std::os::unix::fs::symlink("libcops_responder.so", &link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("cannot link {}: {e}", link.display()),
    }
}

/// A temp dir for compiled programs, alive for the whole test process.
fn out_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// Compiles `src` (relative to `c-bindings/`; `.c` with gcc -std=c11, `.cpp`
/// with g++ -std=c++17) with `-Wall -Wextra -Werror`, linked `link`.
/// Compiled once per test process; concurrent tests wait for the first.
pub fn compile(src: &str, link: Link) -> PathBuf {
    compile_with(src, link, &[])
}

/// [`compile`] with extra compiler flags (e.g. `-O2`).
pub fn compile_with(src: &str, link: Link, flags: &[&str]) -> PathBuf {
    static DONE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut done = DONE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    done.entry(format!("{src} {link:?} {}", flags.join(" ")))
        .or_insert_with(|| compile_uncached(src, link, flags))
        .clone()
}

fn compile_uncached(src: &str, link: Link, flags: &[&str]) -> PathBuf {
    let lib = lib_dir();
    let dir = crate_dir();
    let src_path = dir.join(src);
    let stem = src_path
        .file_stem()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    let tag: String = flags
        .concat()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let out = out_dir().join(format!("{stem}-{link:?}{tag}"));
    let cxx = src.ends_with(".cpp");
    let mut cmd = Command::new(if cxx { "g++" } else { "gcc" });
    cmd.arg(if cxx { "-std=c++17" } else { "-std=c11" })
        .args(["-g", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(dir.join("include"))
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src_path);
    match link {
        Link::Static => {
            cmd.arg(lib.join("libcops_responder.a")).args(STATIC_LIBS);
        }
        Link::Shared => {
            cmd.arg("-L")
                .arg(lib)
                .arg("-lcops_responder")
                .arg(format!("-Wl,-rpath,{}", lib.display()));
        }
    }
    let output = cmd.output().expect("the C compiler runs");
    assert!(
        output.status.success(),
        "compiling {src} ({link:?}) failed:\n{:?}\n{}",
        cmd,
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// Spawns `cmd` with stdout piped and waits for its first line (its "ready" line).
pub fn spawn_ready(cmd: &mut Command) -> (ChildGuard, String) {
    let mut child = ChildGuard::spawn(cmd.stdout(Stdio::piped()).stdin(Stdio::null()));
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).expect("read ready line");
    assert!(!line.is_empty(), "child exited before its ready line");
    // Keep draining so the child never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    (child, line)
}

/// `cops` with `config` on `broker`'s socket, killed when dropped.
pub fn start_cops(broker: &testkit::Broker, config: &Path) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(testkit::bin("cops-server", "cops"))
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(broker.socket())
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    )
}

/// `get /cops/stats/<name>`, parsed.
pub fn stats(client: &mut fims::blocking::Client, name: &str) -> Option<serde_json::Value> {
    let uri = format!("/cops/stats/{name}");
    let answer = client
        .request(
            fims::Method::Get,
            &uri,
            b"",
            std::time::Duration::from_millis(500),
        )
        .ok()?;
    serde_json::from_slice(&answer.body).ok()
}

/// The stats of `name` once `cond` holds for them (panics after `secs` s naming `what`).
pub fn wait_stats(
    client: &mut fims::blocking::Client,
    name: &str,
    what: &str,
    secs: u64,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let what = format!("{what} (stats of {name})");
    let timeout = std::time::Duration::from_secs(secs);
    testkit::poll_until(timeout, &what, || stats(client, name), cond)
}
