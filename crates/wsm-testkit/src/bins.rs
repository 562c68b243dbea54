//! Binaries of other workspace packages that tests run as processes. Cargo builds only a test's
//! own package's binaries for it (`CARGO_BIN_EXE_<name>`), so these are found next to the test
//! executable, and built there once if they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `feed-server` binary: `FEED_SERVER_BIN` if set, else `target/<profile>/feed-server` beside
/// the running test, which `cargo build -p feed-server` makes first if it is not there (a
/// workspace build, `cargo test --workspace`, has made it already).
pub fn feed_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("FEED_SERVER_BIN") {
            return PathBuf::from(path);
        }
        workspace_bin("feed-server", "feed-server")
    })
    .clone()
}

/// `target/<profile>/<bin>` beside the running test (`target/<profile>/deps/<test>`), built from
/// `package` with the same profile if it is missing.
fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let path = profile.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    if path.exists() {
        return path;
    }
    let target_dir = profile
        .parent()
        .expect("target/<profile> is in a target directory");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(target_dir);
    // target/debug is the dev profile's; every other profile's directory has its name.
    if let Some(name) = profile.file_name().and_then(|name| name.to_str()) {
        if name != "debug" {
            build.args(["--profile", name]);
        }
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {bin}: {e}"));
    assert!(
        status.success() && path.exists(),
        "`cargo build -p {package} --bin {bin}` did not make {}",
        path.display()
    );
    path
}
