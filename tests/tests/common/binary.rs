//! The `pglock` executable (package `pglock-cli`), built once per test process, for the tests
//! that run the real command (`cli.rs`, `cli_connect.rs`, `cli_top.rs`).
//!
//! `CARGO_BIN_EXE_pglock` only exists for the tests of the package that has the binary, so
//! this asks cargo, which builds it if it is missing or stale and names the file in its JSON
//! messages. It selects what `cargo test --workspace` (and nextest) builds, the workspace's
//! test targets, plus the binary: features then unify as in that build, so the binary links
//! against the dependencies already built instead of rebuilding tokio and sqlx under other
//! features.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = without_crate_variables(Command::new(&cargo))
            .args(["build", "--workspace", "--tests", "--bin", "pglock"])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(workspace())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {cargo:?} to build the pglock command: {e}"));
        assert!(
            output.status.success(),
            "building the pglock command failed ({}); run `cargo build -p pglock-cli` \
             to see why",
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .filter(|line| line.contains(r#""reason":"compiler-artifact""#))
            // The binary itself, not its unit-test harness (also a "bin" named pglock).
            .filter(|line| {
                line.contains(r#""name":"pglock""#)
                    && line.contains(r#""kind":["bin"]"#)
                    && line.contains(r#""test":false"#)
            })
            .find_map(|line| {
                let start = line.find(r#""executable":""#)? + r#""executable":""#.len();
                let end = start + line[start..].find('"')?;
                Some(PathBuf::from(&line[start..end]))
            })
            .unwrap_or_else(|| panic!("cargo named no pglock executable in:\n{stdout}"))
    })
}

/// `command` without the variables cargo sets for the crate under test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_NAME`, ...). Some build scripts (ring's) rerun when those change, so a cargo run
/// from a test would otherwise rebuild ring and everything above it (minutes) on every run, and
/// again for the next build from a shell.
pub fn without_crate_variables(mut command: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_crate = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&name.as_ref())
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_");
        if per_crate {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// The workspace's root directory.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}
