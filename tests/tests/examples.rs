//! The runnable examples (`tests/examples/`) run, not only build: the job runner, against the
//! harness's server, runs each tick's job exactly once across its three replicas (it asserts so
//! itself and exits non-zero otherwise).

#[path = "common/binary.rs"]
#[allow(dead_code)] // the pglock command itself is not built here
mod command;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use pglock_tests::TestDb;

/// Builds `tests/examples/<name>.rs` (with the features of the test build, as `command` does)
/// and returns the executable.
fn example(name: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = command::without_crate_variables(Command::new(&cargo))
        .args(["build", "--workspace", "--tests", "--example", name])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(command::workspace())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {cargo:?} to build the example {name}: {e}"));
    assert!(
        output.status.success(),
        "building the example {name} failed"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter(|line| line.contains(r#""reason":"compiler-artifact""#))
        .filter(|line| {
            line.contains(&format!(r#""name":"{name}""#)) && line.contains(r#""kind":["example"]"#)
        })
        .find_map(|line| {
            let start = line.find(r#""executable":""#)? + r#""executable":""#.len();
            let end = start + line[start..].find('"')?;
            Some(PathBuf::from(&line[start..end]))
        })
        .unwrap_or_else(|| panic!("cargo named no {name} executable in:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_runner_runs_each_tick_once() {
    let db = TestDb::new().await;
    let binary = example("job_runner");
    // The example makes a database of its own on the server named by DATABASE_URL.
    let output = Command::new(&binary)
        .env("DATABASE_URL", db.url())
        .output()
        .expect("running the job runner example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the job runner failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("3 runs in 3 ticks"), "{stdout}");
}
