//! Finding the workspace binaries the demo runs, next to its own executable.
//!
//! `cargo run -p cops-examples --bin cops-demo` builds only this package's
//! binaries, so on a fresh clone `fims_server` and `cops` do not exist yet: the
//! demo then runs `cargo build [--release] -p fims-server -p cops-server` itself
//! into the same target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The binaries the demo needs, by (package, binary).
pub const NEEDED: [(&str, &str); 3] = [
    ("fims-server", "fims_server"),
    ("cops-server", "cops"),
    ("cops-examples", "demo_process"),
];

/// Why the binaries could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum BinError {
    /// The demo's own path is unknown.
    #[error("cannot locate the demo's own executable: {0}")]
    CurrentExe(std::io::Error),
    /// Binaries are missing and building was not allowed.
    #[error("missing {missing:?} in {}; run `cargo build{} -p fims-server -p cops-server -p cops-examples`", dir.display(), if *release { " --release" } else { "" })]
    Missing {
        /// The directory searched.
        dir: PathBuf,
        /// File names missing.
        missing: Vec<String>,
        /// Whether the demo is a release build.
        release: bool,
    },
    /// cargo could not be run.
    #[error("could not run cargo to build {what}: {source}")]
    Cargo {
        /// What was being built.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// cargo ran and failed.
    #[error("`cargo build` of {what} failed ({status}); see its output above")]
    BuildFailed {
        /// What was being built.
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
}

/// Where the workspace binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The profile directory (`target/debug` or `target/release`).
    pub dir: PathBuf,
}

impl Bins {
    /// Path of binary `name` in [`Bins::dir`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// When to run cargo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Only when a binary is missing.
    IfMissing,
    /// Always (a no-op when fresh): what `cargo run` users get, so edits to
    /// the broker or COPS are picked up.
    Always,
    /// Never: fail when one is missing.
    Never,
}

/// Locates the binaries next to the running executable, building as `build` says.
pub fn locate(build: Build) -> Result<Bins, BinError> {
    let exe = std::env::current_exe().map_err(BinError::CurrentExe)?;
    let dir = exe
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| BinError::CurrentExe(std::io::Error::other("executable has no parent")))?;
    let bins = Bins { dir };
    let missing = || -> Vec<String> {
        NEEDED
            .iter()
            .filter(|(_, b)| !bins.path(b).is_file())
            .map(|(_, b)| b.to_string())
            .collect()
    };
    let release = bins.dir.file_name().is_some_and(|n| n == "release");
    let need_build = match build {
        Build::Always => true,
        Build::IfMissing => !missing().is_empty(),
        Build::Never => false,
    };
    if need_build {
        cargo_build(&bins.dir, release)?;
    }
    let missing = missing();
    if !missing.is_empty() {
        return Err(BinError::Missing {
            dir: bins.dir,
            missing,
            release,
        });
    }
    Ok(bins)
}

/// Builds the broker's and COPS's binaries, then `demo_process`, in two cargo
/// runs: one run over all three packages would unify features across them
/// (cops-server turns on fims's `tokio`), rebuild this package's binaries
/// under other hashes, and the next `cargo run -p cops-examples` would
/// rebuild them back, every time.
fn cargo_build(profile_dir: &Path, release: bool) -> Result<(), BinError> {
    let profile = if release { " --release" } else { "" };
    eprintln!(
        "cops-demo: making sure the broker and COPS are built \
         (cargo build{profile} -p fims-server -p cops-server; a minute on a fresh clone)"
    );
    let tools = ["-p", "fims-server", "-p", "cops-server", "--bins"];
    cargo(&tools, profile_dir, release, "fims-server and cops-server")?;
    let ours = ["-p", "cops-examples", "--bin", "demo_process"];
    cargo(&ours, profile_dir, release, "demo_process")
}

fn cargo(args: &[&str], profile_dir: &Path, release: bool, what: &str) -> Result<(), BinError> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .args(args);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let status = cmd.status().map_err(|source| BinError::Cargo {
        what: what.to_owned(),
        source,
    })?;
    if !status.success() {
        return Err(BinError::BuildFailed {
            what: what.to_owned(),
            status,
        });
    }
    Ok(())
}
