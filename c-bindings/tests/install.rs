//! `make install-strip PREFIX=...` (what the packages ship) puts the header,
//! `libcops_responder.so.<version>` with its `.so.0` and `.so` links, the
//! stripped `.a` and both pkg-config files under PREFIX. A C program then
//! builds and runs from them three ways: shared through `cops_responder`,
//! the `.a` in a dynamic program through `cops_responder-static`, and fully
//! static (`cc -static`) through `pkg-config --static cops_responder`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pkg_config(pc_dir: &Path, module: &str, args: &[&str]) -> Vec<String> {
    sh(Command::new("pkg-config")
        .args(args)
        .arg(module)
        .env("PKG_CONFIG_PATH", pc_dir))
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// `readelf -d` of `exe`: its NEEDED libraries, or "static" without a dynamic section.
fn needed(exe: &Path) -> Vec<String> {
    let out = sh(Command::new("readelf").arg("-d").arg(exe));
    if out.contains("There is no dynamic section") {
        return vec!["static".into()];
    }
    out.lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l[l.find('[')? + 1..l.rfind(']')?].to_owned()))
        .collect()
}

/// Installs into a fresh temp prefix; returns (temp dir guard, prefix).
fn install() -> (tempfile::TempDir, PathBuf) {
    common::lib_dir(); // the workspace build
                       // make install takes the libraries from TARGET_DIR/PROFILE, not deps/.
    let profile_dir = testkit::profile_dir();
    let profile = profile_dir
        .file_name()
        .expect("profile name")
        .to_string_lossy();
    let target = profile_dir.parent().expect("target dir");
    let tmp = tempfile::tempdir().expect("temp dir");
    let prefix = tmp.path().join("prefix");
    sh(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(common::crate_dir())
        .arg("install-strip")
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!("PROFILE={profile}"))
        .arg(format!("TARGET_DIR={}", target.display()))
        .arg(format!("BUILD={}", tmp.path().join("build").display()))
        .arg(format!(
            "CARGO={}",
            std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
        )));
    (tmp, prefix)
}

fn compile(out: &Path, flags: &[String], extra: &[&str]) {
    let src = common::crate_dir().join("tests/c/misuse.c");
    sh(Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(out)
        .arg(&src)
        .args(flags)
        .args(extra));
}

#[test]
fn make_install_files_and_links() {
    let (_tmp, prefix) = install();
    let lib = prefix.join("lib");
    let version = env!("CARGO_PKG_VERSION");
    let real = format!("libcops_responder.so.{version}");
    for f in [
        "include/cops_responder.h",
        "lib/libcops_responder.a",
        "lib/pkgconfig/cops_responder.pc",
        "lib/pkgconfig/cops_responder-static.pc",
    ] {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }
    let meta = std::fs::symlink_metadata(lib.join(&real)).expect("the versioned .so");
    assert!(meta.is_file(), "{real} is a regular file");
    let link = |name: &str| std::fs::read_link(lib.join(name)).expect(name);
    assert_eq!(link(common::SONAME), Path::new(&real));
    assert_eq!(link("libcops_responder.so"), Path::new(common::SONAME));

    // Stripped as the packages ship them: no symbol table beyond the dynamic
    // one in the .so, no debug sections in the .a.
    let so_sections = sh(Command::new("readelf")
        .args(["-S", "-W"])
        .arg(lib.join(&real)));
    assert!(!so_sections.contains(".symtab"), "the .so keeps .symtab");
    assert!(
        !so_sections.contains(".debug_info"),
        "the .so keeps debug info"
    );
    let a_sections = sh(Command::new("readelf")
        .args(["-S", "-W"])
        .arg(lib.join("libcops_responder.a")));
    assert!(
        !a_sections.contains(".debug_info"),
        "the .a keeps debug info"
    );

    // `make uninstall` takes every file back.
    sh(Command::new("make")
        .args(["-s", "-C"])
        .arg(common::crate_dir())
        .arg("uninstall")
        .arg(format!("PREFIX={}", prefix.display())));
    let left: Vec<_> = walk(&prefix);
    assert!(left.is_empty(), "left after uninstall: {left:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

#[test]
fn pkg_config_shared_static_and_fully_static() {
    let (tmp, prefix) = install();
    let pc_dir = prefix.join("lib/pkgconfig");
    let libdir = pkg_config(&pc_dir, "cops_responder", &["--variable=libdir"]).concat();
    assert_eq!(Path::new(&libdir), prefix.join("lib"));

    // Shared: the program asks for the SONAME and finds it through its rpath.
    let shared = tmp.path().join("misuse-shared");
    let flags = pkg_config(&pc_dir, "cops_responder", &["--cflags", "--libs"]);
    compile(&shared, &flags, &[&format!("-Wl,-rpath,{libdir}")]);
    assert!(
        needed(&shared).contains(&common::SONAME.to_owned()),
        "{:?}",
        needed(&shared)
    );
    sh(&mut Command::new(&shared));

    // cops_responder-static: the .a, although the .so lies beside it.
    let mixed = tmp.path().join("misuse-static-pc");
    let flags = pkg_config(&pc_dir, "cops_responder-static", &["--cflags", "--libs"]);
    compile(&mixed, &flags, &[]);
    let libs = needed(&mixed);
    assert!(
        !libs.iter().any(|l| l.contains("cops_responder")),
        "the static .pc linked the shared library: {libs:?}"
    );
    sh(&mut Command::new(&mixed));

    // Fully static: cc -static with `pkg-config --static` (Libs.private).
    let fully = tmp.path().join("misuse-fully-static");
    let flags = pkg_config(
        &pc_dir,
        "cops_responder",
        &["--static", "--cflags", "--libs"],
    );
    compile(&fully, &flags, &["-static"]);
    assert_eq!(needed(&fully), ["static"], "not a static executable");
    sh(&mut Command::new(&fully));
}
