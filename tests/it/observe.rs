//! `--observe` and `--observe-pid`: the backend's resources during replay,
//! per stage and per window, from a Prometheus endpoint a test upstream
//! serves and from this test process's own /proc; a scrape target that
//! goes away is counted, never fatal.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tapedeck::profile::Profile;
use tapedeck::replay::observe::{ScrapeTarget, process};
use tapedeck::report::model::{ResourceStat, StageReport};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

use crate::support::{self, Rec};

/// Two sessions of ten GETs 100 ms apart.
fn sessions() -> Vec<Vec<Rec>> {
    (0..2)
        .map(|s| {
            (0..10)
                .map(|i| (i * 100 + s * 50, 5, "GET", format!("/api/items/{i}"), 200))
                .collect()
        })
        .collect()
}

/// One looping stage of `seconds`, with `extra` TOML after it.
fn profile(seconds: u32, extra: &str) -> Profile {
    let text = format!(
        "version = 1\n[[stage]]\nname = \"1x\"\nmultiplier = 1\nduration = \"{seconds}s\"\n\
         loop = true\n{extra}"
    );
    Profile::parse(&text, std::path::Path::new("observe.toml")).expect("profile")
}

/// `actual` within 10 % of `expected`.
fn near(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 0.1 * expected.abs(),
        "{what}: {actual} is not within 10 % of {expected}"
    );
}

fn stat<'a>(s: &'a StageReport, series: &str) -> &'a ResourceStat {
    s.resources
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {:?}", s.resources.keys()))
}

/// A Prometheus endpoint that exposes, as a real exporter would, a CPU
/// counter rising by `cores` per second, a constant RSS, a labelled
/// counter rising by 40 a second (`queue="mail"`) beside a still one, and
/// a gauge split over two labels.
fn exposition(since: Instant, cores: f64) -> String {
    let t = since.elapsed().as_secs_f64();
    format!(
        "# HELP process_cpu_seconds_total CPU time.\n\
         # TYPE process_cpu_seconds_total counter\n\
         process_cpu_seconds_total {:.6}\n\
         # TYPE process_resident_memory_bytes gauge\n\
         process_resident_memory_bytes 1.23456789e+08\n\
         # TYPE queue_jobs_total counter\n\
         queue_jobs_total{{queue=\"mail\"}} {:.6}\n\
         queue_jobs_total{{queue=\"sms\"}} 1000\n\
         # TYPE pool_in_use gauge\n\
         pool_in_use{{pool=\"a\"}} 7\n\
         pool_in_use{{pool=\"b\"}} 5\n",
        100.0 + cores * t,
        40.0 * t
    )
}

#[tokio::test]
async fn observe_scrapes_a_prometheus_endpoint_outside_every_statistic() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = support::synthetic_capture(&dir.path().join("c.db"), &sessions()).await;
    let since = Instant::now();
    // The replay header of every scrape, and the other requests seen.
    let scrapes: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let planned = Arc::new(AtomicUsize::new(0));
    let (seen, counted) = (scrapes.clone(), planned.clone());
    let target = support::serve(move |req: &Request<Incoming>| {
        if req.uri().path() == "/metrics" {
            let header = req
                .headers()
                .get("x-tapedeck-replay")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            seen.lock().expect("lock").push(header);
            return Response::new(Full::new(Bytes::from(exposition(since, 0.5))));
        }
        counted.fetch_add(1, Ordering::SeqCst);
        Response::new(Full::new(Bytes::from_static(b"{}")))
    })
    .await;
    let observe = ScrapeTarget::parse(&format!("{}/metrics", target.url)).expect("url");
    let source = observe.source().to_string();
    let extra = "[[observe.series]]\nmetric = \"queue_jobs_total\"\n\
                 labels = { queue = \"mail\" }\nname = \"mail_jobs\"\n\
                 [[observe.series]]\nmetric = \"pool_in_use\"\n";
    // A bound no replay meets, so that the capacity notes speak.
    let extra = format!("[slo]\np95_ms = 0.001\n{extra}");
    let report = support::replay_with(&store, &target.url, profile(3, &extra), |c| {
        c.observe = vec![observe];
    })
    .await;
    let s = &report.stages[0];
    let key = |name: &str| format!("{name}{{source=\"{source}\"}}");
    assert!(
        report
            .capacity
            .notes
            .iter()
            .any(|n| n == "1x fails p95_ms; CPU 0.50 cores, RSS 123 MB"),
        "{:?}",
        report.capacity.notes
    );

    let cpu = stat(s, &key("process_cpu_cores"));
    eprintln!("scraped cpu: expected 0.5 cores, reported {cpu:?}");
    eprintln!(
        "scraped mail_jobs: expected 40/s, reported {:?}",
        stat(s, &key("mail_jobs"))
    );
    assert!(cpu.count >= 3, "start, every second, end: {cpu:?}");
    for (what, v) in [("min", cpu.min), ("mean", cpu.mean), ("max", cpu.max)] {
        near(v, 0.5, &format!("cpu {what}"));
    }
    assert_eq!(cpu.cores, None, "a scraped process's machine is not known");
    let rss = stat(s, &key("process_resident_memory_bytes"));
    assert_eq!((rss.min, rss.max), (123_456_789.0, 123_456_789.0));
    near(stat(s, &key("mail_jobs")).mean, 40.0, "mail_jobs rate");
    near(stat(s, &key("mail_jobs")).max, 40.0, "mail_jobs max rate");
    assert_eq!(stat(s, &key("pool_in_use")).mean, 12.0, "labels summed");
    assert!(s.observe_failures.is_empty(), "{:?}", s.observe_failures);

    let windows: Vec<_> = s
        .timeline
        .iter()
        .filter(|w| !w.resources.is_empty())
        .collect();
    assert!(windows.len() >= 2, "{:?}", s.timeline);
    for w in &windows {
        if let Some(v) = w.resources.get(&key("process_cpu_cores")) {
            near(*v, 0.5, &format!("cpu in the window at {} s", w.t_s));
        }
        assert_eq!(
            w.resources[&key("process_resident_memory_bytes")],
            123_456_789.0
        );
        assert_eq!(w.resources[&key("pool_in_use")], 12.0);
    }

    // The scrapes are marked and in no statistic.
    let scrapes = scrapes.lock().expect("lock").clone();
    assert!(
        scrapes.len() as u64 >= rss.count,
        "{} scrapes",
        scrapes.len()
    );
    assert!(
        scrapes
            .iter()
            .all(|h| h.as_deref().is_some_and(|v| !v.is_empty())),
        "{scrapes:?}"
    );
    assert_eq!(s.requests, planned.load(Ordering::SeqCst) as u64);
    assert!(
        s.routes.iter().all(|r| !r.route.contains("metrics")),
        "{:?}",
        s.routes
    );
    let windowed: u64 = s.timeline.iter().map(|w| w.requests).sum();
    assert_eq!(windowed, s.requests);
}

/// Burns one core on a thread of this process until dropped.
struct Burner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Burner {
    fn start() -> Burner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut x = 0u64;
            while !flag.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
        Burner {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test]
async fn observe_pid_reports_a_busy_process_as_its_own_proc_files_do() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = support::synthetic_capture(&dir.path().join("c.db"), &sessions()).await;
    let target = support::serve(|_| Response::new(Full::new(Bytes::from_static(b"{}")))).await;
    let pid = std::process::id();
    let burner = Burner::start();
    let (before, started) = (process::sample(pid).expect("proc"), Instant::now());
    let report = support::replay_with(&store, &target.url, profile(3, ""), |c| {
        c.observe_pids = vec![pid];
    })
    .await;
    let (after, took) = (process::sample(pid).expect("proc"), started.elapsed());
    drop(burner);
    let expected = (after.cpu_seconds - before.cpu_seconds) / took.as_secs_f64();
    assert!(expected > 0.8, "the burner used {expected} cores");
    let s = &report.stages[0];
    let cpu = stat(s, &format!("process_cpu_cores{{pid=\"{pid}\"}}"));
    eprintln!("cpu: expected {expected:.3} cores, reported {cpu:?}");
    near(cpu.mean, expected, "mean cpu cores");
    assert!(cpu.count >= 3, "{cpu:?}");
    let cores = std::thread::available_parallelism().expect("cores").get() as u32;
    assert_eq!(cpu.cores, Some(cores));
    let rss = stat(
        s,
        &format!("process_resident_memory_bytes{{pid=\"{pid}\"}}"),
    );
    let (low, high) = (
        before.resident_bytes.min(after.resident_bytes) as f64,
        before.resident_bytes.max(after.resident_bytes) as f64,
    );
    eprintln!("rss: expected {low}..{high} bytes, reported {rss:?}");
    assert!(
        rss.min >= 0.9 * low && rss.max <= 1.1 * high,
        "{rss:?} against {low}..{high}"
    );
    near(rss.mean, (low + high) / 2.0, "mean rss");
    let windowed: Vec<f64> = s
        .timeline
        .iter()
        .filter_map(|w| {
            w.resources
                .get(&format!("process_cpu_cores{{pid=\"{pid}\"}}"))
                .copied()
        })
        .collect();
    assert!(windowed.len() >= 2, "{:?}", s.timeline);
    assert!(
        windowed.iter().all(|v| (cpu.min..=cpu.max).contains(v)),
        "window means {windowed:?} outside the stage's {cpu:?}"
    );
    assert!(s.observe_failures.is_empty());
}

/// A Prometheus endpoint that can go away entirely: its listener and
/// every open connection closed.
struct Endpoint {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn start(answer: impl Fn() -> Response<Full<Bytes>> + Send + Sync + 'static) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let answer = Arc::new(answer);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    _ = &mut stopped => break,
                };
                let answer = answer.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let answer = answer.clone();
                        async move { Ok::<_, Infallible>(answer()) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        });
        Endpoint {
            url,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

#[tokio::test]
async fn a_scrape_target_that_goes_away_is_counted_and_the_replay_finishes() {
    let dir = tempfile::tempdir().expect("tmp");
    let capture = dir.path().join("c.db");
    support::synthetic_capture(&capture, &sessions()).await;
    let target = support::serve(|_| Response::new(Full::new(Bytes::from_static(b"{}")))).await;
    let scrapes = Arc::new(AtomicUsize::new(0));
    let second = Arc::new(Notify::new());
    let (counted, notify) = (scrapes.clone(), second.clone());
    let endpoint = Endpoint::start(move || {
        if counted.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
            notify.notify_one();
        }
        Response::new(Full::new(Bytes::from_static(
            b"process_resident_memory_bytes 5e7\n",
        )))
    })
    .await;
    let source = ScrapeTarget::parse(&endpoint.url)
        .expect("url")
        .source()
        .to_string();
    let report_path = dir.path().join("r.json");
    let child = support::tapedeck()
        .args([
            "replay",
            capture.to_str().expect("utf-8"),
            "--target",
            &target.url,
            "--duration",
            "4s",
            "--loop",
            "--observe",
            &endpoint.url,
            "--report",
            report_path.to_str().expect("utf-8"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tapedeck");
    // The stage's start reading and the first one a second later.
    second.notified().await;
    endpoint.stop().await;
    let out = child.wait_with_output().await.expect("tapedeck");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("reading an observed source failed").count(),
        1,
        "warned once: {stderr}"
    );
    let report = tapedeck::report::load(&report_path).expect("report");
    let s = &report.stages[0];
    let failed = s.observe_failures.get(&source).copied().unwrap_or(0);
    assert!(
        failed >= 2,
        "the reads after it went away: {:?}",
        s.observe_failures
    );
    let rss = stat(
        s,
        &format!("process_resident_memory_bytes{{source=\"{source}\"}}"),
    );
    assert_eq!((rss.count, rss.min, rss.max), (2, 5e7, 5e7));
    assert!(s.requests > 0 && s.errors == 0, "{:?}", s.error_kinds);
    assert_eq!(report.verdict, tapedeck::report::Verdict::Pass);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("observe {source}: {failed} reads failed")),
        "{stdout}"
    );
}

#[tokio::test]
async fn bad_observe_flags_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let capture = dir.path().join("c.db");
    support::synthetic_capture(&capture, &sessions()).await;
    let capture = capture.to_str().expect("utf-8");
    for (flags, says) in [
        (["--observe", "ftp://db/metrics"], "--observe"),
        (["--observe", "db:9187"], "--observe"),
        (["--observe-pid", "0"], "--observe-pid 0"),
        (["--observe-pid", "4294967295"], "no such process"),
    ] {
        let mut args = vec!["replay", capture, "--target", "http://127.0.0.1:9"];
        args.extend(flags);
        let (code, _, stderr) = support::output(&args).await;
        assert_eq!(code, 2, "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}
