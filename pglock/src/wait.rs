//! How long an acquisition waits for a lock that another session holds.

use std::time::Duration;

use crate::Error;

/// How long acquiring a lock waits while another session holds it.
///
/// These are django-pglock's four timeout meanings: unset, `None`, `0` and a positive duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Wait {
    /// The server's `lock_timeout` applies (infinite unless the role, database or session sets
    /// one). This is the default, as an unset timeout is in django-pglock.
    #[default]
    ServerDefault,
    /// Wait as long as it takes, whatever the server's `lock_timeout` says
    /// (django-pglock's `timeout=None`).
    Forever,
    /// Try once and never wait (django-pglock's `timeout=0`); uses `pg_try_advisory_*`.
    NoWait,
    /// Wait at most this long. Enforced by the server (`lock_timeout`, for the acquiring
    /// statement only), in whole milliseconds. Build it with [`Wait::at_most`], which turns
    /// anything under a millisecond into [`Wait::NoWait`], as django-pglock does.
    Limit(Duration),
}

/// The largest `lock_timeout` Postgres accepts: `INT_MAX` milliseconds, about 24.8 days.
pub(crate) const MAX_LOCK_TIMEOUT_MS: u128 = i32::MAX as u128;

impl Wait {
    /// Wait at most `limit`. Under one millisecond means do not wait at all.
    pub fn at_most(limit: Duration) -> Self {
        if limit < Duration::from_millis(1) {
            Wait::NoWait
        } else {
            Wait::Limit(limit)
        }
    }

    /// Check the wait against what Postgres accepts. Returns the `lock_timeout` in milliseconds
    /// this wait sets for its statement (`0` meaning no limit), or `None` if it sets none.
    pub(crate) fn lock_timeout_ms(self) -> Result<Option<u32>, Error> {
        match self {
            Wait::ServerDefault | Wait::NoWait => Ok(None),
            Wait::Forever => Ok(Some(0)),
            Wait::Limit(limit) => {
                let ms = limit.as_millis();
                if ms == 0 {
                    // Only reachable by building `Wait::Limit` by hand: 0 would mean "no limit".
                    return Err(Error::InvalidArgument(format!(
                        "a lock timeout of {limit:?} is under a millisecond; \
                         use Wait::NoWait (a zero timeout) to not wait at all"
                    )));
                }
                if ms > MAX_LOCK_TIMEOUT_MS {
                    return Err(Error::InvalidArgument(format!(
                        "a lock timeout of {limit:?} is longer than Postgres accepts \
                         ({MAX_LOCK_TIMEOUT_MS} ms, about 24.8 days); use Wait::Forever to wait \
                         without a limit"
                    )));
                }
                Ok(Some(ms as u32))
            }
        }
    }
}

impl From<Duration> for Wait {
    fn from(limit: Duration) -> Self {
        Wait::at_most(limit)
    }
}

impl From<Option<Duration>> for Wait {
    /// `None` waits forever, as django-pglock's `timeout=None` does.
    fn from(limit: Option<Duration>) -> Self {
        limit.map_or(Wait::Forever, Wait::at_most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_a_millisecond_means_no_wait() {
        assert_eq!(Wait::at_most(Duration::ZERO), Wait::NoWait);
        assert_eq!(Wait::at_most(Duration::from_micros(999)), Wait::NoWait);
        assert_eq!(
            Wait::at_most(Duration::from_millis(1)),
            Wait::Limit(Duration::from_millis(1))
        );
    }

    #[test]
    fn milliseconds_are_truncated_and_bounded() {
        let ms = |w: Wait| w.lock_timeout_ms().unwrap();
        assert_eq!(ms(Wait::at_most(Duration::from_micros(1500))), Some(1));
        assert_eq!(ms(Wait::Forever), Some(0));
        assert_eq!(ms(Wait::ServerDefault), None);
        assert_eq!(ms(Wait::NoWait), None);
        let most = Duration::from_millis(i32::MAX as u64);
        assert_eq!(ms(Wait::at_most(most)), Some(i32::MAX as u32));
        let err = Wait::at_most(most + Duration::from_millis(1))
            .lock_timeout_ms()
            .unwrap_err();
        assert!(
            err.to_string().contains("longer than Postgres accepts"),
            "{err}"
        );
        assert!(
            Wait::Limit(Duration::from_nanos(1))
                .lock_timeout_ms()
                .is_err()
        );
        assert!(Wait::at_most(Duration::MAX).lock_timeout_ms().is_err());
    }

    #[test]
    fn none_waits_forever() {
        assert_eq!(Wait::from(None), Wait::Forever);
        assert_eq!(
            Wait::from(Some(Duration::from_secs(2))),
            Wait::Limit(Duration::from_secs(2))
        );
    }
}
