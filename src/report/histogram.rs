//! Latency histograms: HDR, 3 significant digits, microsecond values,
//! serialized as base64 of the HDR V2 + deflate encoding so that reports
//! merge exactly (counts add bucket by bucket).

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

/// A histogram blob that is not valid base64 HDR V2.
#[derive(Debug, thiserror::Error)]
#[error("histogram blob is damaged: {0}")]
pub struct HistogramError(String);

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
    /// # Errors
    /// When the text is not base64 of an HDR V2 (deflate) histogram.
    pub fn decode(text: &str) -> Result<LatencyHistogram, HistogramError> {
        if text.is_empty() {
            return Ok(LatencyHistogram::new());
        }
        let bytes = STANDARD
            .decode(text)
            .map_err(|e| HistogramError(e.to_string()))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| HistogramError(format!("{e:?}")))?;
        let mut out = LatencyHistogram::new();
        let _ = out.h.add(&h);
        Ok(out)
    }
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
