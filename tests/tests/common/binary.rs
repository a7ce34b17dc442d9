//! The `pglock` executable (package `pglock-cli`), built once per test process, for the tests
//! that run the real command (`cli_top.rs`; `cli.rs` has the same function of its own).
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
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(&cargo)
            .args(["build", "--workspace", "--tests", "--bin", "pglock"])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(workspace)
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
