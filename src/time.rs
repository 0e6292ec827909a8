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
