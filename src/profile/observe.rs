//! The profile's `[observe]` table: which series of the `--observe`
//! scrapes to report beside the standard process ones, as what kind, under
//! which name. Parsed and checked here; replay's observer reads them.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[observe]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observe {
    /// `[[observe.series]]`: series read from every `--observe` scrape.
    #[serde(default)]
    pub series: Vec<ObservedSeries>,
}

/// How a series is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesKind {
    /// A counter: reported as its per-second rate.
    Counter,
    /// A gauge: reported as its value.
    Gauge,
}

/// One `[[observe.series]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedSeries {
    /// The metric name as the endpoint exposes it
    /// (`pg_stat_activity_count`).
    pub metric: String,
    /// Counter or gauge (default: what the endpoint's `# TYPE` says, a
    /// gauge when it says nothing).
    pub kind: Option<SeriesKind>,
    /// Only samples carrying all these labels count; the values of those
    /// that do are summed.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The report's name for it (default: `metric`).
    pub name: Option<String>,
}

impl ObservedSeries {
    /// The name reports give it.
    pub fn report_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.metric)
    }
}

/// Whether `name` is a Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Observe {
    /// Checks names and labels.
    ///
    /// # Errors
    /// A message naming the key and the fix.
    pub fn check(&self) -> Result<(), String> {
        for (i, s) in self.series.iter().enumerate() {
            let at = format!("observe.series[{i}]");
            if !metric_name(&s.metric) {
                return Err(format!(
                    "{at}.metric = {:?}: give a Prometheus metric name, like \
                     \"pg_stat_activity_count\"",
                    s.metric
                ));
            }
            if let Some(name) = &s.name
                && !metric_name(name)
            {
                return Err(format!(
                    "{at}.name = {name:?}: use letters, digits, `_` and `:`, not starting with \
                     a digit (it becomes a series name in reports)"
                ));
            }
            for key in s.labels.keys() {
                if !label_name(key) {
                    return Err(format!(
                        "{at}.labels: {key:?} is not a label name (letters, digits and `_`)"
                    ));
                }
            }
            let name = s.report_name();
            if let Some(j) = self.series[..i]
                .iter()
                .position(|o| o.report_name() == name)
            {
                return Err(format!(
                    "{at}: reported as {name:?} like observe.series[{j}]; give one of them \
                     another `name`"
                ));
            }
            if matches!(name, "process_cpu_cores" | "process_resident_memory_bytes") {
                return Err(format!(
                    "{at}: {name:?} is a standard series tapedeck reports by default; give it \
                     another `name`"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Observe, String> {
        let o: Observe = toml::from_str(text).map_err(|e| e.to_string())?;
        o.check()?;
        Ok(o)
    }

    #[test]
    fn series_are_read_with_kind_labels_and_name() {
        let o = parsed(
            r#"
            [[series]]
            metric = "pg_stat_activity_count"
            labels = { state = "active" }
            name = "pg_active"
            [[series]]
            metric = "http_requests_total"
            kind = "counter"
            "#,
        )
        .expect("valid");
        assert_eq!(o.series.len(), 2);
        assert_eq!(o.series[0].report_name(), "pg_active");
        assert_eq!(o.series[0].labels["state"], "active");
        assert_eq!(o.series[0].kind, None);
        assert_eq!(o.series[1].kind, Some(SeriesKind::Counter));
        assert_eq!(o.series[1].report_name(), "http_requests_total");
    }

    #[test]
    fn bad_series_are_refused_naming_the_key() {
        for (text, expected) in [
            ("[[series]]\nmetric = \"9x\"", "observe.series[0].metric"),
            (
                "[[series]]\nmetric = \"a\"\nname = \"b c\"",
                "observe.series[0].name",
            ),
            (
                "[[series]]\nmetric = \"a\"\nlabels = { \"x-y\" = \"1\" }",
                "not a label name",
            ),
            (
                "[[series]]\nmetric = \"a\"\n[[series]]\nmetric = \"a\"",
                "observe.series[1]",
            ),
            (
                "[[series]]\nmetric = \"a\"\nkind = \"histogram\"",
                "unknown variant",
            ),
            ("[[series]]\nmetric = \"a\"\nrate = true", "unknown field"),
            (
                "[[series]]\nmetric = \"process_cpu_cores\"",
                "standard series",
            ),
        ] {
            let err = parsed(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
