//! Lock ids, and the keys Postgres stores advisory locks under.
//!
//! String ids hash exactly as django-pglock's do, so a Rust service and a Django service that
//! name the same lock exclude each other.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};

/// The key that Postgres' advisory-lock functions take.
///
/// Postgres has two key spaces that never collide with each other: one `bigint`, and a pair of
/// `integer`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AdvisoryKey {
    /// One `bigint` key. String and integer ids use this form. `pg_locks.objsubid` is 1.
    BigInt(i64),
    /// Two `integer` keys, as in `pg_advisory_lock(int, int)`. `pg_locks.objsubid` is 2.
    Pair(i32, i32),
}

impl AdvisoryKey {
    /// The key for a string id: the first 8 bytes of the SHA-256 digest of its UTF-8 bytes,
    /// read as a little-endian signed integer. This is what django-pglock computes.
    ///
    /// ```
    /// use pglock::AdvisoryKey;
    /// assert_eq!(AdvisoryKey::from_name("hello"), AdvisoryKey::BigInt(1054880662928880172));
    /// ```
    pub fn from_name(name: &str) -> Self {
        let digest = Sha256::digest(name.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        AdvisoryKey::BigInt(i64::from_le_bytes(first))
    }

    /// The `(classid, objid)` pair that `pg_locks` shows for this key.
    ///
    /// Both columns are unsigned `oid`s: a negative `bigint` key shows a classid above
    /// 2³¹ (django-pglock's `advisory_id` returns a negative number there; this does not).
    pub fn to_pg_locks_id(self) -> (u32, u32) {
        match self {
            AdvisoryKey::BigInt(key) => ((key >> 32) as u32, key as u32),
            AdvisoryKey::Pair(class, obj) => (class as u32, obj as u32),
        }
    }

    /// The `objsubid` that `pg_locks` shows for this key: 1 for `bigint`, 2 for a pair.
    pub fn pg_locks_objsubid(self) -> i16 {
        match self {
            AdvisoryKey::BigInt(_) => 1,
            AdvisoryKey::Pair(..) => 2,
        }
    }
}

/// An advisory lock's id: its key, and the name it was given (used in messages and listings).
///
/// Built from a string (hashed, see [`AdvisoryKey::from_name`]), an `i64` or `i32` (used as is),
/// a pair `(i32, i32)`, or an [`AdvisoryKey`]. A string `"5"` and the integer `5` are different
/// locks, as in django-pglock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockId {
    key: AdvisoryKey,
    name: Cow<'static, str>,
}

impl LockId {
    /// The key Postgres locks.
    pub fn key(&self) -> AdvisoryKey {
        self.key
    }

    /// The name the lock was given: the string itself, or the integer(s) written out.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A stand-in left behind when an id is moved out of a value that cannot give it up
    /// otherwise (one with a destructor): it costs nothing, where a clone allocates its name.
    pub(crate) const fn stand_in() -> Self {
        LockId {
            key: AdvisoryKey::BigInt(0),
            name: Cow::Borrowed(""),
        }
    }

    fn named(name: Cow<'static, str>) -> Self {
        LockId {
            key: AdvisoryKey::from_name(&name),
            name,
        }
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl From<&str> for LockId {
    fn from(name: &str) -> Self {
        LockId::named(Cow::Owned(name.to_owned()))
    }
}

impl From<String> for LockId {
    fn from(name: String) -> Self {
        LockId::named(Cow::Owned(name))
    }
}

impl From<&String> for LockId {
    fn from(name: &String) -> Self {
        LockId::from(name.as_str())
    }
}

impl From<Cow<'static, str>> for LockId {
    fn from(name: Cow<'static, str>) -> Self {
        LockId::named(name)
    }
}

impl From<i64> for LockId {
    fn from(key: i64) -> Self {
        AdvisoryKey::BigInt(key).into()
    }
}

impl From<i32> for LockId {
    fn from(key: i32) -> Self {
        AdvisoryKey::BigInt(key.into()).into()
    }
}

impl From<(i32, i32)> for LockId {
    fn from((class, obj): (i32, i32)) -> Self {
        AdvisoryKey::Pair(class, obj).into()
    }
}

impl From<AdvisoryKey> for LockId {
    fn from(key: AdvisoryKey) -> Self {
        let name = match key {
            AdvisoryKey::BigInt(key) => key.to_string(),
            AdvisoryKey::Pair(class, obj) => format!("({class}, {obj})"),
        };
        LockId {
            key,
            name: Cow::Owned(name),
        }
    }
}

/// The `(classid, objid)` pair that `pg_locks` shows for a lock id, as unsigned 32-bit values.
///
/// Use it to find a lock in `pg_locks` (`locktype = 'advisory'`, with `objsubid` from
/// [`AdvisoryKey::pg_locks_objsubid`]).
///
/// ```
/// assert_eq!(pglock::advisory_id("hello"), (245608543, 3125670444));
/// assert_eq!(pglock::advisory_id("my_lock_id"), (3472809032, 1440335576));
/// assert_eq!(pglock::advisory_id(i64::MAX), (2147483647, 4294967295));
/// ```
pub fn advisory_id(id: impl Into<LockId>) -> (u32, u32) {
    id.into().key().to_pg_locks_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_ids_hash_as_django_pglock_does() {
        assert_eq!(
            LockId::from("hello").key(),
            AdvisoryKey::BigInt(1054880662928880172)
        );
        assert_eq!(
            LockId::from("my_lock_id").key(),
            AdvisoryKey::BigInt(-3531142854575798568)
        );
    }

    #[test]
    fn pg_locks_ids_are_unsigned_halves() {
        assert_eq!(advisory_id("hello"), (245608543, 3125670444));
        assert_eq!(advisory_id("my_lock_id"), (3472809032, 1440335576));
        assert_eq!(advisory_id(-1i64), (u32::MAX, u32::MAX));
        assert_eq!(advisory_id((-1, 7)), (u32::MAX, 7));
    }

    #[test]
    fn string_and_integer_ids_are_different_locks() {
        assert_ne!(LockId::from("5").key(), LockId::from(5i64).key());
        assert_eq!(LockId::from(5i32).key(), LockId::from(5i64).key());
    }

    #[test]
    fn unusual_names_hash_without_error() {
        for name in [
            "",
            "it's \"quoted\"",
            "nul\0byte",
            "日本語のロック",
            "*/ DROP TABLE x; /*",
        ] {
            let id = LockId::from(name);
            assert_eq!(id.name(), name);
            assert!(matches!(id.key(), AdvisoryKey::BigInt(_)));
        }
        let long = "x".repeat(1 << 20);
        assert_eq!(LockId::from(long.as_str()).name().len(), 1 << 20);
    }

    #[test]
    fn names_of_integer_ids_are_written_out() {
        assert_eq!(LockId::from(42i64).to_string(), "42");
        assert_eq!(LockId::from((1, -2)).to_string(), "(1, -2)");
    }
}
