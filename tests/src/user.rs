//! Who the throwaway cluster runs as: `initdb` and `postgres` refuse to run as root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An unprivileged account to run `initdb` and `postgres` as, when the tests run as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    /// The account's name, for messages.
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `None` when this process is not root (the server can run as us), else the account to switch
/// to: `postgres` if it exists, else `nobody`.
///
/// # Panics
///
/// When running as root and neither account exists.
pub(crate) fn run_as() -> Option<RunAs> {
    if effective_uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let account = ["postgres", "nobody"]
        .iter()
        .find_map(|name| lookup(&passwd, name));
    match account {
        Some(account) => Some(account),
        None => panic!(
            "pglock-tests: running as root, and initdb refuses to run as root, but there is \
             neither a `postgres` nor a `nobody` user in /etc/passwd to run the test cluster as. \
             Fix: create one (`useradd --system postgres`), run the tests as a normal user, or \
             set DATABASE_URL to an existing server."
        ),
    }
}

/// The effective uid of this process, from `/proc/self/status`; falls back to the owner of a
/// file we just created where `/proc` is missing.
fn effective_uid() -> u32 {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(euid) = parse_status_euid(&status)
    {
        return euid;
    }
    // Without /proc: a file we create is owned by our effective uid.
    let probe = std::env::temp_dir().join(format!("pglock-euid-{}", std::process::id()));
    let uid = std::fs::File::create(&probe)
        .and_then(|file| file.metadata())
        .map(|meta| meta.uid())
        .unwrap_or(u32::MAX);
    let _ = std::fs::remove_file(&probe);
    uid
}

/// The effective uid from the `Uid:` line of `/proc/<pid>/status` (real, effective, saved, fs).
fn parse_status_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The account called `name` in the text of an `/etc/passwd` file.
fn lookup(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(RunAs {
            name: name.to_owned(),
            uid,
            gid,
        })
    })
}

/// The first directory among `path` and its ancestors that `user` cannot traverse (search), if
/// any. `None` for `user` means ourselves, who can.
pub(crate) fn untraversable(path: &Path, user: Option<&RunAs>) -> Option<PathBuf> {
    let user = user?;
    path.ancestors()
        .find(|dir| match std::fs::metadata(dir) {
            Ok(meta) => {
                let mode = meta.mode();
                let allowed = if meta.uid() == user.uid {
                    mode & 0o100
                } else if meta.gid() == user.gid {
                    mode & 0o010
                } else {
                    mode & 0o001
                };
                allowed == 0
            }
            Err(_) => false, // Does not exist yet: we will create it.
        })
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_effective_uid() {
        let status = "Name:\tcat\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n";
        assert_eq!(parse_status_euid(status), Some(0));
    }

    #[test]
    fn looks_up_accounts_by_exact_name() {
        let passwd = "postgresx:x:1:1::/:/bin/sh\npostgres:x:101:104:PG,,,:/var/lib/postgresql:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(
            lookup(passwd, "postgres"),
            Some(RunAs {
                name: "postgres".into(),
                uid: 101,
                gid: 104
            })
        );
        assert_eq!(lookup(passwd, "nobody").map(|a| a.uid), Some(65534));
        assert_eq!(lookup(passwd, "root"), None);
    }

    #[test]
    fn everyone_can_traverse_the_root_directory() {
        let nobody = RunAs {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        };
        assert_eq!(untraversable(Path::new("/"), Some(&nobody)), None);
        assert_eq!(untraversable(Path::new("/root/x"), None), None);
    }
}
