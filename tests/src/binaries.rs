//! Finding the Postgres server binaries (`initdb`, `postgres`).

use std::path::{Path, PathBuf};

/// The environment variable naming a Postgres `bin/` directory to use instead of searching.
pub(crate) const BINDIR_VAR: &str = "PGLOCK_PG_BINDIR";

/// Where Debian and Ubuntu install each major version's server binaries.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// A directory holding both `initdb` and `postgres` of one Postgres build.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) bindir: PathBuf,
    /// For a build named by `PGLOCK_PG_BINDIR`: its own `lib/` next to `bin/`, if it has one.
    /// Relocatable builds (such as the npm ones) may need it on `LD_LIBRARY_PATH`. Installed
    /// builds find their libraries by themselves, so it is left alone for them.
    pub(crate) libdir: Option<PathBuf>,
}

impl Binaries {
    /// Path of the program `name` in this build.
    pub(crate) fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// Finds the binaries: `PGLOCK_PG_BINDIR`, else `PATH`, else Debian's
    /// `/usr/lib/postgresql/<highest version>/bin`.
    ///
    /// # Panics
    ///
    /// When none is found (or `PGLOCK_PG_BINDIR` lacks them), saying how to fix it.
    pub(crate) fn find() -> Binaries {
        if let Some(dir) = std::env::var_os(BINDIR_VAR).filter(|dir| !dir.is_empty()) {
            let bindir = PathBuf::from(dir);
            if !has_server(&bindir) {
                panic!(
                    "pglock-tests: {BINDIR_VAR}={} does not contain both `initdb` and `postgres`. \
                     Fix: point {BINDIR_VAR} at the bin/ directory of a Postgres build, unset it \
                     to search PATH and {DEBIAN_ROOT}/*/bin, or set DATABASE_URL to an existing \
                     server.",
                    bindir.display()
                );
            }
            let libdir = bindir
                .parent()
                .map(|build| build.join("lib"))
                .filter(|lib| lib.is_dir());
            return Binaries { bindir, libdir };
        }
        if let Some(bindir) = on_path().or_else(debian) {
            return Binaries {
                bindir,
                libdir: None,
            };
        }
        panic!(
            "pglock-tests: no Postgres server binaries found (looked for `initdb` and `postgres` \
             in {BINDIR_VAR}, on PATH and in {DEBIAN_ROOT}/*/bin), and DATABASE_URL is not set. \
             Fix one of: install Postgres (`apt-get install -y postgresql`, or run scripts/test, \
             which does that); set {BINDIR_VAR} to the bin/ directory of a Postgres build; or \
             set DATABASE_URL to a server the tests may create databases on \
             (e.g. postgres://postgres@127.0.0.1:5432/postgres)."
        )
    }
}

/// Whether `dir` has both programs.
fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// The directory of the first `initdb` on `PATH`, resolving symlinks so that `postgres` comes
/// from the same build (e.g. `/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb`).
fn on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        let initdb = dir.join("initdb");
        if !initdb.is_file() {
            return None;
        }
        let real = std::fs::canonicalize(&initdb).ok();
        let real_dir = real.as_deref().and_then(Path::parent);
        match real_dir {
            Some(real_dir) if has_server(real_dir) => Some(real_dir.to_path_buf()),
            _ if has_server(&dir) => Some(dir),
            _ => None,
        }
    })
}

/// `/usr/lib/postgresql/<version>/bin` for the highest version that has the server.
fn debian() -> Option<PathBuf> {
    let entries = std::fs::read_dir(DEBIAN_ROOT).ok()?;
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = version_key(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `"9.6"` -> `[9, 6]`, `"15"` -> `[15]`; `None` for names that are not versions.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut keys: Vec<_> = ["9.6", "15", "13", "18", "x"]
            .iter()
            .filter_map(|v| version_key(v))
            .collect();
        keys.sort();
        assert_eq!(keys.last(), Some(&vec![18]));
        assert_eq!(keys.first(), Some(&vec![9, 6]));
    }
}
