//! `--junit` on `replay` and `compare`, through the real binary: the files
//! validate against the JUnit schema CI reporters read (junit-10.xsd, with
//! the xmlschema validator; `bash tests/run.sh` installs both), and a failed
//! check is a `<failure>` carrying the measured value and the bound.

use std::path::Path;

use serde_json::Value;

use crate::support::{self, Rec, TestUpstream, replay_capture, synthetic_capture};

/// Validates `xml` against the JUnit schema and reads it back: one object
/// per suite, `{name, tests, failures, cases: [{name, failure, skipped}]}`.
/// Panics with the validator's words when the file is not valid.
fn validate(xml: &Path) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys, xml.etree.ElementTree as ET
import xmlschema
xmlschema.XMLSchema(sys.argv[1]).validate(sys.argv[2])
suites = []
for s in ET.parse(sys.argv[2]).getroot().iter("testsuite"):
    cases = []
    for c in s.iter("testcase"):
        f = c.find("failure")
        cases.append({"name": c.get("name"),
                      "failure": None if f is None else f.get("message"),
                      "skipped": c.find("skipped") is not None})
    suites.append({"name": s.get("name"), "tests": int(s.get("tests")),
                   "failures": int(s.get("failures")), "cases": cases})
print(json.dumps(suites))
"#;
    let xsd = std::env::var("TAPEDECK_JUNIT_XSD").unwrap_or_else(|_| {
        panic!(
            "the JUnit checks need the schema: set TAPEDECK_JUNIT_XSD to junit-10.xsd \
             (bash tests/run.sh fetches it and installs xmlschema)"
        )
    });
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT, &xsd, xml.to_str().expect("utf-8")])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} is not valid JUnit XML:\n{}\n{}",
        xml.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(xml).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).expect("the script's JSON")
}

/// The test case named `name` in `suite`.
fn case<'a>(suite: &'a Value, name: &str) -> &'a Value {
    suite["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no test case {name:?} in {suite}"))
}

/// Replays 30 `GET /slow?ms={ms}` against `target` with `profile`,
/// writing the report and the JUnit file into `dir` under `tag`: the exit
/// code and the report's JSON.
async fn replay(dir: &Path, target: &str, ms: u64, profile: &str, tag: &str) -> (i32, Value) {
    let session: Vec<Rec> = (0..30)
        .map(|i| (i * 10, ms, "GET", format!("/slow?ms={ms}"), 200))
        .collect();
    let capture = dir.join(format!("{tag}.db"));
    synthetic_capture(&capture, &[session]).await.close().await;
    let junit = dir.join(format!("{tag}.xml"));
    let (code, _, report) = replay_capture(
        &capture,
        target,
        profile,
        &["--junit", junit.to_str().expect("utf-8")],
    )
    .await;
    // Kept for `compare`.
    tapedeck::report::save(&report, &dir.join(format!("{tag}.json"))).expect("save report");
    (code, serde_json::to_value(&report).expect("report JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junit_files_validate_and_a_failed_slo_carries_its_value_and_bound() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = r#"
version = 1
[slo]
error_rate = 0.01
[[slo.route]]
route = "GET /slow"
p95_ms = 20
[[stage]]
name = "1x"
speed = 4
"#;
    // The base run meets its route SLO; the candidate's answers take 60 ms.
    let (code, _) = replay(dir.path(), &upstream.url(), 1, profile, "base").await;
    assert_eq!(code, 0, "the base run meets its SLOs");
    let (code, report) = replay(dir.path(), &upstream.url(), 60, profile, "cand").await;
    assert_eq!(code, 1, "a failed route SLO fails the run");

    let base = validate(&dir.path().join("base.xml"));
    assert_eq!(base.len(), 1, "one suite per stage: {base:?}");
    assert_eq!(base[0]["name"], "stage 1x");
    assert_eq!(base[0]["failures"], 0, "{base:?}");

    let suites = validate(&dir.path().join("cand.xml"));
    let [suite] = suites.as_slice() else {
        panic!("one suite per stage: {suites:?}")
    };
    assert_eq!(suite["failures"], 1, "{suite}");
    assert_eq!(case(suite, "valid measurement")["failure"], Value::Null);
    assert_eq!(case(suite, "error_rate")["failure"], Value::Null);
    // The failure names the route, the measured p95 (as the report has
    // it) and the bound.
    let slo = report["stages"][0]["slo"]
        .as_array()
        .expect("slo results")
        .iter()
        .find(|r| r["route"] == "GET /slow")
        .expect("the route SLO's result");
    let actual = slo["actual"].as_f64().expect("actual");
    assert!(actual >= 60.0, "{slo}");
    assert_eq!(
        case(suite, "p95_ms of GET /slow")["failure"],
        format!("p95_ms of GET /slow {actual} against a bound of 20"),
    );

    // compare: the candidate's slowdown is a regression, stage-wide and
    // on the route, each a failed test case with both values.
    let junit = dir.path().join("compare.xml");
    let (code, stdout, stderr) = support::output(&[
        "compare",
        dir.path().join("base.json").to_str().expect("utf-8"),
        dir.path().join("cand.json").to_str().expect("utf-8"),
        "--junit",
        junit.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(code, 1, "a regression fails compare: {stdout}{stderr}");
    let suites = validate(&junit);
    let [suite] = suites.as_slice() else {
        panic!("one suite per stage: {suites:?}")
    };
    assert_eq!(suite["name"], "stage 1x");
    for name in ["p95_ms", "GET /slow p95_ms"] {
        let failure = case(suite, name)["failure"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} is a failure: {suite}"))
            .to_string();
        assert!(
            failure.starts_with(&format!("{name} regressed: ")) && failure.contains(" -> "),
            "{failure}"
        );
    }
    assert_eq!(
        case(suite, "error_rate_pct")["failure"],
        Value::Null,
        "no errors either side"
    );
}
