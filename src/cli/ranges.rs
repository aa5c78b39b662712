//! Range checks of numeric flags, done by clap while it parses, so that a
//! value that cannot mean anything (`--clip 0`, `--dropout 1.5`,
//! `--spike-factor NaN`, `--batch 0`) is refused with exit 2 before any file
//! is opened or any model loaded, by a message that names the flag and the
//! allowed range:
//!
//! ```text
//! error: --dropout: 1.5 is out of range: use a number in [0, 1)
//! ```
//!
//! Every numeric flag of the four tools goes through one of these parsers.
//! Non-finite numbers (NaN, inf) are never accepted.

use std::ffi::OsStr;
use std::marker::PhantomData;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// One end of an [`Interval`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    Unbounded,
    Inclusive(f64),
    Exclusive(f64),
}

/// The finite numbers a float flag accepts: an interval, optionally plus
/// one value outside it that switches something off (`--spike-factor 0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    low: Bound,
    high: Bound,
    /// A value accepted besides the interval, and what it means.
    off: Option<(f64, &'static str)>,
}

/// Any finite number (thresholds on scores).
pub const FINITE: Interval = Interval::new(Bound::Unbounded, Bound::Unbounded);
/// A number > 0 (learning rate, epsilon, clip norm).
pub const POSITIVE: Interval = Interval::new(Bound::Exclusive(0.0), Bound::Unbounded);
/// A number >= 0 (weight decay, final learning rate, an added epsilon).
pub const NON_NEGATIVE: Interval = Interval::new(Bound::Inclusive(0.0), Bound::Unbounded);
/// [0, 1): a probability that must leave something (dropout, a mask
/// threshold, a target false-positive rate).
pub const FRACTION_BELOW_ONE: Interval = Interval::new(Bound::Inclusive(0.0), Bound::Exclusive(1.0));
/// [0, 1]: a fraction of pixels (0 meaning the maximum).
pub const FRACTION: Interval = Interval::new(Bound::Inclusive(0.0), Bound::Inclusive(1.0));
/// (0, 1]: a false-positive-rate limit.
pub const FRACTION_ABOVE_ZERO: Interval = Interval::new(Bound::Exclusive(0.0), Bound::Inclusive(1.0));
/// A multiple > 1, or 0 for off (`--spike-factor`: a factor <= 1 would
/// skip about every other step).
pub const FACTOR_OR_OFF: Interval =
    Interval { off: Some((0.0, "0 (off)")), ..Interval::new(Bound::Exclusive(1.0), Bound::Unbounded) };

impl Interval {
    const fn new(low: Bound, high: Bound) -> Self {
        Interval { low, high, off: None }
    }

    /// Whether `v` is accepted.
    pub fn contains(&self, v: f64) -> bool {
        if !v.is_finite() {
            return false;
        }
        if self.off.is_some_and(|(off, _)| v == off) {
            return true;
        }
        let above = match self.low {
            Bound::Unbounded => true,
            Bound::Inclusive(l) => v >= l,
            Bound::Exclusive(l) => v > l,
        };
        let below = match self.high {
            Bound::Unbounded => true,
            Bound::Inclusive(h) => v <= h,
            Bound::Exclusive(h) => v < h,
        };
        above && below
    }

    /// What to type, e.g. "a number in [0, 1)", "a number > 0".
    pub fn describe(&self) -> String {
        let range = match (self.low, self.high) {
            (Bound::Unbounded, Bound::Unbounded) => "a finite number".to_string(),
            (Bound::Inclusive(l), Bound::Unbounded) => format!("a number >= {l}"),
            (Bound::Exclusive(l), Bound::Unbounded) => format!("a number > {l}"),
            (Bound::Unbounded, Bound::Inclusive(h)) => format!("a number <= {h}"),
            (Bound::Unbounded, Bound::Exclusive(h)) => format!("a number < {h}"),
            (low, high) => {
                let (open, l) = match low {
                    Bound::Inclusive(l) => ('[', l),
                    Bound::Exclusive(l) => ('(', l),
                    Bound::Unbounded => unreachable!("handled above"),
                };
                let (close, h) = match high {
                    Bound::Inclusive(h) => (']', h),
                    Bound::Exclusive(h) => (')', h),
                    Bound::Unbounded => unreachable!("handled above"),
                };
                format!("a number in {open}{l}, {h}{close}")
            }
        };
        match self.off {
            Some((_, off)) => format!("{off} or {range}"),
            None => range,
        }
    }

    /// Parses `text` as a number in the interval; the error says why not
    /// and what to use instead (without the flag's name).
    pub fn parse(&self, text: &str) -> Result<f64, String> {
        let use_ = self.describe();
        let v: f64 = text.trim().parse().map_err(|_| format!("'{text}' is not a number: use {use_}"))?;
        if !v.is_finite() {
            return Err(format!("{text} is not a finite number: use {use_}"));
        }
        if !self.contains(v) {
            return Err(format!("{text} is out of range: use {use_}"));
        }
        Ok(v)
    }
}

/// The flag's name as the user typed it, for messages.
fn flag_name(arg: Option<&clap::Arg>) -> String {
    match arg {
        Some(a) => match a.get_long() {
            Some(long) => format!("--{long}"),
            None => a.get_id().to_string(),
        },
        None => "value".to_string(),
    }
}

/// A clap error naming the flag: `--FLAG: REASON`.
fn refused(cmd: &clap::Command, arg: Option<&clap::Arg>, reason: &str) -> clap::Error {
    clap::Error::raw(ErrorKind::ValueValidation, format!("{}: {reason}\n", flag_name(arg))).with_cmd(cmd)
}

/// The text of a value, refusing what is not UTF-8.
fn text<'a>(cmd: &clap::Command, arg: Option<&clap::Arg>, value: &'a OsStr) -> Result<&'a str, clap::Error> {
    value.to_str().ok_or_else(|| refused(cmd, arg, &format!("{} is not a number", value.to_string_lossy())))
}

impl TypedValueParser for Interval {
    type Value = f64;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<f64, clap::Error> {
        self.parse(text(cmd, arg, value)?).map_err(|reason| refused(cmd, arg, &reason))
    }
}

/// Whole numbers `>= min` of the flag's type `T` (`--batch`, `--iterations`:
/// at least 1; `--seed`, `--warmup`: any, but still with a message that
/// says what a value like `-1` or `2.5` should be).
#[derive(Debug)]
pub struct AtLeast<T> {
    min: u64,
    kind: PhantomData<fn() -> T>,
}

// Derived Clone would require `T: Clone`.
impl<T> Clone for AtLeast<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for AtLeast<T> {}

/// A parser of whole numbers `>= min` into `T`.
pub const fn at_least<T>(min: u64) -> AtLeast<T> {
    AtLeast { min, kind: PhantomData }
}

impl<T: TryFrom<u64>> AtLeast<T> {
    /// What to type, e.g. "a whole number >= 1".
    pub fn describe(&self) -> String {
        // The largest value of T, for types narrower than u64.
        let max = (0..64).rev().map(|b| (1u64 << b) | ((1u64 << b) - 1)).find(|&m| T::try_from(m).is_ok());
        match max {
            Some(m) if m < u64::MAX => format!("a whole number in [{}, {m}]", self.min),
            _ => format!("a whole number >= {}", self.min),
        }
    }

    /// Parses `text`; the error says why not and what to use instead.
    pub fn parse(&self, text: &str) -> Result<T, String> {
        let use_ = self.describe();
        let trimmed = text.trim();
        let v: u64 = match trimmed.parse::<u64>() {
            Ok(v) => v,
            // A negative whole number is a number out of range, not junk.
            Err(_)
                if trimmed
                    .strip_prefix('-')
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())) =>
            {
                return Err(format!("{text} is out of range: use {use_}"))
            }
            Err(_) => return Err(format!("'{text}' is not a whole number: use {use_}")),
        };
        if v < self.min {
            return Err(format!("{text} is out of range: use {use_}"));
        }
        T::try_from(v).map_err(|_| format!("{text} is out of range: use {use_}"))
    }
}

impl<T> TypedValueParser for AtLeast<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<T, clap::Error> {
        self.parse(text(cmd, arg, value)?).map_err(|reason| refused(cmd, arg, &reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_refuse_non_finite_and_out_of_range_values() {
        assert_eq!(FRACTION_BELOW_ONE.parse("0"), Ok(0.0));
        assert_eq!(FRACTION_BELOW_ONE.parse("0.999"), Ok(0.999));
        assert_eq!(FRACTION_BELOW_ONE.parse("1.5"), Err("1.5 is out of range: use a number in [0, 1)".to_string()));
        assert_eq!(FRACTION_BELOW_ONE.parse("1"), Err("1 is out of range: use a number in [0, 1)".to_string()));
        assert_eq!(FRACTION.parse("1"), Ok(1.0));
        assert!(FRACTION_ABOVE_ZERO.parse("0").is_err());
        assert_eq!(FRACTION_ABOVE_ZERO.parse("1"), Ok(1.0));
        assert_eq!(POSITIVE.parse("0"), Err("0 is out of range: use a number > 0".to_string()));
        assert_eq!(POSITIVE.parse("-0.1"), Err("-0.1 is out of range: use a number > 0".to_string()));
        assert_eq!(POSITIVE.parse("1e-10"), Ok(1e-10));
        assert_eq!(NON_NEGATIVE.parse("0"), Ok(0.0));
        assert_eq!(FINITE.parse("-0.5"), Ok(-0.5));
        for junk in ["NaN", "nan", "inf", "-inf", "infinity"] {
            for interval in [FINITE, POSITIVE, NON_NEGATIVE, FRACTION, FACTOR_OR_OFF] {
                let e = interval.parse(junk).unwrap_err();
                assert!(e.contains("not a finite number"), "{junk}: {e}");
            }
        }
        assert_eq!(FINITE.parse("abc"), Err("'abc' is not a number: use a finite number".to_string()));
    }

    #[test]
    fn the_spike_factor_is_off_or_above_one() {
        assert_eq!(FACTOR_OR_OFF.parse("0"), Ok(0.0));
        assert_eq!(FACTOR_OR_OFF.parse("5"), Ok(5.0));
        assert_eq!(FACTOR_OR_OFF.parse("1.01"), Ok(1.01));
        assert_eq!(FACTOR_OR_OFF.parse("0.5"), Err("0.5 is out of range: use 0 (off) or a number > 1".to_string()));
        assert!(FACTOR_OR_OFF.parse("1").is_err());
        assert!(FACTOR_OR_OFF.parse("-1").is_err());
    }

    #[test]
    fn whole_numbers_have_a_minimum_and_the_type_s_maximum() {
        assert_eq!(at_least::<usize>(1).parse("1"), Ok(1));
        assert_eq!(at_least::<usize>(1).parse("0"), Err("0 is out of range: use a whole number >= 1".to_string()));
        assert_eq!(at_least::<u64>(1).parse("-3"), Err("-3 is out of range: use a whole number >= 1".to_string()));
        assert_eq!(
            at_least::<u64>(0).parse("2.5"),
            Err("'2.5' is not a whole number: use a whole number >= 0".to_string())
        );
        assert_eq!(at_least::<u64>(0).parse("0"), Ok(0));
        assert_eq!(
            at_least::<u32>(1).parse("4294967296"),
            Err("4294967296 is out of range: use a whole number in [1, 4294967295]".to_string())
        );
        assert_eq!(at_least::<u32>(1).parse("4294967295"), Ok(u32::MAX));
    }
}
