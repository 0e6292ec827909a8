//! deploy/kubernetes: the manifests are valid Kubernetes objects, and the
//! commands they run work when run here as local processes (no cluster):
//! two record replicas into one PostgreSQL capture, the replay Job's
//! shards, then the merge Job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tapedeck::demo::script::{self, Population};
use tapedeck::report::Report;
use tokio::io::AsyncBufReadExt;

use crate::support::{demo_backend, demo_stats, pg_capture, tapedeck, terminate};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every object of every manifest, as JSON (PyYAML, which the validator
/// brings along, reads the YAML).
fn objects() -> Vec<Value> {
    let mut all = Vec::new();
    for file in manifest_files() {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(&file)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "reading {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
        all.extend(docs);
    }
    all
}

fn object<'a>(all: &'a [Value], kind: &str, name: &str) -> &'a Value {
    all.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

/// Kubernetes' `$(NAME)` expansion of the container's environment, with
/// `values` for what the cluster would supply (Secrets, the pod's index).
fn expand(text: &str, container: &Value, values: &HashMap<&str, String>) -> String {
    let mut out = text.to_string();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name");
        let value = values
            .get(name)
            .cloned()
            .or_else(|| var["value"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("the test gives no value for {name}"));
        out = out.replace(&format!("$({name})"), &value);
    }
    out
}

/// The container's shell command line, run here: the image's paths become
/// this checkout's, `tapedeck` the binary under test.
async fn run_shell(line: &str, reports: &Path, env: &[(&str, String)]) -> std::process::Output {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("replay-profiles");
    let line = line
        .replace(
            "/usr/share/tapedeck/replay-profiles",
            profiles.to_str().expect("utf8"),
        )
        .replace("/reports", reports.to_str().expect("utf8"))
        .replace("tapedeck ", &format!("{} ", env!("CARGO_BIN_EXE_tapedeck")));
    tokio::process::Command::new("/bin/sh")
        .args(["-c", &line])
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("sh runs")
}

#[test]
fn the_manifests_are_valid_kubernetes_objects() {
    let out = std::process::Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .args(manifest_files())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kubernetes-validate (pip install kubernetes-validate; tests/run.sh does):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let all = objects();
    // The record replicas get longer to stop than tapedeck takes to drain
    // (30 s) and flush.
    let record = object(&all, "Deployment", "tapedeck-record");
    let grace = record["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("grace period");
    assert!(grace > 30, "{grace}");
    // Probes ask whether the proxy serves, not whether it records: a full
    // disk must not take it out of rotation or restart it.
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container(record)[probe]["httpGet"]["path"], "/livez");
    }
    // The replay Job's shard count is its completions.
    let replay = object(&all, "Job", "tapedeck-replay");
    assert_eq!(replay["spec"]["completionMode"], "Indexed");
    let shards = container(replay)["env"]
        .as_array()
        .and_then(|env| env.iter().find(|v| v["name"] == "SHARDS"))
        .and_then(|v| v["value"].as_str())
        .expect("SHARDS");
    assert_eq!(shards, replay["spec"]["completions"].to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_commands_record_replay_in_shards_and_merge_as_local_processes() {
    let all = objects();
    let capture = pg_capture().await;
    let backend = demo_backend().await;

    // The record Deployment's container, twice (two replicas), on loopback.
    let record = container(object(&all, "Deployment", "tapedeck-record"));
    let values = HashMap::from([
        ("CAPTURE_URL", capture.clone()),
        ("UPSTREAM", backend.url()),
    ]);
    let args: Vec<String> = record["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| expand(a.as_str().expect("arg"), record, &values))
        .map(|a| {
            if a.starts_with("0.0.0.0:") {
                "127.0.0.1:0".into()
            } else {
                a
            }
        })
        .collect();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let mut child = tapedeck()
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn record");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr =
            |line: Option<String>| crate::support::admin::address_in(&line.expect("banner line"));
        let proxy = addr(lines.next_line().await.expect("read"));
        let admin = addr(lines.next_line().await.expect("read"));
        // The readiness probe's request.
        let health = crate::support::send(
            &crate::support::client(),
            http::Method::GET,
            &format!("http://{admin}/livez"),
            &[],
            bytes::Bytes::new(),
        )
        .await;
        assert_eq!(health.0, http::StatusCode::OK);
        replicas.push((child, proxy, lines));
    }
    let population = |seed| Population {
        users: 4,
        messages_per_user: 2,
        ramp: Duration::from_millis(50),
        think: (Duration::from_millis(2), Duration::from_millis(10)),
        seed,
    };
    for (seed, (_, proxy, _)) in replicas.iter().enumerate() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let outcome =
            script::drive(proxy.parse().expect("addr"), population(seed as u64), tx).await;
        assert!(outcome.mismatches.is_empty(), "{:?}", outcome.mismatches);
    }
    // What the kubelet does at the end of a pod: SIGTERM.
    for (child, _, _lines) in &mut replicas {
        assert_eq!(terminate(child).await, Some(0));
    }

    // The replay Job: one process per index, as the Job's pods.
    let job = object(&all, "Job", "tapedeck-replay");
    let replay = container(job);
    let shards = job["spec"]["completions"].as_u64().expect("completions");
    let target = demo_backend().await;
    let reports = tempfile::tempdir().expect("tempdir");
    let start_at = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3));
    let line = replay["args"][0].as_str().expect("shell line");
    let runs = (0..shards).map(|k| {
        let values = HashMap::from([
            ("CAPTURE_URL", capture.clone()),
            ("START_AT", start_at.to_string()),
            ("TARGET", target.url()),
        ]);
        let line = expand(line, replay, &values);
        let reports = reports.path().to_path_buf();
        // What Kubernetes sets in the pods of an Indexed Job.
        let index = [("JOB_COMPLETION_INDEX", k.to_string())];
        async move { run_shell(&line, &reports, &index).await }
    });
    for out in futures_util::future::join_all(runs).await {
        assert!(
            out.status.success(),
            "shard: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The merge Job.
    let merge = container(object(&all, "Job", "tapedeck-merge"));
    let out = run_shell(
        merge["args"][0].as_str().expect("shell line"),
        reports.path(),
        &[],
    )
    .await;
    assert!(
        out.status.success(),
        "merge: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(reports.path().join("merged.html").is_file());
    let load = |name: &str| -> Report {
        serde_json::from_str(&std::fs::read_to_string(reports.path().join(name)).expect("report"))
            .expect("json")
    };
    let merged = load("merged.json");
    let shard_reports: Vec<Report> = (0..shards)
        .map(|k| load(&format!("shard-{k}.json")))
        .collect();
    for (i, stage) in merged.stages.iter().enumerate() {
        let sum: u64 = shard_reports.iter().map(|r| r.stages[i].requests).sum();
        assert_eq!(stage.requests, sum, "stage {}", stage.name);
    }
    // Both replicas' users, at 1x + 5x + 10x, reached the target.
    assert_eq!(demo_stats(&target).await.logins, 8 * (1 + 5 + 10));
}
