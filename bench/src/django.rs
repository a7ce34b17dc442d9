//! django-pglock measured by the interop helper's script, in the same run.
//!
//! `scripts/python-env` prints the Python to use; `tests/interop/bench_django.py <url> <n>`
//! prints `{"floor_us":..,"modes":{..},"medians":{"floor_us":..,"wait":..,"timeout0":..,
//! "timeout5s":..,"timeout_none":..,"shared":..,"xact":..},..}`; the medians are used.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::Res;
use crate::latency::{Mode, Op};
use crate::stats::Samples;

pub const MODES: &[(&str, &str)] = &[
    ("wait", "wait"),
    ("timeout0", "timeout=0 (try)"),
    ("timeout5s", "timeout=5 (timed)"),
    ("timeout_none", "timeout=None (wait forever)"),
    ("shared", "shared"),
    ("xact", "xact"),
];

/// The pglock measurement of the same mode.
pub fn pglock_counterpart(mode: &str) -> Option<Op> {
    Some(match mode {
        "wait" => Op::Runtime(Mode::Default),
        "timeout0" => Op::Runtime(Mode::Try),
        "timeout5s" => Op::Runtime(Mode::Timed),
        "timeout_none" => Op::Runtime(Mode::Forever),
        "shared" => Op::Runtime(Mode::Shared),
        "xact" => Op::RuntimeXactWhole,
        _ => return None,
    })
}

/// Results of the runs so far: the floor and each mode, one sample per run.
#[derive(Default)]
pub struct Django {
    pub floor: Samples,
    pub modes: Vec<Samples>,
    pub runs: usize,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is in the workspace")
        .to_path_buf()
}

/// Why django-pglock cannot be measured here, if it cannot.
pub fn missing() -> Option<String> {
    let root = repo_root();
    let env = root.join("scripts/python-env");
    let script = root.join("tests/interop/bench_django.py");
    match (env.exists(), script.exists()) {
        (true, true) => None,
        _ => Some(format!(
            "django-pglock not measured: {} or {} is missing",
            env.display(),
            script.display()
        )),
    }
}

impl Django {
    pub fn new() -> Self {
        Django {
            modes: vec![Samples::default(); MODES.len()],
            ..Django::default()
        }
    }

    /// One run of the script with `n` iterations per mode.
    pub async fn run(&mut self, url: &str, n: usize) -> Res<()> {
        let root = repo_root();
        let env = Command::new(root.join("scripts/python-env"))
            .current_dir(&root)
            .output()
            .await?;
        if !env.status.success() {
            return Err(format!(
                "scripts/python-env failed ({}): {}",
                env.status,
                String::from_utf8_lossy(&env.stderr)
            )
            .into());
        }
        let python = String::from_utf8_lossy(&env.stdout).trim().to_owned();
        let out = Command::new(&python)
            .current_dir(&root)
            .arg("tests/interop/bench_django.py")
            .arg(url)
            .arg(n.to_string())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "bench_django.py failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let json = stdout
            .lines()
            .rev()
            .find(|line| line.trim_start().starts_with('{'))
            .ok_or_else(|| format!("no JSON in bench_django.py's output: {stdout}"))?;
        // The medians, like ours (the script's "modes" are means).
        let medians = &json[json
            .find("\"medians\"")
            .ok_or_else(|| format!("no medians in {json}"))?..];
        self.floor.push_us(number(medians, "floor_us")?);
        for (i, (key, _)) in MODES.iter().enumerate() {
            self.modes[i].push_us(number(medians, key)?);
        }
        self.runs += 1;
        Ok(())
    }
}

/// The number after `"key":` in a flat JSON text.
fn number(json: &str, key: &str) -> Res<f64> {
    let quoted = format!("\"{key}\"");
    let at = json
        .find(&quoted)
        .ok_or_else(|| format!("no {quoted} in {json}"))?;
    let rest = json[at + quoted.len()..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| format!("no value for {quoted} in {json}"))?
        .trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    Ok(rest[..end].parse()?)
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn reads_flat_json_numbers() {
        let json =
            r#"{"floor_us": 81.5, "modes": {"wait": 160, "timeout0":150.25,"timeout5s":4.9e2}}"#;
        assert_eq!(number(json, "floor_us").unwrap(), 81.5);
        assert_eq!(number(json, "wait").unwrap(), 160.0);
        assert_eq!(number(json, "timeout0").unwrap(), 150.25);
        assert_eq!(number(json, "timeout5s").unwrap(), 490.0);
        assert!(number(json, "xact").is_err());
    }
}
