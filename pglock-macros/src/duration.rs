//! Durations written in attributes: `"1.5s"`, `"250ms"`, `"2m"`, `"1h"`, `1` or `1.5` (seconds),
//! checked at compile time and turned into exact seconds and nanoseconds.

use syn::{Expr, ExprLit, ExprUnary, Lit, UnOp};

/// A duration, exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur {
    pub secs: u64,
    pub nanos: u32,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl Dur {
    fn from_nanos(nanos: u128) -> Option<Self> {
        Some(Dur {
            secs: u64::try_from(nanos / NANOS_PER_SEC).ok()?,
            nanos: (nanos % NANOS_PER_SEC) as u32,
        })
    }

    pub fn as_nanos(self) -> u128 {
        u128::from(self.secs) * NANOS_PER_SEC + u128::from(self.nanos)
    }

    /// Whole milliseconds, as Postgres' `lock_timeout` counts them.
    pub fn as_millis(self) -> u128 {
        self.as_nanos() / 1_000_000
    }
}

const FORMS: &str =
    "a duration such as \"1.5s\", \"250ms\", \"2m\" or \"1h\", or a number of seconds";

/// Parse a duration from an attribute value: a string with a unit, or a number of seconds.
pub fn parse(expr: &Expr) -> syn::Result<Dur> {
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => parse_lit(lit),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => Err(syn::Error::new_spanned(
            expr,
            "a duration cannot be negative",
        )),
        _ => Err(syn::Error::new_spanned(expr, format!("expected {FORMS}"))),
    }
}

fn parse_lit(lit: &Lit) -> syn::Result<Dur> {
    let parsed = match lit {
        Lit::Str(text) => parse_text(&text.value()),
        Lit::Int(int) if int.suffix().is_empty() => decimal(int.base10_digits(), NANOS_PER_SEC),
        Lit::Float(float) if float.suffix().is_empty() => {
            decimal(float.base10_digits(), NANOS_PER_SEC)
        }
        _ => Err(format!("expected {FORMS}")),
    };
    parsed.map_err(|message| syn::Error::new_spanned(lit, message))
}

/// `"1.5s"` → 1.5 seconds.
fn parse_text(text: &str) -> Result<Dur, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: write it as {FORMS}"))?;
    let (number, unit) = trimmed.split_at(split);
    let per_unit: u128 = match unit.trim() {
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" | "min" => 60 * NANOS_PER_SEC,
        "h" => 3600 * NANOS_PER_SEC,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    if number.is_empty() {
        return Err(format!("{text:?} has no number: write it as {FORMS}"));
    }
    decimal(number, per_unit)
}

/// `digits` (like `"1.25"`) times `per_unit` nanoseconds, exactly.
fn decimal(digits: &str, per_unit: u128) -> Result<Dur, String> {
    let invalid = || format!("{digits:?} is not a number: write {FORMS}");
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(invalid());
    }
    let digit_value = |part: &str| -> Result<u128, String> {
        if part.chars().all(|c| c.is_ascii_digit()) {
            part.parse::<u128>().or_else(|_| {
                if part.is_empty() {
                    Ok(0)
                } else {
                    Err(invalid())
                }
            })
        } else {
            Err(invalid())
        }
    };
    let too_long = || format!("{digits:?} is too long a duration");
    let whole = digit_value(whole)?
        .checked_mul(per_unit)
        .ok_or_else(too_long)?;
    // Fractions beyond nanosecond precision are dropped.
    let mut scale = per_unit;
    let mut frac_nanos: u128 = 0;
    for digit in fraction.chars() {
        let digit = digit.to_digit(10).ok_or_else(invalid)? as u128;
        scale /= 10;
        frac_nanos += digit * scale;
    }
    Dur::from_nanos(whole + frac_nanos).ok_or_else(too_long)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(text: &str) -> u128 {
        parse_text(text).unwrap().as_nanos()
    }

    #[test]
    fn units_and_fractions_are_exact() {
        assert_eq!(nanos("0s"), 0);
        assert_eq!(nanos("250ms"), 250_000_000);
        assert_eq!(nanos("1.5s"), 1_500_000_000);
        assert_eq!(nanos("2m"), 120_000_000_000);
        assert_eq!(nanos("1h"), 3_600_000_000_000);
        assert_eq!(nanos(" 0.001s "), 1_000_000);
        assert_eq!(nanos("1.0000000019s"), 1_000_000_001);
    }

    #[test]
    fn malformed_text_is_refused_with_a_reason() {
        for (text, reason) in [
            ("5", "no unit"),
            ("s", "no number"),
            ("1.2.3s", "not a number"),
            ("5 sec", "unknown unit"),
            ("-1s", "negative"),
            ("99999999999999999999999h", "too long"),
        ] {
            let error = parse_text(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        const UNITS: [(&str, u128); 5] = [
            ("ms", 1_000_000),
            ("s", NANOS_PER_SEC),
            ("m", 60 * NANOS_PER_SEC),
            ("min", 60 * NANOS_PER_SEC),
            ("h", 3600 * NANOS_PER_SEC),
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any text at all: a duration or an error that says what is wrong, never a panic.
            #[test]
            fn arbitrary_text_never_panics(text in any::<String>()) {
                match parse_text(&text) {
                    Ok(dur) => prop_assert!(dur.nanos < 1_000_000_000),
                    Err(message) => prop_assert!(!message.is_empty()),
                }
            }

            /// Text made of the parser's own alphabet, where the edge cases live.
            #[test]
            fn text_from_the_duration_alphabet_never_panics(
                text in "[ 0-9.\\-+eE_a-z\u{00e9}\u{0660}]{0,24}"
            ) {
                if let Err(message) = parse_text(&text) {
                    prop_assert!(!message.is_empty());
                }
            }

            /// `<whole>[.<fraction>]<unit>` parses to exactly that many nanoseconds (fractions
            /// beyond a nanosecond dropped), with any surrounding whitespace.
            #[test]
            fn valid_forms_round_trip(
                whole in 0u64..1_000_000,
                fraction in "[0-9]{0,12}",
                unit in 0usize..UNITS.len(),
                pad in "[ \t]{0,2}",
            ) {
                let (suffix, per_unit) = UNITS[unit];
                let text = if fraction.is_empty() {
                    format!("{pad}{whole}{suffix}{pad}")
                } else {
                    format!("{pad}{whole}.{fraction}{suffix}{pad}")
                };
                let mut expected = u128::from(whole) * per_unit;
                let mut scale = per_unit;
                for digit in fraction.chars() {
                    scale /= 10;
                    expected += u128::from(digit.to_digit(10).unwrap()) * scale;
                }
                let parsed = parse_text(&text).map_err(TestCaseError::fail)?;
                prop_assert_eq!(parsed.as_nanos(), expected, "{:?}", text);
                prop_assert_eq!(parsed.as_millis(), expected / 1_000_000);
            }

            /// A whole number of milliseconds written in each unit that divides it is the same
            /// duration every way.
            #[test]
            fn units_agree(ms in 0u64..10_000_000) {
                let from_ms = parse_text(&format!("{ms}ms")).unwrap();
                let secs = format!("{}.{:03}s", ms / 1000, ms % 1000);
                prop_assert_eq!(parse_text(&secs).unwrap(), from_ms);
                if ms % 60_000 == 0 {
                    prop_assert_eq!(parse_text(&format!("{}m", ms / 60_000)).unwrap(), from_ms);
                }
            }

            /// A negative duration is refused as negative, whatever follows the sign.
            #[test]
            fn negatives_say_so(rest in "[0-9.a-z]{0,8}") {
                let message = parse_text(&format!("-{rest}")).unwrap_err();
                prop_assert!(message.contains("negative"), "{}", message);
            }

            /// A number with no unit, or a unit that is not one of ms, s, m, min, h, is refused
            /// with a message that names the problem.
            #[test]
            fn missing_or_unknown_units_are_named(
                number in "[0-9]{1,6}(\\.[0-9]{1,3})?",
                unit in "[a-zA-Z]{1,4}",
            ) {
                let bare = parse_text(&number).unwrap_err();
                prop_assert!(bare.contains("no unit"), "{}", bare);
                if !["ms", "s", "m", "min", "h"].contains(&unit.as_str()) {
                    let message = parse_text(&format!("{number}{unit}")).unwrap_err();
                    prop_assert!(message.contains("unknown unit"), "{}", message);
                }
            }

            /// Seconds written as attribute literals (`1`, `1.5`) go through the same exact
            /// arithmetic as text with an `s`.
            #[test]
            fn numeric_literals_match_seconds_text(whole in 0u32..100_000, fraction in "[0-9]{1,6}") {
                let text = format!("{whole}.{fraction}");
                let literal: Expr = syn::parse_str(&text).unwrap();
                prop_assert_eq!(parse(&literal).unwrap(), parse_text(&format!("{text}s")).unwrap());
                let int: Expr = syn::parse_str(&whole.to_string()).unwrap();
                prop_assert_eq!(
                    parse(&int).unwrap().as_nanos(),
                    u128::from(whole) * NANOS_PER_SEC
                );
            }
        }
    }
}
