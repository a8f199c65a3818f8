//! `metav1.MicroTime`: kube-apiserver reads it with Go's `time.Parse` and the layout
//! `2006-01-02T15:04:05.000000Z07:00` (exactly six fraction digits, `Z` or an offset), and
//! writes it back in UTC. A Lease's `spec.acquireTime` and `spec.renewTime` are `MicroTime`s.
//!
//! Go's parser is emulated for this one layout, with its error messages, so that a client that
//! writes `…05Z` or `…05.123Z` is refused here as a real cluster refuses it.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use serde_json::Value;

/// Go's `metav1.RFC3339Micro`.
pub(crate) const LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";

/// The `MicroTime` fields of a kind, as paths from the object's root.
pub(crate) fn fields(kind: &str) -> &'static [[&'static str; 2]] {
    match kind {
        "Lease" => &[["spec", "acquireTime"], ["spec", "renewTime"]],
        _ => &[],
    }
}

/// Reads every `MicroTime` field of `object` and writes it back as kube-apiserver stores it
/// (UTC, six fraction digits).
///
/// # Errors
///
/// Go's error for the first field that does not parse: `parsing time "…" as "…": cannot
/// parse "…" as "…"`.
pub(crate) fn normalize(kind: &str, object: &mut Value) -> Result<(), String> {
    for [parent, field] in fields(kind) {
        let Some(slot) = object.get_mut(*parent).and_then(|p| p.get_mut(*field)) else {
            continue;
        };
        if let Value::String(text) = slot {
            let time = parse(text)?;
            *slot = Value::String(format(time));
        }
    }
    Ok(())
}

/// A `MicroTime` as kube-apiserver writes it.
pub(crate) fn format(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Go's `strconv.Quote` (`%q`) of what a client sent: quotes, backslashes and control
/// characters escaped.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The error of Go's `time.Parse` when `value_elem` (what was left of the value) does not
/// match `layout_elem`.
fn cannot_parse(value: &str, value_elem: &str, layout_elem: &str) -> String {
    format!(
        "parsing time {} as {}: cannot parse {} as {}",
        quote(value),
        quote(LAYOUT),
        quote(value_elem),
        quote(layout_elem)
    )
}

fn out_of_range(value: &str, what: &str) -> String {
    format!("parsing time {}: {what} out of range", quote(value))
}

/// Go's `getnum`: one or two digits (exactly two when `fixed`).
fn getnum(s: &str, fixed: bool) -> Option<(u32, &str)> {
    let b = s.as_bytes();
    let digit = |i: usize| {
        b.get(i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| u32::from(c - b'0'))
    };
    let first = digit(0)?;
    match digit(1) {
        Some(second) => Some((first * 10 + second, &s[2..])),
        None if fixed => None,
        None => Some((first, &s[1..])),
    }
}

/// What is left of a value as Go's `time.Parse` reads it, one chunk of the layout after the
/// other; errors name the whole value and what was left of it.
struct Reader<'a> {
    value: &'a str,
    rest: &'a str,
}

impl Reader<'_> {
    /// Go's error when what is left does not match `layout_elem`.
    fn bad(&self, layout_elem: &str) -> String {
        cannot_parse(self.value, self.rest, layout_elem)
    }

    fn out_of_range(&self, what: &str) -> String {
        out_of_range(self.value, what)
    }

    /// A literal of the layout (`-`, `T`, `:`).
    fn literal(&mut self, lit: &str) -> Result<(), String> {
        match self.rest.strip_prefix(lit) {
            Some(after) => {
                self.rest = after;
                Ok(())
            }
            None => Err(self.bad(lit)),
        }
    }

    /// A number of the layout element `elem` (see [`getnum`]), out of range from `limit` up.
    fn number(
        &mut self,
        elem: &str,
        fixed: bool,
        limit: Option<(u32, &str)>,
    ) -> Result<u32, String> {
        let (n, after) = getnum(self.rest, fixed).ok_or_else(|| self.bad(elem))?;
        if let Some((limit, what)) = limit
            && n >= limit
        {
            return Err(self.out_of_range(what));
        }
        self.rest = after;
        Ok(n)
    }

    /// `2006-01-02`: year, month and day (the day is checked against its month later).
    fn date(&mut self) -> Result<(i32, u32, u32), String> {
        let year: i32 = match self.rest.get(..4).and_then(|y| y.parse().ok()) {
            Some(year) => year,
            None => return Err(self.bad("2006")),
        };
        self.rest = &self.rest[4..];
        self.literal("-")?;
        let month = self.number("01", true, None)?;
        if !(1..=12).contains(&month) {
            return Err(self.out_of_range("month"));
        }
        self.literal("-")?;
        let day = self.number("02", true, None)?;
        Ok((year, month, day))
    }

    /// `15:04:05`: hour (one or two digits), minute and second.
    fn clock(&mut self) -> Result<(u32, u32, u32), String> {
        let hour = self.number("15", false, Some((24, "hour")))?;
        self.literal(":")?;
        let minute = self.number("04", true, Some((60, "minute")))?;
        self.literal(":")?;
        let second = self.number("05", true, Some((60, "second")))?;
        Ok((hour, minute, second))
    }

    /// `.000000`: exactly six digits, after a `.` or a `,`.
    fn micros(&mut self) -> Result<u32, String> {
        let micros = match self.rest.get(..7) {
            Some(frac)
                if (frac.starts_with('.') || frac.starts_with(','))
                    && frac[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                frac[1..].parse().map_err(|_| self.bad(".000000"))?
            }
            _ => return Err(self.bad(".000000")),
        };
        self.rest = &self.rest[7..];
        Ok(micros)
    }

    /// `Z07:00`: `Z`, or a signed `hh:mm` offset; in seconds east of UTC.
    fn zone(&mut self) -> Result<i32, String> {
        if let Some(after) = self.rest.strip_prefix('Z') {
            self.rest = after;
            return Ok(0);
        }
        let rest = self.rest;
        let parts = (
            rest.get(..1),
            rest.get(1..3),
            rest.get(3..4),
            rest.get(4..6),
        );
        let (Some(sign), Some(hh), Some(":"), Some(mm)) = parts else {
            return Err(self.bad("Z07:00"));
        };
        let hours = getnum(hh, true).map(|(h, _)| h);
        let minutes = getnum(mm, true).map(|(m, _)| m);
        let (Some(hours), Some(minutes)) = (hours, minutes) else {
            return Err(self.bad("Z07:00"));
        };
        let sign = match sign {
            "+" => 1,
            "-" => -1,
            _ => return Err(self.bad("Z07:00")),
        };
        if hours > 24 {
            return Err(self.out_of_range("time zone offset hour"));
        }
        if minutes > 60 {
            return Err(self.out_of_range("time zone offset minute"));
        }
        self.rest = rest.get(6..).unwrap_or_default();
        Ok(sign * i32::try_from(hours * 3600 + minutes * 60).unwrap_or(0))
    }

    /// Nothing may follow the layout.
    fn end(&self) -> Result<(), String> {
        if self.rest.is_empty() {
            return Ok(());
        }
        Err(format!(
            "parsing time {}: extra text: {}",
            quote(self.value),
            quote(self.rest)
        ))
    }
}

/// Parses `value` as Go's `time.Parse(LAYOUT, value)` does.
///
/// # Errors
///
/// Go's error message.
pub(crate) fn parse(value: &str) -> Result<DateTime<Utc>, String> {
    let mut reader = Reader { value, rest: value };
    let (year, month, day) = reader.date()?;
    reader.literal("T")?;
    let (hour, minute, second) = reader.clock()?;
    let micros = reader.micros()?;
    let offset_seconds = reader.zone()?;
    reader.end()?;
    let date =
        NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| reader.out_of_range("day"))?;
    let naive = date
        .and_hms_micro_opt(hour, minute, second, micros)
        .ok_or_else(|| reader.out_of_range("second"))?;
    let offset = FixedOffset::east_opt(offset_seconds).ok_or_else(|| reader.bad("Z07:00"))?;
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| reader.out_of_range("day"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(value: &str) -> String {
        parse(value).unwrap_err()
    }

    #[test]
    fn six_fraction_digits_and_a_zone_are_read_and_written_in_utc() {
        let t = parse("2026-01-02T05:04:06.654321+02:00").unwrap();
        assert_eq!(format(t), "2026-01-02T03:04:06.654321Z");
        let t = parse("2026-01-02T03:04:05.000001Z").unwrap();
        assert_eq!(format(t), "2026-01-02T03:04:05.000001Z");
    }

    /// The messages kube-apiserver v1.37.2 answered with (tests/differential/sequences).
    #[test]
    fn errors_are_gos() {
        let layout = "\"2006-01-02T15:04:05.000000Z07:00\"";
        assert_eq!(
            error("2026-01-02T03:04:05Z"),
            format!(
                "parsing time \"2026-01-02T03:04:05Z\" as {layout}: cannot parse \"Z\" as \".000000\""
            )
        );
        assert!(
            error("2026-01-02T03:04:05.123Z").ends_with("cannot parse \".123Z\" as \".000000\"")
        );
        assert!(
            error("2026-01-02T03:04:05.123456789Z")
                .ends_with("cannot parse \"789Z\" as \"Z07:00\"")
        );
        assert!(error("2026-01-02T03:04:05.123456").ends_with("cannot parse \"\" as \"Z07:00\""));
        assert!(error("yesterday").ends_with("cannot parse \"yesterday\" as \"2006\""));
        assert_eq!(
            error("2026-13-02T03:04:05.000000Z"),
            "parsing time \"2026-13-02T03:04:05.000000Z\": month out of range"
        );
        assert_eq!(
            error("2026-02-30T03:04:05.000000Z"),
            "parsing time \"2026-02-30T03:04:05.000000Z\": day out of range"
        );
        assert_eq!(
            error("2026-01-02T03:04:05.000000Zx"),
            "parsing time \"2026-01-02T03:04:05.000000Zx\": extra text: \"x\""
        );
    }

    #[test]
    fn every_input_is_answered_without_panicking() {
        for value in [
            "",
            "2",
            "2026-",
            "2026-1",
            "2026-01-02T3:04:05.000000Z",
            "é",
            "2026-01-02T03:04:05.00000é",
            "2026-01-02T03:04:05.000000+0é:00",
        ] {
            let _ = parse(value);
        }
    }
}
