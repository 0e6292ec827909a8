//! Value parsers shared by several commands' flags: sizes and durations.
//! Pure text in, a value or an error naming the accepted forms out; the
//! callers add the flag's name as context.

use std::time::Duration;

use anyhow::{Context, bail};

/// A size such as `1MiB`, `512KiB`, `64kb` or `1000000`.
pub fn parse_size(text: &str) -> anyhow::Result<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .with_context(|| format!("`{text}` is not a size; use e.g. 1MiB, 512KiB or 1000000"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        other => bail!("unknown size unit `{other}` in `{text}`; use B, KiB, MiB or GiB"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("size `{text}` is too large"))
}

/// A duration such as `30s`, `500ms`, `30m`, `12h`, `7d` or `2w`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text.trim()).with_context(|| {
        format!("`{text}` is not a duration; use e.g. 500ms, 30s, 30m, 12h, 7d, 2w")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_size("1MiB").expect("valid"), 1024 * 1024);
        assert_eq!(parse_size("512KiB").expect("valid"), 512 * 1024);
        assert_eq!(parse_size("1000").expect("valid"), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn durations_take_seconds_to_weeks() {
        let secs = |t| parse_duration(t).expect("valid").as_secs();
        assert_eq!(secs("0s"), 0);
        assert_eq!(secs("90m"), 90 * 60);
        assert_eq!(secs("12h"), 12 * 3600);
        assert_eq!(secs("7d"), 7 * 86_400);
        assert_eq!(secs("2w"), 14 * 86_400);
        assert!(parse_duration("7").is_err(), "a unit is required");
        assert!(parse_duration("soon").is_err());
    }
}
