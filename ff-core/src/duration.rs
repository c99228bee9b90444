//! Durations written as people write them: `90m`, `48h`, `1h30m`, `500ms`, `7d`.

use std::time::Duration;

/// What a duration looks like, for error messages.
pub const DURATION_FORM: &str = "a duration like 90m, 48h or 1h30m (units ms, s, m, h, d)";

/// Parses `90m`, `48h`, `1h30m`, `1.5h`, `500ms`, `7d`: numbers each followed by a
/// unit, summed; spaces between parts allowed. Millisecond precision.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not {DURATION_FORM}");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ms: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let ms_per: f64 = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => return Err(bad()),
        };
        let n: f64 = number.parse().map_err(|_| bad())?;
        let ms = n * ms_per;
        if !ms.is_finite() || ms.fract() != 0.0 || ms > 1e15 {
            return Err(bad());
        }
        total_ms += ms as u128;
        rest = tail.trim_start();
    }
    u64::try_from(total_ms).map(Duration::from_millis).map_err(|_| bad())
}

/// The shortest whole form: `48h`, `90m`, `45s`, `1500ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written_and_show_in_their_shortest_form() {
        let cases = [
            ("48h", 48 * 3600 * 1000, "48h"),
            ("90m", 90 * 60 * 1000, "90m"),
            ("1h30m", 90 * 60 * 1000, "90m"),
            ("1h 30m", 90 * 60 * 1000, "90m"),
            ("1.5h", 90 * 60 * 1000, "90m"),
            ("7d", 7 * 24 * 3600 * 1000, "168h"),
            ("45s", 45_000, "45s"),
            ("1500ms", 1500, "1500ms"),
            ("0s", 0, "0s"),
        ];
        for (text, ms, shown) in cases {
            let d = parse_duration(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d, Duration::from_millis(ms), "{text}");
            assert_eq!(format_duration(d), shown, "{text}");
        }
        for bad in ["", "48", "h", "48 hours", "-1h", "1.0005s", "1e3s", "1h30", "99999999999999999999d"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not a duration like 90m, 48h or 1h30m"), "{bad}: {e}");
        }
    }
}
