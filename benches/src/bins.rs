//! Finding the workspace's binaries next to the running executable, building
//! them with cargo when needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{err, Result};

/// The target profile directory of the running executable (`target/release`,
/// `target/debug`; a bench or test binary in `deps/` counts as its parent).
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| err!("current_exe: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| err!("{} has no parent directory", exe.display()))?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The workspace root this crate was built from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of binary `bin` of workspace package `package` in the running
/// executable's profile directory. With `build`, runs `cargo build -p package
/// --bin bin` in the same target directory and profile first (a no-op when it
/// is fresh; when cargo fails an existing binary is used as it is). Without,
/// the binary must exist (tests pass `--no-build`: a per-package build inside
/// `cargo test --workspace` would re-resolve features and swap artifacts).
pub fn sibling(package: &str, bin: &str, build: bool) -> Result<PathBuf> {
    let profile = profile_dir()?;
    let path = profile.join(bin);
    if !build {
        return match path.exists() {
            true => Ok(path),
            false => Err(err!("{} missing (and --no-build given)", path.display())),
        };
    }
    let built = build_bin(&profile, package, bin);
    match (built, path.exists()) {
        (_, true) => Ok(path),
        (Err(e), false) => Err(e),
        (Ok(()), false) => Err(err!("{} missing after cargo build", path.display())),
    }
}

fn build_bin(profile: &Path, package: &str, bin: &str) -> Result<()> {
    let target = profile
        .parent()
        .ok_or_else(|| err!("{} has no parent", profile.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    match profile.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd
        .status()
        .map_err(|e| err!("running cargo to build {bin}: {e}"))?;
    if !status.success() {
        return Err(err!(
            "cargo build -p {package} --bin {bin} failed ({status})"
        ));
    }
    Ok(())
}
