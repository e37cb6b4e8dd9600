//! Tests across tessera services, each started as its real binary as in production: no
//! service needs another's crate to be tested with it.
//!
//! [`binary`] finds a service binary of this workspace, built up to date; [`stack`] starts
//! the three of them wired together.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

pub mod stack;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The binaries the tests start, built in one cargo run.
const BINARIES: [&str; 3] = ["auth", "orders", "users"];

/// The path of the workspace binary `name` (`"auth"`), built from the current sources.
///
/// The first call in a test process runs `cargo build` for every binary the tests start,
/// since whatever built the tests need not have built them, or not from these sources.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    assert!(
        BINARIES.contains(&name),
        "{name} is not among the binaries built for the tests: {BINARIES:?}"
    );
    let path = BUILT
        .get_or_init(build)
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "cargo built no {}", path.display());
    path
}

/// Builds [`BINARIES`] with the profile the running test was built with; returns the
/// directory they are in.
fn build() -> PathBuf {
    let profile_dir = profile_dir();
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => panic!("no profile directory in {}", profile_dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The workspace root: every member's binaries can be named from there. The target
    // directory comes from the inherited environment (`CARGO_TARGET_DIR`), as it did for the
    // build that made this test.
    let workspace = tessera_testkit::manifest_dir(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = Command::new(&cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--quiet", "--profile", &profile]);
    // What cargo told this test about its own package would reach build scripts that watch
    // those variables (ring's does) and make cargo rebuild them and all above, every time.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(describes_this_package) {
            command.env_remove(name);
        }
    }
    for name in BINARIES {
        command.args(["--bin", name]);
    }
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", cargo.to_string_lossy()));
    assert!(status.success(), "{command:?} failed: {status}");
    profile_dir
}

/// Whether `variable` is one cargo sets for a test about the test's own package.
fn describes_this_package(variable: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_",
        "CARGO_CRATE_",
    ]
    .iter()
    .any(|prefix| variable.starts_with(prefix))
        || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&variable)
}

/// `<target-dir>/<profile>`: test executables are in its `deps/`, binaries in it.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap_or_else(|error| panic!("cannot locate the test executable: {error}"));
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in <profile>/deps", exe.display()))
        .to_owned()
}
