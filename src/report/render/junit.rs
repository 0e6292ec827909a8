//! JUnit XML for CI test reporters (GitLab, Jenkins, GitHub): a replay's
//! checks and a comparison's verdicts as test cases. A replay gives one
//! `<testsuite>` per stage with a test case per SLO (stage-wide and per
//! route), per effect and for the stage being a valid measurement; a
//! comparison gives one per stage with a test case per compared metric
//! and per route metric. A failed check is a `<failure>` whose message
//! holds the measured value and the bound. Input is report-model values;
//! output is a `String`. Nothing is judged here.

use std::fmt::Write;

use crate::report::compare::{Change, ReportDiff};
use crate::report::model::{Report, StageReport};
use crate::report::verdict::slo_label;

/// One test case: its name, the failure message when it failed, or why
/// it was skipped.
#[derive(Default)]
struct Case {
    name: String,
    failure: Option<String>,
    skipped: Option<String>,
}

/// One suite: a stage.
struct Suite {
    name: String,
    time_s: f64,
    timestamp: Option<String>,
    cases: Vec<Case>,
}

/// A replay's report as JUnit XML.
pub fn report_junit(report: &Report) -> String {
    let suites: Vec<Suite> = report.stages.iter().map(stage_suite).collect();
    document(&format!("tapedeck replay {}", report.profile.name), &suites)
}

fn stage_suite(s: &StageReport) -> Suite {
    let mut cases = vec![Case {
        name: "valid measurement".into(),
        failure: s.invalid.clone(),
        ..Case::default()
    }];
    cases.extend(s.slo.iter().map(|r| Case {
        name: slo_label(r),
        failure: (!r.pass).then(|| match r.routes_matched {
            Some(0) => format!(
                "{}: the pattern matches no route of the stage",
                slo_label(r)
            ),
            _ => format!(
                "{} {} against a bound of {}",
                slo_label(r),
                r.actual,
                r.threshold
            ),
        }),
        ..Case::default()
    }));
    cases.extend(s.effects.iter().map(|e| Case {
        name: format!("effect {}", e.name),
        failure: (!e.pass).then(|| match (&e.error, e.delta) {
            (Some(error), _) => format!("could not be read: {error}"),
            (None, delta) => format!(
                "writes confirmed {} of {}: the backend dropped or merged {}",
                delta.unwrap_or(0.0),
                e.expected,
                e.expected as f64 - delta.unwrap_or(0.0)
            ),
        }),
        ..Case::default()
    }));
    Suite {
        name: format!("stage {}", s.name),
        time_s: s.duration_s,
        timestamp: Some(s.started_at.clone()),
        cases,
    }
}

/// A comparison as JUnit XML: a regression is a failure.
pub fn comparison_junit(d: &ReportDiff) -> String {
    let suites: Vec<Suite> = d
        .stages
        .iter()
        .map(|s| {
            let mut cases: Vec<Case> = s
                .metrics
                .iter()
                .map(|m| Case {
                    name: m.metric.clone(),
                    failure: (m.change == Change::Regression).then(|| {
                        format!(
                            "{} regressed: {} -> {} ({:+.1}%)",
                            m.metric,
                            m.base,
                            m.candidate,
                            m.delta_rel * 100.0
                        )
                    }),
                    ..Case::default()
                })
                .collect();
            for r in &s.routes {
                cases.extend(r.metrics.iter().map(|m| Case {
                    name: format!("{} {}", r.route, m.metric),
                    failure: (m.change == Change::Regression).then(|| {
                        format!(
                            "{} {} regressed: {} -> {} ({:+.1}%)",
                            r.route,
                            m.metric,
                            m.base,
                            m.candidate,
                            m.delta_rel * 100.0
                        )
                    }),
                    ..Case::default()
                }));
            }
            // Not a regression, as `compare` itself says: nothing to judge.
            if let Some(side) = &s.only_in {
                cases.push(Case {
                    name: "in both reports".into(),
                    skipped: Some(format!("stage {} is only in the {side} report", s.name)),
                    ..Case::default()
                });
            }
            Suite {
                name: format!("stage {}", s.name),
                time_s: 0.0,
                timestamp: None,
                cases,
            }
        })
        .collect();
    document("tapedeck compare", &suites)
}

/// The XML document: `<testsuites>` holding every suite.
fn document(name: &str, suites: &[Suite]) -> String {
    let failed = |s: &Suite| s.cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = |s: &Suite| {
        s.cases
            .iter()
            .filter(|c| c.failure.is_none() && c.skipped.is_some())
            .count()
    };
    let tests: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failures: usize = suites.iter().map(failed).sum();
    let time: f64 = suites.iter().map(|s| s.time_s).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">",
        escape(name)
    );
    for s in suites {
        let timestamp = s
            .timestamp
            .as_deref()
            .map(|t| format!(" timestamp=\"{}\"", escape(t)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\"{timestamp}>",
            escape(&s.name),
            s.cases.len(),
            failed(s),
            skipped(s),
            s.time_s
        );
        let classname = escape(&format!("tapedeck.{}", s.name));
        for c in &s.cases {
            let name = escape(&c.name);
            let (element, text) = match (&c.failure, &c.skipped) {
                (Some(failure), _) => ("failure type=\"tapedeck\"", failure),
                (None, Some(why)) => ("skipped", why),
                (None, None) => {
                    let _ = writeln!(
                        out,
                        "    <testcase classname=\"{classname}\" name=\"{name}\" time=\"0\"/>"
                    );
                    continue;
                }
            };
            let text = escape(text);
            let tag = element.split(' ').next().unwrap_or(element);
            let _ = writeln!(
                out,
                "    <testcase classname=\"{classname}\" name=\"{name}\" time=\"0\">\n      \
                 <{element} message=\"{text}\">{text}</{tag}>\n    </testcase>"
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Text for an XML attribute or element: the five markup characters
/// escaped, and characters XML 1.0 cannot hold (controls) replaced.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{EffectResult, SloResult, test_report};

    fn stage() -> StageReport {
        let mut s = crate::report::accumulate::StageData {
            name: "5x <\"load\">".into(),
            multiplier: 5,
            ..Default::default()
        }
        .report();
        s.slo = vec![
            SloResult {
                name: "p95_ms".into(),
                threshold: 250.0,
                actual: 281.4,
                pass: false,
                route: Some("POST /api/conversations/*/messages".into()),
                routes_matched: Some(1),
            },
            SloResult {
                name: "error_rate".into(),
                threshold: 0.01,
                actual: 0.0,
                pass: true,
                route: None,
                routes_matched: None,
            },
        ];
        s.effects = vec![EffectResult {
            name: "messages & more".into(),
            route: "POST /m".into(),
            before: Some(0.0),
            after: Some(140.0),
            delta: Some(140.0),
            expected: 150,
            pass: false,
            error: None,
        }];
        s
    }

    #[test]
    fn a_failed_slo_is_a_failure_with_its_value_and_bound() {
        let xml = report_junit(&test_report(vec![stage()]));
        assert!(xml.contains(r#"tests="4" failures="2""#), "{xml}");
        assert!(
            xml.contains(
                r#"<failure type="tapedeck" message="p95_ms of POST /api/conversations/*/messages 281.4 against a bound of 250">"#
            ),
            "{xml}"
        );
        assert!(xml.contains("writes confirmed 140 of 150: the backend dropped or merged 10"));
        assert!(
            xml.contains(r#"name="stage 5x &lt;&quot;load&quot;&gt;""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"name="effect messages &amp; more""#),
            "{xml}"
        );
        assert!(xml.contains(r#"name="error_rate" time="0"/>"#), "{xml}");
    }

    #[test]
    fn controls_are_replaced_and_markup_escaped() {
        assert_eq!(
            escape("a<b>&\"'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;&apos;\u{fffd}&#10;"
        );
    }
}
