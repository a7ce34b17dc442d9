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
}
