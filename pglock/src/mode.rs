//! The eight table-level lock modes of Postgres.

use std::fmt;
use std::str::FromStr;

/// A table-level lock mode, as `LOCK TABLE ... IN <mode> MODE` takes it and `pg_locks.mode`
/// shows it. Ordered from weakest to strongest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockMode {
    /// `ACCESS SHARE`: taken by `SELECT`. Conflicts only with `ACCESS EXCLUSIVE`.
    AccessShare,
    /// `ROW SHARE`: taken by `SELECT ... FOR UPDATE/SHARE`.
    RowShare,
    /// `ROW EXCLUSIVE`: taken by `INSERT`, `UPDATE`, `DELETE`.
    RowExclusive,
    /// `SHARE UPDATE EXCLUSIVE`: taken by `VACUUM`, `CREATE INDEX CONCURRENTLY`.
    ShareUpdateExclusive,
    /// `SHARE`: taken by `CREATE INDEX`.
    Share,
    /// `SHARE ROW EXCLUSIVE`: taken by `CREATE TRIGGER`.
    ShareRowExclusive,
    /// `EXCLUSIVE`: only reads (`ACCESS SHARE`) proceed alongside it.
    Exclusive,
    /// `ACCESS EXCLUSIVE`: taken by `DROP`, `TRUNCATE`, most `ALTER TABLE`. Conflicts with every
    /// mode. The default, as in `LOCK TABLE` and django-pglock.
    #[default]
    AccessExclusive,
}

impl LockMode {
    /// Every mode, weakest first.
    pub const ALL: [LockMode; 8] = [
        LockMode::AccessShare,
        LockMode::RowShare,
        LockMode::RowExclusive,
        LockMode::ShareUpdateExclusive,
        LockMode::Share,
        LockMode::ShareRowExclusive,
        LockMode::Exclusive,
        LockMode::AccessExclusive,
    ];

    /// The mode as `LOCK TABLE` spells it: `"ACCESS EXCLUSIVE"`.
    pub fn as_sql(self) -> &'static str {
        match self {
            LockMode::AccessShare => "ACCESS SHARE",
            LockMode::RowShare => "ROW SHARE",
            LockMode::RowExclusive => "ROW EXCLUSIVE",
            LockMode::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockMode::Share => "SHARE",
            LockMode::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockMode::Exclusive => "EXCLUSIVE",
            LockMode::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// The mode as `pg_locks.mode` shows it: `"AccessExclusiveLock"`.
    pub fn pg_locks_name(self) -> &'static str {
        match self {
            LockMode::AccessShare => "AccessShareLock",
            LockMode::RowShare => "RowShareLock",
            LockMode::RowExclusive => "RowExclusiveLock",
            LockMode::ShareUpdateExclusive => "ShareUpdateExclusiveLock",
            LockMode::Share => "ShareLock",
            LockMode::ShareRowExclusive => "ShareRowExclusiveLock",
            LockMode::Exclusive => "ExclusiveLock",
            LockMode::AccessExclusive => "AccessExclusiveLock",
        }
    }

    /// The mode as django-pglock names it in listings: `"ACCESS_EXCLUSIVE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::AccessShare => "ACCESS_SHARE",
            LockMode::RowShare => "ROW_SHARE",
            LockMode::RowExclusive => "ROW_EXCLUSIVE",
            LockMode::ShareUpdateExclusive => "SHARE_UPDATE_EXCLUSIVE",
            LockMode::Share => "SHARE",
            LockMode::ShareRowExclusive => "SHARE_ROW_EXCLUSIVE",
            LockMode::Exclusive => "EXCLUSIVE",
            LockMode::AccessExclusive => "ACCESS_EXCLUSIVE",
        }
    }

    /// Whether two sessions holding these modes on the same table would block each other,
    /// from Postgres' conflict table ("Conflicting Lock Modes").
    pub fn conflicts_with(self, other: LockMode) -> bool {
        use LockMode::*;
        let conflicts: &[LockMode] = match self {
            AccessShare => &[AccessExclusive],
            RowShare => &[Exclusive, AccessExclusive],
            RowExclusive => &[Share, ShareRowExclusive, Exclusive, AccessExclusive],
            ShareUpdateExclusive => &[
                ShareUpdateExclusive,
                Share,
                ShareRowExclusive,
                Exclusive,
                AccessExclusive,
            ],
            Share => &[
                RowExclusive,
                ShareUpdateExclusive,
                ShareRowExclusive,
                Exclusive,
                AccessExclusive,
            ],
            ShareRowExclusive => &[
                RowExclusive,
                ShareUpdateExclusive,
                Share,
                ShareRowExclusive,
                Exclusive,
                AccessExclusive,
            ],
            Exclusive => &[
                RowShare,
                RowExclusive,
                ShareUpdateExclusive,
                Share,
                ShareRowExclusive,
                Exclusive,
                AccessExclusive,
            ],
            AccessExclusive => &LockMode::ALL,
        };
        conflicts.contains(&other)
    }
}

impl fmt::Display for LockMode {
    /// django-pglock's name: `ACCESS_EXCLUSIVE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`LockMode`] from text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown lock mode {0:?}: expected one of ACCESS_SHARE, ROW_SHARE, ROW_EXCLUSIVE, \
     SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE"
)]
pub struct ParseLockModeError(String);

impl FromStr for LockMode {
    type Err = ParseLockModeError;

    /// Accepts any of the three spellings, in any case: `access exclusive`,
    /// `ACCESS_EXCLUSIVE`, `AccessExclusiveLock`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let folded: String = text
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let folded = folded.strip_suffix("LOCK").unwrap_or(&folded);
        LockMode::ALL
            .into_iter()
            .find(|mode| mode.as_str().replace('_', "") == folded)
            .ok_or_else(|| ParseLockModeError(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_symmetric() {
        for a in LockMode::ALL {
            for b in LockMode::ALL {
                assert_eq!(a.conflicts_with(b), b.conflicts_with(a), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn parses_all_three_spellings() {
        for mode in LockMode::ALL {
            for text in [mode.as_sql(), mode.as_str(), mode.pg_locks_name()] {
                assert_eq!(text.parse::<LockMode>(), Ok(mode), "{text}");
                assert_eq!(text.to_lowercase().parse::<LockMode>(), Ok(mode), "{text}");
            }
        }
        assert!("EXCLUSIVE SHARE".parse::<LockMode>().is_err());
        assert!("".parse::<LockMode>().is_err());
    }
}
