//! `make install PREFIX=...` puts the header, both libraries and a
//! `cops_responder.pc` under PREFIX; a C program builds from them through
//! pkg-config (shared) and from the installed `.a` (static), and runs.

mod common;

use std::path::Path;
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

fn pkg_config(pc_dir: &Path, args: &[&str]) -> Vec<String> {
    sh(Command::new("pkg-config")
        .args(args)
        .arg("cops_responder")
        .env("PKG_CONFIG_PATH", pc_dir))
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

#[test]
fn make_install_and_pkg_config() {
    common::lib_dir(); // the workspace build
    let profile_dir = testkit::profile_dir();
    let profile = profile_dir
        .file_name()
        .expect("profile name")
        .to_string_lossy();
    let target = profile_dir.parent().expect("target dir");
    let tmp = tempfile::tempdir().expect("temp dir");
    let prefix = tmp.path().join("prefix");
    let crate_dir = common::crate_dir();
    sh(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&crate_dir)
        .arg("install")
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!("PROFILE={profile}"))
        .arg(format!("TARGET_DIR={}", target.display()))
        .arg(format!("BUILD={}", tmp.path().join("build").display()))
        .arg(format!(
            "CARGO={}",
            std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
        )));
    for f in [
        "include/cops_responder.h",
        "lib/libcops_responder.a",
        "lib/libcops_responder.so",
        "lib/pkgconfig/cops_responder.pc",
    ] {
        assert!(prefix.join(f).exists(), "{f} not installed");
    }
    let pc_dir = prefix.join("lib/pkgconfig");
    let libdir = pkg_config(&pc_dir, &["--variable=libdir"]).concat();
    assert_eq!(Path::new(&libdir), prefix.join("lib"));
    let src = crate_dir.join("tests/c/misuse.c");

    let shared = tmp.path().join("misuse-shared");
    sh(Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&shared)
        .arg(&src)
        .args(pkg_config(&pc_dir, &["--cflags", "--libs"]))
        .arg(format!("-Wl,-rpath,{libdir}")));
    sh(&mut Command::new(&shared));

    let stat = tmp.path().join("misuse-static");
    sh(Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&stat)
        .arg(&src)
        .args(pkg_config(&pc_dir, &["--cflags"]))
        .arg(format!("{libdir}/libcops_responder.a"))
        .args(common::STATIC_LIBS));
    sh(&mut Command::new(&stat));
}
