//! Wall-clock formatting shared by the report model and the renderers:
//! µs since the Unix epoch (how reports and captures store instants) in,
//! RFC 3339 text out. A leaf: it depends on no other module of the crate
//! and holds no clock of its own (callers pass the instant).

/// An RFC 3339 UTC time, to the millisecond, from µs since the Unix epoch
/// (instants before the epoch read as the epoch).
pub fn timestamp_ms(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// An RFC 3339 UTC time, to the second, from µs since the Unix epoch
/// (instants before the epoch read as the epoch).
pub fn timestamp(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An RFC 3339 UTC time to the µs (`2024-05-01T10:00:00.123456Z`), as a
/// HAR's `startedDateTime`, from µs since the Unix epoch.
pub fn timestamp_us(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

/// µs since the Unix epoch of an RFC 3339 time with any offset (`Z`,
/// `+02:00`, `-0500`) and any number of fractional digits, as HAR files
/// write them; `None` when the text is not one.
pub fn parse_rfc3339_us(text: &str) -> Option<i64> {
    let text = text.trim();
    let (local, offset_s) = match text.strip_suffix(['Z', 'z']) {
        Some(local) => (local, 0),
        None => {
            // The offset's sign comes after the time (`T`), not in the date.
            let t = text.find(['T', 't', ' '])?;
            let at = t + text[t..].rfind(['+', '-'])?;
            let (local, offset) = text.split_at(at);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let hours: i64 = digits[..2].parse().ok()?;
            let minutes: i64 = digits[2..].parse().ok()?;
            (local, sign * (hours * 3600 + minutes * 60))
        }
    };
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let us = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros();
    i64::try_from(us).ok()?.checked_sub(offset_s * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn har_times_parse_with_any_offset_and_precision() {
        let z = parse_rfc3339_us("2024-05-01T10:00:00.123Z").expect("chromium");
        assert_eq!(z, 1_714_557_600_123_000);
        assert_eq!(
            parse_rfc3339_us("2024-05-01T10:00:00.123000+00:00"),
            Some(z)
        );
        assert_eq!(parse_rfc3339_us("2024-05-01T12:00:00.123+02:00"), Some(z));
        assert_eq!(parse_rfc3339_us("2024-05-01T05:00:00.123-0500"), Some(z));
        assert_eq!(timestamp(z), "2024-05-01T10:00:00Z");
        assert_eq!(parse_rfc3339_us(&timestamp_us(z + 456)), Some(z + 456));
        for bad in [
            "",
            "yesterday",
            "2024-05-01T10:00:00+2",
            "2024-13-01T10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_us(bad), None, "{bad}");
        }
    }
}
