//! W3C Trace Context for replayed requests: each one carries a fresh
//! `traceparent` (version 00, a random trace id and parent id, sampled),
//! so a slow replayed request can be found in the target's tracing
//! backend by the trace id the report keeps. A recorded `traceparent` or
//! `tracestate` belongs to the recorded trace and is never resent.

use http::HeaderValue;
use rand::Rng;

/// The header carrying the trace id.
pub const TRACEPARENT: &str = "traceparent";

/// Recorded headers of the recorded trace, dropped from every replayed
/// request.
pub const RECORDED_TRACE: [&str; 2] = [TRACEPARENT, "tracestate"];

/// A fresh trace: its id and the `traceparent` value that carries it
/// (`00-{trace id}-{parent id}-01`; neither id is all zeros, which the
/// specification forbids).
pub fn fresh() -> (u128, HeaderValue) {
    let mut rng = rand::rng();
    let trace = rng.random_range(1..=u128::MAX);
    let parent = rng.random_range(1..=u64::MAX);
    let mut text = [0u8; 55];
    text[..3].copy_from_slice(b"00-");
    hex(&trace.to_be_bytes(), &mut text[3..35]);
    text[35] = b'-';
    hex(&parent.to_be_bytes(), &mut text[36..52]);
    text[52..].copy_from_slice(b"-01");
    (
        trace,
        HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("")),
    )
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_traceparent_is_version_00_sampled_and_names_its_trace_id() {
        let (trace, value) = fresh();
        let text = value.to_str().expect("ascii");
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(parts.len(), 4, "{text}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], format!("{trace:032x}"));
        assert_eq!(parts[2].len(), 16);
        assert_ne!(parts[2], "0000000000000000");
        assert!(
            parts[1..3].iter().all(|p| p
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())),
            "{text}"
        );
        assert_eq!(parts[3], "01", "sampled");
        assert_ne!(fresh().0, trace, "a fresh trace id per request");
    }
}
