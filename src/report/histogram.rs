//! Latency histograms: HDR, 3 significant digits, microsecond values,
//! serialized as base64 of the HDR V2 + deflate encoding so that reports
//! merge exactly (counts add bucket by bucket).
//!
//! Decoding reads report files, which are input: the V2 header is checked
//! here before anything is allocated from it (see [`LatencyHistogram::decode`]),
//! so a forged length or a zlib bomb is an error, not gigabytes.

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

/// Highest value kept exactly; larger ones are clamped (1 hour, in µs).
const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds. Auto-resizing, so one that saw only
/// fast requests stays small in memory.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    h: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

/// A histogram blob that is not valid base64 HDR V2, or larger than any
/// histogram tapedeck writes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HistogramError(String);

/// `V2_COOKIE` of the hdrhistogram crate (and of HdrHistogram's Java and C
/// implementations): an uncompressed V2 histogram.
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
/// `V2_COMPRESSED_COOKIE`: a V2 histogram wrapped in zlib.
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9304 | 0x10;
/// Cookie, payload length, normalizing offset, significant digits (4 bytes
/// each), lowest and highest value (8 each), integer-to-double ratio (8).
const V2_HEADER_LEN: usize = 40;
/// The longest varint the V2 encoding writes for one count (a zigzag i64
/// in LEB128, its ninth byte holding 8 bits).
const MAX_VARINT_LEN: u64 = 9;
/// The highest trackable value a histogram of ours can declare. Values are
/// clamped to [`MAX_US`] when recorded, and auto-resize grows the range to
/// the end of the bucket holding the value, which ends below twice the
/// value (each HDR bucket spans twice the one before it).
const MAX_HIGH_US: u64 = 2 * MAX_US;

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        // 3 significant digits is a constant the crate accepts.
        let mut h = Histogram::new(3).expect("3 significant digits is valid");
        h.auto(true);
        LatencyHistogram { h }
    }

    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(MAX_US)
            .clamp(1, MAX_US);
        // Auto-resize makes every value in range recordable.
        let _ = self.h.record(us);
    }

    /// Adds every count of `other`.
    pub fn add(&mut self, other: &LatencyHistogram) {
        // Both auto-resize, so adding cannot go out of range.
        let _ = self.h.add(&other.h);
    }

    /// Number of values.
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    /// Whether no value was recorded.
    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// The value at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest value, ms.
    pub fn max_ms(&self) -> f64 {
        if self.h.is_empty() {
            0.0
        } else {
            self.h.max() as f64 / 1000.0
        }
    }

    /// The mean, ms.
    pub fn mean_ms(&self) -> f64 {
        if self.h.is_empty() {
            0.0
        } else {
            self.h.mean() / 1000.0
        }
    }

    /// `(value_ms, percentile)` points of the percentile curve, for charts.
    pub fn percentile_curve(&self) -> Vec<(f64, f64)> {
        self.h
            .iter_quantiles(2)
            .map(|v| (v.value_iterated_to() as f64 / 1000.0, v.percentile()))
            .collect()
    }

    /// base64 of HDR V2 + deflate.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Serializing into a Vec only fails on an internal encoder bug.
        match V2DeflateSerializer::new().serialize(&self.h, &mut buf) {
            Ok(_) => STANDARD.encode(buf),
            Err(_) => String::new(),
        }
    }

    /// Reads what [`LatencyHistogram::encode`] wrote.
    ///
    /// The input is untrusted (a report file), so nothing is allocated
    /// from its lengths before they are checked: the V2 header is read
    /// here, its configuration (significant digits, lowest and highest
    /// value) must be one tapedeck can write, and its payload length may
    /// not exceed what a histogram of that configuration can encode
    /// ([`payload_bound`]). A deflate blob is inflated through
    /// `Read::take` of that bound, so a zlib bomb stops at it.
    ///
    /// # Errors
    /// When the text is not base64 of an HDR V2 (deflate) histogram, or
    /// declares or inflates to more than its configuration can hold.
    pub fn decode(text: &str) -> Result<LatencyHistogram, HistogramError> {
        if text.is_empty() {
            return Ok(LatencyHistogram::new());
        }
        let bytes = STANDARD
            .decode(text)
            .map_err(|e| HistogramError(format!("not base64: {e}")))?;
        let v2 = match split_u32(&bytes) {
            Some((V2_COOKIE, _)) => {
                let header = Header::parse(&bytes)?;
                if bytes.len() - V2_HEADER_LEN != header.payload_len {
                    return Err(HistogramError(format!(
                        "its header declares {} payload bytes but {} follow",
                        header.payload_len,
                        bytes.len() - V2_HEADER_LEN
                    )));
                }
                bytes
            }
            Some((V2_DEFLATE_COOKIE, rest)) => inflate(rest)?,
            Some((cookie, _)) => {
                return Err(HistogramError(format!(
                    "cookie {cookie:#010x} is not HDR V2 ({V2_COOKIE:#010x}) or V2 deflate \
                     ({V2_DEFLATE_COOKIE:#010x})"
                )));
            }
            None => return Err(HistogramError("shorter than an HDR header".into())),
        };
        // The header and the length were checked above, so the crate's own
        // buffer and counts array are bounded by `payload_bound`.
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &v2[..])
            .map_err(|e| HistogramError(format!("not an HDR V2 histogram: {e}")))?;
        let mut out = LatencyHistogram::new();
        out.h
            .add(&h)
            .map_err(|e| HistogramError(format!("cannot be added to a latency histogram: {e}")))?;
        Ok(out)
    }
}

/// The first big-endian u32 of `bytes` and the rest.
fn split_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

/// The checked header of an uncompressed V2 histogram.
#[derive(Debug)]
struct Header {
    /// Bytes of counts after the header.
    payload_len: usize,
}

impl Header {
    /// Reads and checks the 40-byte V2 header at the start of `bytes`.
    fn parse(bytes: &[u8]) -> Result<Header, HistogramError> {
        let header: &[u8; V2_HEADER_LEN] = bytes
            .first_chunk()
            .ok_or_else(|| HistogramError("shorter than an HDR V2 header".into()))?;
        let u32_at =
            |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[i..i + 8]);
            u64::from_be_bytes(b)
        };
        if u32_at(0) != V2_COOKIE {
            return Err(HistogramError(format!(
                "inner cookie {:#010x} is not HDR V2 ({V2_COOKIE:#010x})",
                u32_at(0)
            )));
        }
        let payload_len = u64::from(u32_at(4));
        let sigfig = u32_at(12);
        let (low, high) = (u64_at(16), u64_at(24));
        if !(1..=5).contains(&sigfig)
            || low < 1
            || high < low.saturating_mul(2)
            || high > MAX_HIGH_US
        {
            return Err(HistogramError(format!(
                "its header declares {sigfig} significant digits for values {low}..={high} µs; \
                 tapedeck reads 1..=5 digits from 1 µs up to at most {MAX_HIGH_US} µs"
            )));
        }
        let bound = payload_bound(low, high, sigfig);
        if payload_len > bound {
            return Err(HistogramError(format!(
                "its header declares a payload of {payload_len} bytes; a histogram of {sigfig} \
                 significant digits up to {high} µs encodes in at most {bound}"
            )));
        }
        Ok(Header {
            // At most `bound`, a few MB: fits any usize we build for.
            payload_len: usize::try_from(payload_len).unwrap_or(usize::MAX),
        })
    }
}

/// The most payload bytes a V2 histogram of this configuration can
/// encode: its counts array sized as hdrhistogram sizes it
/// (`Histogram::new_with_bounds`, then `resize`), every count at the
/// longest varint. Zero runs only shorten it, so this is the worst case
/// itself, not an estimate: the margin over a real report is the gap
/// between 9 bytes a count and the one byte most counts (or runs of them)
/// take. With 3 digits up to [`MAX_HIGH_US`] it is 24,576 counts, 221,184
/// bytes; with 5 digits, about 20 MB.
fn payload_bound(low: u64, high: u64, sigfig: u32) -> u64 {
    // Single-unit resolution up to 2 × 10^sigfig, rounded up to a power of
    // two: the sub-bucket count (2^2 ..= 2^18 for 1..=5 digits).
    let largest = 2 * 10u64.pow(sigfig);
    let sub_bucket_count_magnitude = u64::BITS - (largest - 1).leading_zeros();
    let sub_bucket_count = 1u64 << sub_bucket_count_magnitude;
    let unit_magnitude = u64::BITS - 1 - low.leading_zeros();
    // Buckets needed to cover `high`: each doubles the range.
    let mut smallest_untrackable = sub_bucket_count
        .checked_shl(unit_magnitude)
        .unwrap_or(u64::MAX);
    let mut buckets = 1u64;
    while smallest_untrackable <= high {
        if smallest_untrackable > u64::MAX / 2 {
            buckets += 1;
            break;
        }
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    let counts = (buckets + 1) * (sub_bucket_count / 2);
    counts * MAX_VARINT_LEN
}

/// Inflates the body of a V2 deflate blob (after its cookie) into the
/// uncompressed V2 histogram, reading no more than its header allows.
fn inflate(rest: &[u8]) -> Result<Vec<u8>, HistogramError> {
    let (compressed_len, compressed) = split_u32(rest)
        .ok_or_else(|| HistogramError("shorter than an HDR V2 deflate header".into()))?;
    if u64::from(compressed_len) != compressed.len() as u64 {
        return Err(HistogramError(format!(
            "its header declares {compressed_len} compressed bytes but {} follow",
            compressed.len()
        )));
    }
    let mut zlib = flate2::read::ZlibDecoder::new(compressed);
    let mut v2 = Vec::with_capacity(V2_HEADER_LEN);
    let damaged = |e: std::io::Error| HistogramError(format!("its deflate stream is damaged: {e}"));
    (&mut zlib)
        .take(V2_HEADER_LEN as u64)
        .read_to_end(&mut v2)
        .map_err(damaged)?;
    let header = Header::parse(&v2)?;
    // One byte past the declared payload: a stream that inflates further
    // than its header says is refused without inflating the rest.
    let limit = header.payload_len as u64 + 1;
    (&mut zlib)
        .take(limit)
        .read_to_end(&mut v2)
        .map_err(damaged)?;
    let payload = v2.len() - V2_HEADER_LEN;
    if payload != header.payload_len {
        return Err(HistogramError(if payload > header.payload_len {
            format!(
                "it inflates past the {} payload bytes its header declares",
                header.payload_len
            )
        } else {
            format!(
                "it inflates to {payload} payload bytes, not the {} its header declares",
                header.payload_len
            )
        }));
    }
    Ok(v2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trips_and_merge_adds_counts() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for i in 1..=1000u64 {
            a.record(Duration::from_micros(i * 10));
            b.record(Duration::from_millis(i));
        }
        let back = LatencyHistogram::decode(&a.encode()).expect("round trip");
        assert_eq!(back.len(), 1000);
        assert_eq!(back.quantile_ms(0.5), a.quantile_ms(0.5));
        assert_eq!(back.max_ms(), a.max_ms());

        let mut merged = LatencyHistogram::decode(&a.encode()).expect("a");
        merged.add(&LatencyHistogram::decode(&b.encode()).expect("b"));
        let mut union = LatencyHistogram::new();
        for i in 1..=1000u64 {
            union.record(Duration::from_micros(i * 10));
            union.record(Duration::from_millis(i));
        }
        assert_eq!(merged.len(), 2000);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.quantile_ms(q), union.quantile_ms(q), "q={q}");
        }
        assert!(LatencyHistogram::decode("not base64!").is_err());
    }

    #[test]
    fn the_payload_bound_is_hdrhistograms_counts_array_at_nine_bytes_a_count() {
        for sigfig in 1..=5u8 {
            for (low, high) in [
                (1, 2),
                (1, 4_194_304),
                (1, MAX_HIGH_US),
                (1000, MAX_HIGH_US),
            ] {
                let h = Histogram::<u64>::new_with_bounds(low, high, sigfig).expect("valid");
                assert_eq!(
                    payload_bound(low, high, u32::from(sigfig)),
                    h.distinct_values() as u64 * MAX_VARINT_LEN,
                    "{sigfig} digits, {low}..={high}"
                );
            }
        }
        // The largest value we record still decodes.
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_secs(7200));
        h.record(Duration::from_micros(1));
        assert_eq!(
            LatencyHistogram::decode(&h.encode())
                .expect("decodes")
                .len(),
            2
        );
    }

    #[test]
    fn percentiles_are_within_three_significant_digits() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p95 = h.quantile_ms(0.95);
        assert!((p95 - 95.0).abs() <= 0.1, "{p95}");
        assert!((h.mean_ms() - 50.5).abs() < 0.1);
    }
}
