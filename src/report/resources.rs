//! Observed resources in a report: readings of the backend's CPU, memory
//! and named series (taken by replay from `--observe` scrapes and
//! `--observe-pid` samples) turned into a stage's [`ResourceStat`]s and a
//! window's means, the exact merge of both, and their human units.
//!
//! Input is plain [`Reading`]s; nothing here reads a source, and nothing
//! here depends on replay. `accumulate` keeps the results beside a stage's
//! other numbers; `verdict` and `render` print them.

use std::collections::BTreeMap;

use super::model::ResourceStat;

/// One reading of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// When it was taken, µs since the Unix epoch (the clock of windows'
    /// `at_us`).
    pub at_us: i64,
    /// The report key: `process_cpu_cores{pid="12"}`,
    /// `process_resident_memory_bytes{source="db:9187"}`.
    pub series: String,
    /// The value (cores, bytes, a per-second rate, a gauge).
    pub value: f64,
    /// For a CPU series of a process on this machine: its cores.
    pub cores: Option<u32>,
}

/// Readings of one series in one window: what its mean is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Readings.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

impl Tally {
    /// The mean (0 without readings).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Adds another tally of the same series and window.
    pub fn add(&mut self, other: &Tally) {
        self.count += other.count;
        self.sum += other.sum;
    }

    /// Rebuilt from a window's mean and reading count (a report file).
    pub fn of_mean(mean: f64, count: u64) -> Tally {
        Tally {
            count,
            sum: mean * count as f64,
        }
    }
}

/// Adds another stage's statistic of the same series: extremes of both,
/// counts and sums added, the mean derived again.
pub fn add_stat(into: &mut ResourceStat, other: &ResourceStat) {
    if other.count == 0 {
        return;
    }
    if into.count == 0 {
        *into = other.clone();
        return;
    }
    into.min = into.min.min(other.min);
    into.max = into.max.max(other.max);
    into.count += other.count;
    into.sum += other.sum;
    into.mean = into.sum / into.count as f64;
    into.cores = into.cores.max(other.cores);
}

/// [`add_stat`] for every series of `other`.
pub fn add_stats(
    into: &mut BTreeMap<String, ResourceStat>,
    other: &BTreeMap<String, ResourceStat>,
) {
    for (series, stat) in other {
        add_stat(into.entry(series.clone()).or_default(), stat);
    }
}

/// Per series, the statistic of `readings`.
pub fn stats(readings: &[Reading]) -> BTreeMap<String, ResourceStat> {
    let mut out = BTreeMap::new();
    for r in readings {
        let one = ResourceStat {
            min: r.value,
            mean: r.value,
            max: r.value,
            count: 1,
            sum: r.value,
            cores: r.cores,
        };
        add_stat(out.entry(r.series.clone()).or_default(), &one);
    }
    out
}

/// Per window (the second since the epoch each reading falls in), per
/// series, the readings' tally.
pub fn per_second(readings: &[Reading]) -> BTreeMap<i64, BTreeMap<String, Tally>> {
    let mut out: BTreeMap<i64, BTreeMap<String, Tally>> = BTreeMap::new();
    for r in readings {
        let tally = out
            .entry(r.at_us.div_euclid(1_000_000))
            .or_default()
            .entry(r.series.clone())
            .or_default();
        tally.add(&Tally {
            count: 1,
            sum: r.value,
        });
    }
    out
}

/// What a series measures, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// CPU cores (`…_cpu_cores`).
    Cores,
    /// Bytes (`…_bytes`).
    Bytes,
    /// A plain number.
    Plain,
}

/// The unit of `series`, from its metric name (labels aside).
pub fn unit(series: &str) -> Unit {
    let metric = series.split('{').next().unwrap_or(series);
    if metric.ends_with("_cpu_cores") {
        Unit::Cores
    } else if metric.ends_with("_bytes") {
        Unit::Bytes
    } else {
        Unit::Plain
    }
}

/// `1.96 cores`, `1.1 GB`, `830 MB`, `12.5`: a value of `series` for
/// people (decimal units, as `top` and Grafana print them).
pub fn human(series: &str, value: f64) -> String {
    match unit(series) {
        Unit::Cores => format!("{value:.2} cores"),
        Unit::Bytes => {
            let (scaled, suffix) = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")]
                .into_iter()
                .find(|(scale, _)| value.abs() >= *scale)
                .map_or((value, "B"), |(scale, s)| (value / scale, s));
            if scaled.abs() >= 100.0 || suffix == "B" {
                format!("{scaled:.0} {suffix}")
            } else {
                format!("{scaled:.1} {suffix}")
            }
        }
        Unit::Plain if value.abs() >= 100.0 || value.fract() == 0.0 => format!("{value:.0}"),
        Unit::Plain => format!("{value:.2}"),
    }
}

/// Among `resources`, the resident-memory series (`--observe-pid`'s, a
/// scrape's `process_resident_memory_bytes`) whose `max` is highest; other
/// byte series (a database's size) are not a process's memory.
pub fn highest_rss(resources: &BTreeMap<String, ResourceStat>) -> Option<(&str, &ResourceStat)> {
    resources
        .iter()
        .filter(|(series, stat)| is_rss(series) && stat.count > 0)
        .max_by(|a, b| a.1.max.total_cmp(&b.1.max))
        .map(|(series, stat)| (series.as_str(), stat))
}

/// Whether `series` is a process's resident memory.
pub fn is_rss(series: &str) -> bool {
    series.starts_with("process_resident_memory_bytes")
}

/// Among `resources`, the series of `unit` whose `max` is highest.
pub fn highest(
    resources: &BTreeMap<String, ResourceStat>,
    wanted: Unit,
) -> Option<(&str, &ResourceStat)> {
    resources
        .iter()
        .filter(|(series, stat)| unit(series) == wanted && stat.count > 0)
        .max_by(|a, b| a.1.max.total_cmp(&b.1.max))
        .map(|(series, stat)| (series.as_str(), stat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_s: f64, series: &str, value: f64) -> Reading {
        Reading {
            at_us: (at_s * 1e6) as i64,
            series: series.into(),
            value,
            cores: None,
        }
    }

    #[test]
    fn a_stat_holds_extremes_count_sum_and_mean() {
        let s = stats(&[
            reading(10.1, "cpu", 1.0),
            reading(10.9, "cpu", 3.0),
            reading(11.5, "cpu", 2.0),
        ]);
        let cpu = &s["cpu"];
        assert_eq!((cpu.min, cpu.mean, cpu.max), (1.0, 2.0, 3.0));
        assert_eq!((cpu.count, cpu.sum), (3, 6.0));
    }

    #[test]
    fn merged_stats_equal_the_stat_of_all_readings() {
        let a = [reading(1.0, "m", 5.0), reading(2.0, "m", 9.0)];
        let b = [
            reading(1.5, "m", 1.0),
            reading(2.5, "m", 4.0),
            reading(3.0, "n", 7.0),
        ];
        let mut merged = stats(&a);
        add_stats(&mut merged, &stats(&b));
        let all: Vec<Reading> = a.iter().chain(b.iter()).cloned().collect();
        assert_eq!(merged, stats(&all));
        assert_eq!(merged["m"].mean, 19.0 / 4.0);
    }

    #[test]
    fn an_empty_stat_adds_nothing_and_takes_the_other() {
        let mut empty = ResourceStat::default();
        let one = stats(&[reading(1.0, "m", -3.0)]).remove("m").expect("m");
        add_stat(&mut empty, &one);
        assert_eq!(empty, one, "min stays -3, not 0 from the default");
        let mut kept = one.clone();
        add_stat(&mut kept, &ResourceStat::default());
        assert_eq!(kept, one);
    }

    #[test]
    fn cores_survive_a_merge() {
        let mut a = stats(&[Reading {
            cores: Some(8),
            ..reading(1.0, "process_cpu_cores{pid=\"1\"}", 1.5)
        }]);
        add_stats(
            &mut a,
            &stats(&[reading(2.0, "process_cpu_cores{pid=\"1\"}", 0.5)]),
        );
        assert_eq!(a["process_cpu_cores{pid=\"1\"}"].cores, Some(8));
    }

    #[test]
    fn readings_fall_into_the_second_they_were_taken_in() {
        let w = per_second(&[
            reading(10.1, "m", 2.0),
            reading(10.8, "m", 4.0),
            reading(11.0, "m", 6.0),
        ]);
        assert_eq!(w[&10]["m"].mean(), 3.0);
        assert_eq!(w[&10]["m"].count, 2);
        assert_eq!(w[&11]["m"].mean(), 6.0);
        let mut t = w[&10]["m"];
        t.add(&Tally::of_mean(6.0, 1));
        assert_eq!(t.mean(), 4.0, "merged windows weigh by readings");
    }

    #[test]
    fn human_units_follow_the_series_name() {
        assert_eq!(human("process_cpu_cores{pid=\"1\"}", 1.956), "1.96 cores");
        assert_eq!(human("process_resident_memory_bytes", 1.1e9), "1.1 GB");
        assert_eq!(human("x_bytes{a=\"b\"}", 830e6), "830 MB");
        assert_eq!(human("x_bytes", 512.0), "512 B");
        assert_eq!(human("pg_connections", 12.0), "12");
        assert_eq!(human("rate", 0.254), "0.25");
    }

    #[test]
    fn highest_picks_the_largest_max_of_a_unit() {
        let s = stats(&[
            reading(1.0, "process_cpu_cores{pid=\"1\"}", 0.5),
            reading(1.0, "process_cpu_cores{source=\"a:1\"}", 1.5),
            reading(1.0, "process_resident_memory_bytes{pid=\"1\"}", 9.0),
        ]);
        let (series, stat) = highest(&s, Unit::Cores).expect("a cpu series");
        assert_eq!(
            (series, stat.max),
            ("process_cpu_cores{source=\"a:1\"}", 1.5)
        );
        assert!(highest(&s, Unit::Plain).is_none());
    }
}
