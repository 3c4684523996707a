//! The units of `bluegreen.toml`'s values: durations (`"30s"`, humantime) with their
//! floors, and sizes (`"10MiB"`), both ways, each refusing a bad value with a reason toml
//! places at its key.

use serde::de::Error;
use serde::Deserializer;

/// `"30s"`, `"10m"`, `"1h 30m"` (humantime) both ways; at most `MAX`, so that sums of
/// them and deadlines built from them never overflow.
pub mod human_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// The longest duration any key takes: a year, as humantime counts one (365.25
    /// days), so that `1y` is taken.
    pub const MAX: Duration = Duration::from_secs(31_557_600);

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    /// `text` as a duration, or why not, quoting it as written.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let duration = humantime::parse_duration(text).map_err(|e| {
            use humantime::DurationError as E;
            // humantime's "expected number at 0" counts characters; what is wrong
            // is said instead, and its list of units is kept.
            let why = match e {
                _ if text.trim_start().starts_with('-') => "a duration is never negative".into(),
                E::Empty => "it is empty".into(),
                E::InvalidCharacter(_) | E::NumberExpected(_) => {
                    "a duration is a number and a unit".into()
                }
                e => e.to_string(),
            };
            format!(
                "invalid duration `{text}`: {why} (e.g. \"30s\", \"500ms\", \"2m\", \"1h 30m\")"
            )
        })?;
        if duration > MAX {
            return Err(format!("`{text}` is too long (at most 1 year)"));
        }
        Ok(duration)
    }
}

/// A `human_duration` of at least 10 ms: less is a timeout nothing could meet (a health
/// check's own connection takes longer on a loaded host), or a loop with no pause.
pub mod positive_duration {
    use serde::Deserializer;
    use std::time::Duration;

    pub use super::human_duration::serialize;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::at_least(d, Duration::from_millis(10))
    }
}

/// `heartbeat.interval`: at least 100 ms, as each check of both slots is a request of
/// its own (and a failing one a log line).
pub mod interval {
    use serde::Deserializer;
    use std::time::Duration;

    pub use super::human_duration::serialize;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::at_least(d, Duration::from_millis(100))
    }
}

fn at_least<'de, D: Deserializer<'de>>(
    d: D,
    min: std::time::Duration,
) -> Result<std::time::Duration, D::Error> {
    // Quoted as written: `"0"` is no `0s` in the file.
    let text = <String as serde::Deserialize>::deserialize(d)?;
    let duration = human_duration::parse(&text).map_err(D::Error::custom)?;
    if duration < min {
        return Err(D::Error::custom(format!(
            "`{text}` is too short (at least {})",
            humantime::format_duration(min)
        )));
    }
    Ok(duration)
}

/// `"10MiB"`, `"512KB"`, `"1048576"` both ways.
pub mod human_size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&shown(*n))
    }

    /// In the largest binary unit that divides it: "10MiB", not "10485760".
    pub fn shown(n: u64) -> String {
        [("GiB", 30), ("MiB", 20), ("KiB", 10)]
            .into_iter()
            .find(|(_, shift)| n > 0 && n.is_multiple_of(1u64 << shift))
            .map_or_else(
                || n.to_string(),
                |(unit, shift)| format!("{}{unit}", n >> shift),
            )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size `{text}`: a number of bytes, alone or with B, KB, KiB, MB, MiB, GB or GiB (e.g. \"10MiB\", \"512KB\", \"4096\")"
            ))
        })
    }

    pub fn parse(text: &str) -> Option<u64> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_duration_says_what_is_wrong_not_where_the_parser_stopped() {
        let why = |text| human_duration::parse(text).unwrap_err();
        let examples = "(e.g. \"30s\", \"500ms\", \"2m\", \"1h 30m\")";
        assert_eq!(
            why("-5s"),
            format!("invalid duration `-5s`: a duration is never negative {examples}")
        );
        assert_eq!(
            why("soon"),
            format!("invalid duration `soon`: a duration is a number and a unit {examples}")
        );
        assert!(why("5 parsecs").contains("unknown time unit \"parsecs\""));
        assert_eq!(human_duration::parse("1h 30m").unwrap().as_secs(), 5400);
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size::parse("10MiB"), Some(10 << 20));
        assert_eq!(human_size::parse("512KB"), Some(512_000));
        assert_eq!(human_size::parse("4096"), Some(4096));
        assert_eq!(human_size::parse("4 parsecs"), None);
    }
}
