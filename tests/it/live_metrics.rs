//! `replay --admin`: the live Prometheus series a dashboard watches while
//! a replay runs, scraped from the real binary. A target that holds one
//! request of each VU until the test has scraped makes every scrape's
//! moment certain (no sleeps as synchronization: each wait polls for a
//! state with a bound); `--admin-linger` keeps the endpoint up after the
//! report, so the last scrape is final and equals the report.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tapedeck::report::Report;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::support::admin::{get, wait_for};
use crate::support::{self, Rec};
use tapedeck::shutdown::Shutdown;

/// Stops the target's accept loop when the test ends.
struct Stop(Shutdown);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

/// A target on 127.0.0.1:0: `/api/hold` answers once the test adds a
/// permit to the returned semaphore, `/api/fail` answers 500, anything
/// else 200 at once.
async fn holding_target() -> (String, Stop, Arc<Semaphore>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let permits = Arc::new(Semaphore::new(0));
    let stop = Shutdown::new();
    let (held, halt) = (permits.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                () = halt.wait() => break,
            };
            let held = held.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let held = held.clone();
                    async move {
                        let status = match req.uri().path() {
                            "/api/hold" => {
                                if let Ok(permit) = held.acquire().await {
                                    permit.forget();
                                }
                                StatusCode::OK
                            }
                            "/api/fail" => StatusCode::INTERNAL_SERVER_ERROR,
                            _ => StatusCode::OK,
                        };
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *resp.status_mut() = status;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, Stop(stop), permits)
}

/// The sum of every sample of `name` whose labels include all of `labels`.
fn sum(m: &HashMap<String, f64>, name: &str, labels: &[&str]) -> u64 {
    m.iter()
        .filter(|(k, _)| {
            k.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.is_empty())
                && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| *v as u64)
        .sum()
}

fn requests(m: &HashMap<String, f64>, stage: &str) -> u64 {
    sum(
        m,
        "tapedeck_replay_requests_total",
        &[&format!("stage=\"{stage}\"")],
    )
}

const PROFILE: &str = "version = 1\n\
    [[stage]]\nname = \"warm\"\nmultiplier = 1\n\
    [[stage]]\nname = \"peak\"\nmultiplier = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_admin_serves_live_counters_by_stage_and_a_final_scrape_equal_to_the_report() {
    let (target, _stop, hold) = holding_target().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    // One session: a GET, a call that now fails, and one the target holds.
    let session: Vec<Rec> = vec![
        (0, 2, "GET", "/api/items/1".into(), 200),
        (10, 2, "GET", "/api/fail".into(), 200),
        (20, 2, "GET", "/api/hold".into(), 200),
    ];
    support::synthetic_capture(&capture, &[session]).await;
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, PROFILE).expect("profile");
    let report = dir.path().join("r.json");
    let mut child = support::tapedeck()
        .arg("replay")
        .arg(&capture)
        .args(["--target", &target, "--profile"])
        .arg(&profile)
        .arg("--report")
        .arg(&report)
        .args(["--admin", "127.0.0.1:0", "--admin-linger", "5m"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn replay");
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), stderr.next_line())
        .await
        .expect("the admin line comes")
        .expect("read stderr")
        .expect("an admin line before stderr ends");
    let admin = crate::support::admin::address_in(&line);
    // The rest of stderr is read so the child never blocks on it, and
    // passed on line by line.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(l)) = stderr.next_line().await {
            let _ = lines_tx.send(l);
        }
    });
    let limit = Duration::from_secs(30);

    // First scrape: the warm stage waits on its held request.
    let first = wait_for(&admin, limit, "warm stage holding its last request", |m| {
        requests(m, "warm") == 2 && get(m, "tapedeck_replay_in_flight") == 1
    })
    .await;
    assert_eq!(get(&first, "tapedeck_replay_stage"), 0);
    assert_eq!(get(&first, "tapedeck_replay_multiplier"), 1);
    assert_eq!(
        get(
            &first,
            "tapedeck_replay_current_stage{stage=\"warm\",multiplier=\"1\"}"
        ),
        1
    );
    assert_eq!(get(&first, "tapedeck_replay_active_vus"), 1);
    assert_eq!(get(&first, "tapedeck_replay_finished"), 0);
    assert_eq!(
        get(
            &first,
            "tapedeck_replay_requests_total{stage=\"warm\",multiplier=\"1\",route=\"GET /api/items/{id}\"}"
        ),
        1
    );
    assert_eq!(
        get(
            &first,
            "tapedeck_replay_errors_total{stage=\"warm\",route=\"GET /api/fail\",kind=\"http_5xx\"}"
        ),
        1
    );
    assert_eq!(
        sum(
            &first,
            "tapedeck_replay_latency_seconds_count",
            &["stage=\"warm\""]
        ),
        2
    );
    hold.add_permits(1);

    // Second scrape: both worlds of the peak stage hold their last request.
    let second = wait_for(&admin, limit, "peak stage holding two requests", |m| {
        requests(m, "peak") == 4 && get(m, "tapedeck_replay_in_flight") == 2
    })
    .await;
    assert_eq!(get(&second, "tapedeck_replay_stage"), 1);
    assert_eq!(get(&second, "tapedeck_replay_multiplier"), 2);
    assert_eq!(
        get(
            &second,
            "tapedeck_replay_current_stage{stage=\"peak\",multiplier=\"2\"}"
        ),
        1
    );
    assert!(
        !second
            .keys()
            .any(|k| k.contains("current_stage{stage=\"warm\"")),
        "the warm stage is no longer current: {second:?}"
    );
    assert_eq!(get(&second, "tapedeck_replay_active_vus"), 2);
    assert_eq!(requests(&second, "warm"), 3, "the held request was counted");
    let total = |m: &HashMap<String, f64>| sum(m, "tapedeck_replay_requests_total", &[]);
    assert!(
        total(&second) > total(&first),
        "counters rise: {} then {}",
        total(&first),
        total(&second)
    );
    assert!(
        sum(&second, "tapedeck_replay_errors_total", &[])
            > sum(&first, "tapedeck_replay_errors_total", &[])
    );
    hold.add_permits(2);

    // The final scrape: taken once the report is written, while the
    // endpoint lingers.
    let last = wait_for(&admin, limit, "the replay to finish", |m| {
        get(m, "tapedeck_replay_finished") == 1
    })
    .await;
    let text = std::fs::read_to_string(&report).expect("report written before `finished`");
    let r: Report = serde_json::from_str(&text).expect("report JSON");
    assert_eq!(r.stages.len(), 2);
    for s in &r.stages {
        let stage = format!("stage=\"{}\"", s.name);
        assert_eq!(requests(&last, &s.name), s.requests, "{}", s.name);
        assert_eq!(
            sum(&last, "tapedeck_replay_errors_total", &[&stage]),
            s.errors,
            "{}",
            s.name
        );
        assert_eq!(
            sum(&last, "tapedeck_replay_latency_seconds_count", &[&stage]),
            s.requests
        );
        assert_eq!(
            sum(&last, "tapedeck_replay_late_sends_total", &[&stage]),
            s.late_requests
        );
        assert_eq!(
            sum(&last, "tapedeck_replay_vus_started_total", &[&stage]),
            s.vus
        );
        for route in &s.routes {
            let label = format!("route=\"{}\"", route.route);
            assert_eq!(
                sum(&last, "tapedeck_replay_requests_total", &[&stage, &label]),
                route.requests,
                "{} {}",
                s.name,
                route.route
            );
        }
    }
    assert_eq!(r.stages[0].requests, 3);
    assert_eq!(r.stages[1].requests, 6);
    assert_eq!(get(&last, "tapedeck_replay_in_flight"), 0);
    assert_eq!(get(&last, "tapedeck_replay_active_vus"), 0);

    // A stop signal ends the linger; the exit code is the verdict's. It
    // is sent once the binary says it lingers (`finished` is set just
    // before, when the report files are written).
    let mut stderr = Vec::new();
    let lingering = tokio::time::timeout(limit, async {
        while let Some(l) = lines.recv().await {
            let found = l.contains("serving the final metrics");
            stderr.push(l);
            if found {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(lingering, Ok(true), "{stderr:#?}");
    let pid = child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .expect("the linger ends at the signal")
        .expect("wait");
    while let Some(l) = lines.recv().await {
        stderr.push(l);
    }
    assert_eq!(status.code(), Some(0), "stderr: {stderr:#?}");
}
