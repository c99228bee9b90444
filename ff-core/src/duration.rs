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
        let ms_per: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        // Decimal, in integers: 1.1h is exactly 3,960,000 ms.
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str| s.is_empty() || (s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()));
        if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction: u128 = if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| bad())? };
        if !(fraction * ms_per).is_multiple_of(scale) {
            return Err(bad());
        }
        total_ms = whole
            .checked_mul(ms_per)
            .and_then(|ms| total_ms.checked_add(ms + fraction * ms_per / scale))
            .ok_or_else(bad)?;
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
            ("1.1h", 66 * 60 * 1000, "66m"),
            (".5s", 500, "500ms"),
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
        for bad in [
            "",
            "48",
            "h",
            "48 hours",
            "-1h",
            "1.0005s",
            "1e3s",
            "1h30",
            "99999999999999999999d",
            ".s",
            "1.2.3h",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not a duration like 90m, 48h or 1h30m"), "{bad}: {e}");
        }
    }
}
