//! `--group-by-header`: a route's or stage's answers split by the value of
//! a response header (a cache's `X-Cache: HIT`, a backend's region), as
//! exact data that adds across shards and becomes the report's
//! `by_header`. Fed by `collect` from each outcome's header values; read
//! back from report files for `report merge`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::histogram::{HistogramError, LatencyHistogram};
use super::model::{ByHeader, GROUP_VALUES, HeaderGroup, Percentiles};

/// The value an answer without the header is counted under.
pub const ABSENT: &str = "(none)";
/// Where values past the first [`GROUP_VALUES`] are counted.
pub const OTHER: &str = "(other)";

/// The answers that carried one value.
#[derive(Debug, Clone, Default)]
struct GroupData {
    requests: u64,
    errors: u64,
    latency: LatencyHistogram,
}

/// Answers by header name, then value; adds exactly.
#[derive(Debug, Clone, Default)]
pub struct ByHeaderData(BTreeMap<String, BTreeMap<String, GroupData>>);

impl ByHeaderData {
    /// Counts one answer under each `(header, value)` it carried; its
    /// latency only when `latency` is given (long-poll answers stay out
    /// of a stage's percentiles).
    pub fn record(
        &mut self,
        values: &[(impl AsRef<str>, impl AsRef<str>)],
        latency: Option<Duration>,
        error: bool,
    ) {
        for (name, value) in values {
            let group = self.group(name.as_ref(), value.as_ref());
            group.requests += 1;
            group.errors += u64::from(error);
            if let Some(l) = latency {
                group.latency.record(l);
            }
        }
    }

    /// The entry for `value` of `name`: a new value past the cap goes to
    /// [`OTHER`].
    fn group(&mut self, name: &str, value: &str) -> &mut GroupData {
        let values = self.0.entry(name.to_string()).or_default();
        let key = if values.contains_key(value) || values.len() < GROUP_VALUES {
            value
        } else {
            OTHER
        };
        values.entry(key.to_string()).or_default()
    }

    /// Adds another shard's answers; values new to this side past the cap
    /// go to [`OTHER`]. Which values keep their own entry then depends on
    /// the order shards are added in (a run would have kept the first
    /// seen); counts and `(other)` together still add up exactly.
    pub fn add(&mut self, other: &ByHeaderData) {
        for (name, values) in &other.0 {
            for (value, g) in values {
                let mine = self.group(name, value);
                mine.requests += g.requests;
                mine.errors += g.errors;
                mine.latency.add(&g.latency);
            }
        }
    }

    /// The report's `by_header`.
    pub fn report(&self) -> ByHeader {
        self.0
            .iter()
            .map(|(name, values)| {
                let groups = values
                    .iter()
                    .map(|(value, g)| {
                        let group = HeaderGroup {
                            requests: g.requests,
                            errors: g.errors,
                            latency_ms: Percentiles::of(&g.latency),
                            hdr: g.latency.encode(),
                        };
                        (value.clone(), group)
                    })
                    .collect();
                (name.clone(), groups)
            })
            .collect()
    }

    /// Rebuilds the exact data from a report's `by_header`.
    ///
    /// # Errors
    /// When a histogram blob is damaged.
    pub fn from_report(r: &ByHeader) -> Result<ByHeaderData, HistogramError> {
        let mut data = ByHeaderData::default();
        for (name, values) in r {
            let mut groups = BTreeMap::new();
            for (value, g) in values {
                let group = GroupData {
                    requests: g.requests,
                    errors: g.errors,
                    latency: LatencyHistogram::decode(&g.hdr)?,
                };
                groups.insert(value.clone(), group);
            }
            data.0.insert(name.clone(), groups);
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_count_as_other_and_adding_keeps_the_cap() {
        let mut a = ByHeaderData::default();
        for i in 0..GROUP_VALUES + 5 {
            let v = format!("id-{i}");
            a.record(
                &[("x-request-id", v.as_str())],
                Some(Duration::from_millis(2)),
                false,
            );
        }
        let report = a.report();
        let values = &report["x-request-id"];
        assert_eq!(values.len(), GROUP_VALUES + 1);
        assert_eq!(values[OTHER].requests, 5);

        let mut b = ByHeaderData::default();
        b.record(&[("x-request-id", "new")], None, true);
        a.add(&b);
        let values = &a.report()["x-request-id"];
        assert_eq!((values[OTHER].requests, values[OTHER].errors), (6, 1));
        assert!(!values.contains_key("new"));
    }

    #[test]
    fn a_report_reads_back_to_the_same_data() {
        let mut a = ByHeaderData::default();
        a.record(&[("x-cache", "HIT")], Some(Duration::from_millis(3)), false);
        a.record(&[("x-cache", ABSENT)], Some(Duration::from_millis(9)), true);
        // Equal histograms may encode differently (array sizes): compare
        // everything but the blobs.
        let without_blobs = |mut r: ByHeader| {
            r.values_mut()
                .flat_map(|v| v.values_mut())
                .for_each(|g| g.hdr.clear());
            r
        };
        let report = a.report();
        let back = ByHeaderData::from_report(&report).expect("blobs");
        assert_eq!(without_blobs(back.report()), without_blobs(report));
    }
}
