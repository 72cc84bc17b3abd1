//! Durations as users write them in policies, runbooks and flags, parsed with
//! checked arithmetic (out of range is an error, never a panic or a wrap).
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration any key or flag accepts: 100 years. Anything longer
/// is a typo, and keeps `Instant + d` and `DateTime - d` far from overflow.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 86400);

/// Why a duration was not understood; each names the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration {0:?}: expected a number followed by s, m, h, d or w")]
    NotANumber(String),
    #[error("duration {0:?}: expected a number followed by ms, s, m, h or d")]
    NotANumberMs(String),
    #[error("duration {0:?}: unit must be s, m, h, d or w")]
    Unit(String),
    #[error("duration {0:?} must be greater than zero")]
    Zero(String),
    #[error("duration {0:?} is out of range (at most 100 years)")]
    OutOfRange(String),
}

/// `90s`, `15m`, `6h`, `30d`, `2w`; greater than zero.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(s.to_owned()))?;
    let mul: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(DurationError::Unit(s.to_owned())),
    };
    if n == 0 {
        return Err(DurationError::Zero(s.to_owned()));
    }
    let secs = n.checked_mul(mul).filter(|&x| x <= MAX.as_secs());
    match secs {
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(DurationError::OutOfRange(s.to_owned())),
    }
}

/// `500ms`, `90s`, `15m`, `6h`, `1d`, and `0s` (runbook timings, where zero
/// means "no wait").
pub fn parse_duration_ms(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        let d = ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| DurationError::NotANumberMs(s.to_owned()))?;
        if d > MAX {
            return Err(DurationError::OutOfRange(s.to_owned()));
        }
        return Ok(d);
    }
    if t == "0s" || t == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(t)
}

/// `now + d`, never panicking: a deadline past what the clock can hold is
/// clamped to `now + MAX` (100 years is "never" for a runbook step).
pub fn deadline(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    now.checked_add(d.min(MAX))
        .or_else(|| now.checked_add(MAX))
        .unwrap_or(now)
}

/// Exponential backoff `base * 2^(attempt-1)` with checked arithmetic,
/// capped at `cap` (and at [`MAX`]).
pub fn backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let factor = 2u32
        .checked_pow(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(cap)
        .min(MAX)
}

/// A duration key in a TOML table (`"5s"`, `"500ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration_ms(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// `500ms`, `1.5s`, `90s`, `5m`, `2h`: the shortest exact form.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if !ms.is_multiple_of(1000) || ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64()).replace(".0s", "s")
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_are_errors_not_panics() {
        assert!(parse_duration("200000000000d").is_err());
        assert!(parse_duration("18446744073709551615w").is_err());
        assert!(parse_duration("99999999999999999999999s").is_err());
        assert!(parse_duration_ms("18446744073709551615ms").is_err());
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        assert_eq!(parse_duration_ms("0s").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration_ms("250ms").unwrap(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn deadline_and_backoff_never_overflow() {
        let now = tokio::time::Instant::now();
        assert!(deadline(now, Duration::MAX) > now);
        assert_eq!(
            deadline(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let b = Duration::from_secs(1);
        assert_eq!(backoff(b, 1, Duration::MAX), b);
        assert_eq!(backoff(b, 3, Duration::MAX), 4 * b);
        assert_eq!(backoff(b, 7, 64 * b), 64 * b);
        assert_eq!(backoff(MAX, u32::MAX, Duration::MAX), MAX);
        assert_eq!(backoff(Duration::MAX, 40, Duration::MAX), MAX);
    }

    #[test]
    fn human() {
        assert_eq!(human_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
    }
}
