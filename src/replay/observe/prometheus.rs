//! The Prometheus text exposition format (version 0.0.4, and the
//! OpenMetrics text a scrape may answer with), read: `# TYPE` lines and
//! samples `name{label="value",…} value [timestamp]`. Pure and bounded:
//! a scrape is untrusted input, so an overlong line, a malformed sample or
//! anything past [`MAX_SAMPLES`] is skipped (and counted), never a panic
//! or an error.

use std::collections::HashMap;

use crate::profile::{label_name, metric_name};

/// Longest line read; longer ones are skipped.
pub const MAX_LINE: usize = 16 * 1024;

/// Most samples kept from one scrape.
pub const MAX_SAMPLES: usize = 50_000;

/// Most labels read on one sample.
const MAX_LABELS: usize = 64;

/// A metric family's type, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until its process restarts).
    Counter,
    /// A value now.
    Gauge,
    /// `histogram`, `summary`, `untyped`, …
    Other,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value (NaN and ±Inf included).
    pub value: f64,
}

/// What one scrape exposed.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Samples kept, in the order written.
    pub samples: Vec<Sample>,
    /// Lines skipped: too long, malformed, or past [`MAX_SAMPLES`].
    pub skipped: usize,
    types: HashMap<String, Kind>,
}

impl Exposition {
    /// The type `# TYPE` gave `metric`, directly or as the family of a
    /// `_total` counter sample (OpenMetrics names the family without it).
    pub fn kind(&self, metric: &str) -> Option<Kind> {
        self.types.get(metric).copied().or_else(|| {
            metric
                .strip_suffix("_total")
                .and_then(|family| self.types.get(family).copied())
        })
    }

    /// The sum of the samples of `metric` carrying every label of
    /// `filter`; `None` when there is none.
    pub fn sum(&self, metric: &str, filter: &[(String, String)]) -> Option<f64> {
        let mut found = None;
        for s in self.samples.iter().filter(|s| s.name == metric) {
            let matches = filter
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v));
            if matches {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }
}

/// Reads `text`, keeping the samples whose metric name `keep` accepts
/// (the rest are not stored).
pub fn parse(text: &str, keep: impl Fn(&str) -> bool) -> Exposition {
    let mut out = Exposition::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            out.skipped += 1;
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE")
                && let (Some(name), Some(kind)) = (words.next(), words.next())
                && out.types.len() < MAX_SAMPLES
                && (keep(name) || keep(&format!("{name}_total")))
            {
                let kind = match kind {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    _ => Kind::Other,
                };
                out.types.insert(name.to_string(), kind);
            }
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_ascii_whitespace())
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if !metric_name(name) {
            out.skipped += 1;
            continue;
        }
        if !keep(name) {
            continue;
        }
        if out.samples.len() >= MAX_SAMPLES {
            out.skipped += 1;
            continue;
        }
        match sample(name, &line[name_end..]) {
            Some(s) => out.samples.push(s),
            None => out.skipped += 1,
        }
    }
    out
}

/// The rest of a sample line after its name: labels, value, timestamp.
fn sample(name: &str, rest: &str) -> Option<Sample> {
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => labels(inner)?,
        None => (Vec::new(), rest),
    };
    // An OpenMetrics exemplar follows ` # `.
    let rest = rest.split(" # ").next().unwrap_or(rest);
    let mut words = rest.split_ascii_whitespace();
    let value = number(words.next()?)?;
    // An optional timestamp (ms); anything more is malformed.
    if let Some(ts) = words.next() {
        ts.parse::<f64>().ok()?;
    }
    if words.next().is_some() {
        return None;
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Labels up to the closing `}`, and what follows it.
fn labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((out, after));
        }
        if out.len() >= MAX_LABELS {
            return None;
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if !label_name(key) {
            return None;
        }
        let (value, after) = quoted(s[eq + 1..].trim_start())?;
        out.push((key.to_string(), value));
        s = after.trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// A double-quoted label value with `\\`, `\"` and `\n` escapes, and what
/// follows its closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// A sample value: a float, `NaN`, `+Inf`, `-Inf`.
fn number(word: &str) -> Option<f64> {
    match word {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        w if w
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            w.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.47
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2.2724608e+07
# TYPE pg_stat_activity_count gauge
pg_stat_activity_count{datname="chat",state="active"} 7 1700000000000
pg_stat_activity_count{datname="chat",state="idle"} 12
pg_stat_activity_count{datname="other",state="active"} 3
# TYPE http_requests counter
http_requests_total{path="/a \"quoted\" \\ back\nline",code="200",} 5
odd_value NaN
up_inf +Inf
down_inf -Inf
"#;

    fn all(text: &str) -> Exposition {
        parse(text, |_| true)
    }

    #[test]
    fn samples_types_and_label_values_are_read() {
        let e = all(NODE);
        assert_eq!(e.skipped, 0);
        assert_eq!(e.sum("process_cpu_seconds_total", &[]), Some(12.47));
        assert_eq!(e.kind("process_cpu_seconds_total"), Some(Kind::Counter));
        assert_eq!(
            e.sum("process_resident_memory_bytes", &[]),
            Some(22_724_608.0)
        );
        assert_eq!(e.kind("process_resident_memory_bytes"), Some(Kind::Gauge));
        let active = [("state".to_string(), "active".to_string())];
        assert_eq!(e.sum("pg_stat_activity_count", &active), Some(10.0));
        assert_eq!(e.sum("pg_stat_activity_count", &[]), Some(22.0));
        let chat_idle = [
            ("datname".to_string(), "chat".to_string()),
            ("state".to_string(), "idle".to_string()),
        ];
        assert_eq!(e.sum("pg_stat_activity_count", &chat_idle), Some(12.0));
        let none = [("state".to_string(), "gone".to_string())];
        assert_eq!(e.sum("pg_stat_activity_count", &none), None);
        let http = e
            .samples
            .iter()
            .find(|s| s.name == "http_requests_total")
            .expect("http sample");
        assert_eq!(http.labels[0].1, "/a \"quoted\" \\ back\nline");
        assert_eq!(http.labels[1], ("code".into(), "200".into()));
        assert_eq!(e.kind("http_requests_total"), Some(Kind::Counter));
        assert!(e.sum("odd_value", &[]).expect("nan").is_nan());
        assert_eq!(e.sum("up_inf", &[]), Some(f64::INFINITY));
        assert_eq!(e.sum("down_inf", &[]), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn only_kept_names_are_stored() {
        let e = parse(NODE, |n| n == "process_cpu_seconds_total");
        assert_eq!(e.samples.len(), 1);
        assert_eq!(e.kind("process_cpu_seconds_total"), Some(Kind::Counter));
        assert_eq!(e.kind("pg_stat_activity_count"), None, "nor their types");
    }

    #[test]
    fn openmetrics_exemplars_and_eof_are_read() {
        let e = all("# TYPE foo counter\nfoo_total 17 # {trace_id=\"a\"} 1 1.5\n# EOF\n");
        assert_eq!(e.sum("foo_total", &[]), Some(17.0));
        assert_eq!(e.kind("foo_total"), Some(Kind::Counter));
    }

    #[test]
    fn hostile_input_is_skipped_without_panicking() {
        let long = format!("big{{a=\"{}\"}} 1", "x".repeat(MAX_LINE));
        let many_labels = format!(
            "wide{{{}}} 1",
            (0..100)
                .map(|i| format!("l{i}=\"v\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let cases = [
            long.as_str(),
            many_labels.as_str(),
            "no_value",
            "m{a=\"unterminated} 1",
            "m{a=\"v\" 1",
            "m{=\"v\"} 1",
            "m{a=v} 1",
            "m{a=\"\\",
            "m 1 2 3",
            "m one",
            "m 0x10",
            "9bad 1",
            "{\"utf8.name\"} 1",
            "m{a=\"é\\\u{1F600}\"} 1 notatime",
            "\u{0}\u{FFFF}",
            "# TYPE",
            "# TYPE only_name",
            "m{a=\"v\"}}",
        ];
        for case in cases {
            let e = all(case);
            assert!(e.samples.is_empty(), "{case:?} gave {:?}", e.samples);
        }
        let e = all(&cases.join("\n"));
        assert_eq!(e.samples.len(), 0);
        assert!(e.skipped >= cases.len() - 3, "skipped {}", e.skipped);
        // Arbitrary bytes, cut anywhere, never panic.
        let text = NODE.repeat(3);
        for cut in 0..text.len() {
            if text.is_char_boundary(cut) {
                let _ = all(&text[..cut]);
                let _ = all(&text[cut..]);
            }
        }
    }

    #[test]
    fn samples_past_the_cap_are_counted_not_kept() {
        let text: String = (0..MAX_SAMPLES + 10)
            .map(|i| format!("m{{i=\"{i}\"}} 1\n"))
            .collect();
        let e = all(&text);
        assert_eq!(e.samples.len(), MAX_SAMPLES);
        assert_eq!(e.skipped, 10);
    }
}
