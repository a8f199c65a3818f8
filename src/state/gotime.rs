//! Times as Go's `encoding/json` writes `time.Time`: RFC 3339 with up to nine fraction digits,
//! trailing zeros trimmed, and the writer's offset.

use std::fmt;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant as stored in lock state. It keeps the offset it was read with, so a Go client's
/// `+02:00` comes back unchanged when the lease is written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct GoTime(DateTime<FixedOffset>);

impl GoTime {
    /// `9999-12-31T23:59:59Z`, what Go lockheed stores for a lease without expiry, in seconds
    /// since the Unix epoch: what [`is_forever`](Self::is_forever) compares with, on the hot
    /// path of every judgement, without parsing a date each time.
    const FOREVER_SECS: i64 = 253_402_300_799;

    /// The same instant as Go lockheed writes it, for tests that store it.
    #[cfg(test)]
    pub(crate) const FOREVER_STR: &'static str = "9999-12-31T23:59:59Z";

    /// The instant Go lockheed uses for "never expires".
    ///
    /// # Panics
    ///
    /// Never: the constant is a valid time.
    #[must_use]
    pub(crate) fn forever() -> Self {
        let utc = DateTime::from_timestamp(Self::FOREVER_SECS, 0).expect("a valid time");
        Self(utc.fixed_offset())
    }

    /// Parses RFC 3339 as Go's `time.Time.UnmarshalJSON` accepts it.
    ///
    /// # Errors
    ///
    /// When `text` is not an RFC 3339 time.
    pub(crate) fn parse(text: &str) -> Result<Self, chrono::ParseError> {
        DateTime::parse_from_rfc3339(text).map(Self)
    }

    /// The instant in UTC.
    #[must_use]
    pub(crate) fn to_utc(self) -> DateTime<Utc> {
        self.0.with_timezone(&Utc)
    }

    /// Whether this is Go lockheed's "never expires" (or later).
    #[must_use]
    pub(crate) fn is_forever(self) -> bool {
        // Whole seconds decide: `forever` has no fraction.
        self.0.timestamp() >= Self::FOREVER_SECS
    }
}

impl From<DateTime<Utc>> for GoTime {
    fn from(time: DateTime<Utc>) -> Self {
        Self(time.fixed_offset())
    }
}

impl fmt::Display for GoTime {
    /// Formats like Go's `time.RFC3339Nano`: `2026-11-22T10:00:30.5Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.to_rfc3339_opts(SecondsFormat::Secs, true);
        let nanos = self.0.timestamp_subsec_nanos();
        if nanos == 0 {
            return f.write_str(&secs);
        }
        // Insert the trimmed fraction before the offset (`Z` or `+hh:mm`).
        let split = secs.rfind(['Z', '+', '-']).unwrap_or(secs.len());
        let fraction = format!("{nanos:09}");
        write!(
            f,
            "{}.{}{}",
            &secs[..split],
            fraction.trim_end_matches('0'),
            &secs[split..]
        )
    }
}

impl Serialize for GoTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text)
            .map_err(|e| serde::de::Error::custom(format_args!("invalid time {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_go_formats() {
        for text in [
            "2026-11-22T10:00:30.123456789Z",
            "2026-11-22T11:00:30.5+01:00",
            "2020-03-04T05:06:07+02:00",
            "9999-12-31T23:59:59Z",
            "2026-11-22T10:00:30.00001-07:30",
        ] {
            assert_eq!(GoTime::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn utc_times_write_z_and_trim_zeros() {
        let t: DateTime<Utc> = "2026-11-22T10:00:30.500Z".parse().unwrap();
        assert_eq!(GoTime::from(t).to_string(), "2026-11-22T10:00:30.5Z");
    }

    #[test]
    fn offsets_compare_as_instants() {
        let a = GoTime::parse("2020-03-04T05:06:07+02:00").unwrap();
        let b = GoTime::parse("2020-03-04T03:06:07Z").unwrap();
        assert_eq!(a.to_utc(), b.to_utc());
        assert!(GoTime::forever().is_forever());
        let go = GoTime::FOREVER_STR;
        assert_eq!(GoTime::forever(), GoTime::parse(go).unwrap());
        assert_eq!(GoTime::forever().to_string(), go);
        let before = GoTime::parse("9999-12-31T23:59:58.999999999Z").unwrap();
        assert!(!before.is_forever());
        assert!(
            GoTime::parse("9999-12-31T23:59:59.5Z")
                .unwrap()
                .is_forever()
        );
        assert!(
            GoTime::parse("9999-12-31T23:59:59-01:00")
                .unwrap()
                .is_forever()
        );
        assert!(
            !GoTime::parse("9999-12-31T23:59:59+01:00")
                .unwrap()
                .is_forever()
        );
        assert!(GoTime::parse("not a time").is_err());
    }
}
