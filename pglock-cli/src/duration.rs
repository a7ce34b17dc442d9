//! Durations as people write them in filters and `--watch`: `90`, `1.5s`, `100ms`,
//! `1 minute`, `2 min 30 s`: the spellings of Postgres' intervals that django-pglock users pass
//! (`activity__duration__gt=1 minute`), and the short ones; and the clock form the listing
//! prints (`0:00:05`, `1 day, 2:03:04`, Python's `timedelta` as django-pglock shows it), so a
//! duration copied from a listing works in a filter.
//!
//! Hand-written rather than humantime's: humantime takes neither fractions (`1.5s`), bare
//! seconds (`90`) nor clocks (`0:00:05`), all of which django-pglock users write; the grammar
//! is a superset of the attributes' (`"1.5s"`, `"250ms"`, `"2m"`, `"1h"`, a number of
//! seconds).

use std::time::Duration;

/// What a duration that does not parse was, for the message.
#[derive(Debug, PartialEq, Eq)]
pub struct DurationError(pub String);

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bad duration {:?}: expected a number of seconds or amounts with units, \
             e.g. 30, 1.5s, 500ms, 1 minute, 2h 30m",
            self.0
        )
    }
}

/// Parse `text`: one or more `<number>[ ]<unit>` amounts (summed), the last of which may be a
/// clock `H:MM:SS[.fraction]` (after days, a comma may follow them: `1 day, 2:03:04`), or one
/// bare number of seconds. Units: `ms`/`msec`/`millisecond(s)`, `s`/`sec`/`second(s)`,
/// `m`/`min`/`minute(s)`, `h`/`hr`/`hour(s)`, `d`/`day(s)`, any case. Negative or non-finite
/// amounts are refused, and so is `M:SS`, which Postgres and Django read differently.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let error = || DurationError(text.to_owned());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(error());
    }
    if let Ok(seconds) = rest.parse::<f64>() {
        return seconds_to_duration(seconds).ok_or_else(error);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number_text = &rest[..number_len];
        if rest[number_len..].starts_with(':') {
            let seconds = clock(rest).ok_or_else(error)?;
            let amount = seconds_to_duration(seconds).ok_or_else(error)?;
            return total.checked_add(amount).ok_or_else(error);
        }
        let number: f64 = number_text.parse().map_err(|_| error())?;
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].to_ascii_lowercase();
        rest = rest[unit_len..].trim_start();
        let scale = match unit.as_str() {
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 0.001,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => {
                // `1 day, 2:03:04`, as Python prints a timedelta.
                if let Some(after) = rest.strip_prefix(',') {
                    rest = after.trim_start();
                    if !rest.contains(':') {
                        return Err(error());
                    }
                }
                86400.0
            }
            _ => return Err(error()),
        };
        let amount = seconds_to_duration(number * scale).ok_or_else(error)?;
        total = total.checked_add(amount).ok_or_else(error)?;
    }
    Ok(total)
}

/// `H:MM:SS[.fraction]`, the whole of `text`, in seconds.
fn clock(text: &str) -> Option<f64> {
    let mut parts = text.trim_end().split(':');
    let (hours, minutes, seconds) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, "0"));
    if parts.next().is_some()
        || !digits(hours)
        || minutes.len() != 2
        || !digits(minutes)
        || whole.len() != 2
        || !digits(whole)
        || !digits(fraction)
    {
        return None;
    }
    let (minutes, whole): (f64, f64) = (minutes.parse().ok()?, whole.parse().ok()?);
    if minutes >= 60.0 || whole >= 60.0 {
        return None;
    }
    let fraction: f64 = format!("0.{fraction}").parse().ok()?;
    Some(hours.parse::<f64>().ok()? * 3600.0 + minutes * 60.0 + whole + fraction)
}

fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    if seconds.is_sign_negative() && seconds != 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

/// A duration as django-pglock prints one (Python's `timedelta` without microseconds):
/// `0:00:05`, `1:02:03`, `1 day, 2:03:04`, `3 days, 0:00:00`.
pub fn format(duration: Duration) -> String {
    let total = duration.as_secs();
    let (days, rest) = (total / 86_400, total % 86_400);
    let clock = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => clock,
        1 => format!("1 day, {clock}"),
        days => format!("{days} days, {clock}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_numbers_and_units() {
        let ok = |text: &str, ms: u64| assert_eq!(parse(text), Ok(Duration::from_millis(ms)));
        ok("90", 90_000);
        ok("0.25", 250);
        ok("1.5s", 1_500);
        ok("500ms", 500);
        ok("1 minute", 60_000);
        ok("2 min 30 s", 150_000);
        ok("2h30m", 9_000_000);
        ok("1 DAY", 86_400_000);
        ok(" 5 seconds ", 5_000);
        ok("0", 0);
        ok("0:00:05", 5_000);
        ok("1:02:03.25", 3_723_250);
        ok("1 day, 2:03:04", 93_784_000);
        ok("3 days 0:00:00", 259_200_000);
        ok("1h 0:00:01", 3_601_000);
    }

    #[test]
    fn refuses_the_rest() {
        for text in [
            "",
            " ",
            "-1",
            "-1s",
            "1 fortnight",
            "s",
            "1.2.3s",
            "NaN",
            "inf",
            "1e400",
            "5 s x",
            "1,5s",
            "1:30",
            "0:60:00",
            "0:00:5",
            "1:00:00 5s",
            "1 day,",
            "1 h, 0:00:01",
            ":00:00",
            "0:00:00.",
        ] {
            assert_eq!(parse(text), Err(DurationError(text.to_owned())), "{text:?}");
        }
    }

    #[test]
    fn formats_as_django_pglock_does() {
        assert_eq!(format(Duration::from_millis(5_900)), "0:00:05");
        assert_eq!(format(Duration::from_secs(3_723)), "1:02:03");
        assert_eq!(
            format(Duration::from_secs(86_400 + 7_384)),
            "1 day, 2:03:04"
        );
        assert_eq!(format(Duration::from_secs(3 * 86_400)), "3 days, 0:00:00");
    }

    proptest! {
        #[test]
        fn never_panics_and_errors_name_the_input(text in ".{0,40}") {
            if let Err(error) = parse(&text) {
                prop_assert_eq!(&error.0, &text);
                prop_assert!(error.to_string().contains("bad duration"));
            }
        }

        #[test]
        fn whole_seconds_round_trip(seconds in 0u64..10_000_000) {
            prop_assert_eq!(parse(&format!("{seconds}s")), Ok(Duration::from_secs(seconds)));
            prop_assert_eq!(parse(&seconds.to_string()), Ok(Duration::from_secs(seconds)));
            // What the listing prints reads back.
            prop_assert_eq!(parse(&format(Duration::from_secs(seconds))), Ok(Duration::from_secs(seconds)));
        }
    }
}
