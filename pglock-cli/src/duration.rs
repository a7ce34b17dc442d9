//! Durations as people write them in filters and `--watch`: `90`, `1.5s`, `100ms`,
//! `1 minute`, `2 min 30 s`: the spellings of Postgres' intervals that django-pglock users pass
//! (`activity__duration__gt=1 minute`), and the short ones.

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

/// Parse `text`: one or more `<number>[ ]<unit>` amounts (summed), or one bare number of
/// seconds. Units: `ms`/`msec`/`millisecond(s)`, `s`/`sec`/`second(s)`, `m`/`min`/`minute(s)`,
/// `h`/`hr`/`hour(s)`, `d`/`day(s)`, any case. Negative or non-finite amounts are refused.
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
        let number: f64 = rest[..number_len].parse().map_err(|_| error())?;
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
            "d" | "day" | "days" => 86400.0,
            _ => return Err(error()),
        };
        let amount = seconds_to_duration(number * scale).ok_or_else(error)?;
        total = total.checked_add(amount).ok_or_else(error)?;
    }
    Ok(total)
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
        }
    }
}
