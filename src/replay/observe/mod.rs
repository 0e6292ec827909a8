//! Observing the backend's resources during replay: `--observe` scrapes of
//! Prometheus text endpoints (the backend's `/metrics`, node_exporter,
//! postgres_exporter) and `--observe-pid` samples of local processes,
//! read every second and at each stage's start and end.
//!
//! An [`Observer`] is one owner task holding the sources and their
//! readings; the stage loop asks it to read now and, after a stage, takes
//! the readings of the stage's span as [`report::resources::Reading`]s.
//! A scrape is a GET through a [`ReplayClient`] of its own (so it carries
//! `X-Tapedeck-Replay`, and HTTP stays in `replay::client`); it is never
//! an outcome, so no statistic sees it. A read that fails is counted per
//! source and warned about once, never fatal.
//!
//! [`report::resources::Reading`]: crate::report::resources::Reading

pub mod process;
pub mod prometheus;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use super::client::ReplayClient;
use super::correlate::AnswerNeeds;
use super::engine::Dispatch;
use crate::capture::{StoredExchange, now_epoch_us};
use crate::profile::{ObservedSeries, SeriesKind};
use crate::report::resources::Reading;
use crate::tls::ClientTls;
use crate::upstream::Upstream;

/// How often every source is read (besides each stage's start and end).
pub const PERIOD: Duration = Duration::from_secs(1);

/// A scrape slower than this counts as failed.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Two counter readings closer than this give no rate: the counters tick
/// in hundredths of a second, so a shorter span would be mostly rounding.
/// The older reading stays the base of the next rate.
const MIN_RATE_SPAN: Duration = Duration::from_millis(200);

/// A `--observe` URL: where to scrape and how its series are labelled.
#[derive(Debug, Clone)]
pub struct ScrapeTarget {
    origin: Upstream,
    path: String,
    source: String,
}

impl ScrapeTarget {
    /// Parses `http[s]://host[:port][/path][?query]`; without a path,
    /// `/metrics`.
    ///
    /// # Errors
    /// When it is not an http or https URL with a host.
    pub fn parse(url: &str) -> Result<ScrapeTarget, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("{url:?} is not a URL; expected http://host:port/metrics"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(format!(
                "{url:?} lacks a scheme or host; expected http://host:port/metrics"
            ));
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!("{url:?}: expected an http:// or https:// URL"));
        }
        let origin = Upstream::parse(&format!("{scheme}://{authority}"))
            .map_err(|e| format!("{url:?}: {}", e.reason))?;
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("" | "/") => "/metrics".to_string(),
            Some(p) => p.to_string(),
        };
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let mut source = format!("{}:{port}", authority.host());
        if path != "/metrics" {
            source.push_str(&path);
        }
        Ok(ScrapeTarget {
            origin,
            path,
            source,
        })
    }

    /// The `source` label of its series: `host:port`, with the path when
    /// it is not `/metrics`.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// What the scrapes are sent with.
#[derive(Debug, Clone, Copy)]
pub struct Scraping<'a> {
    /// Sent as `X-Tapedeck-Replay` (`None`: `--no-replay-header`).
    pub replay_id: Option<&'a str>,
    /// TLS for https:// endpoints (the target's settings).
    pub tls: &'a ClientTls,
    /// The replay's target: `--header` overrides go to an endpoint on its
    /// origin only, so credentials meant for it reach no other host.
    pub target: &'a Upstream,
    /// `--header` overrides.
    pub headers: &'a [(String, String)],
    /// The profile's `[[observe.series]]`.
    pub series: &'a [ObservedSeries],
}

/// What one stage's span observed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Readings taken from its start to its end.
    pub readings: Vec<Reading>,
    /// Reads that failed since the last take, per source.
    pub failures: BTreeMap<String, u64>,
}

enum Command {
    ReadNow(oneshot::Sender<()>),
    Take {
        from_us: i64,
        to_us: i64,
        reply: oneshot::Sender<Observed>,
    },
}

/// The observing task; stopped when dropped.
#[derive(Debug)]
pub struct Observer {
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Observer {
    /// Starts observing `targets` and `pids`; `None` when there is
    /// nothing to observe.
    ///
    /// # Errors
    /// When the TLS settings cannot be used for a scrape client.
    pub fn start(
        targets: &[ScrapeTarget],
        pids: &[u32],
        scraping: Scraping<'_>,
    ) -> Result<Option<Observer>, String> {
        if targets.is_empty() && pids.is_empty() {
            return Ok(None);
        }
        let mut sources = Vec::new();
        for t in targets {
            let same_origin = t.origin.authority() == scraping.target.authority()
                && t.origin.is_https() == scraping.target.is_https();
            let headers = if same_origin { scraping.headers } else { &[] };
            let client = ReplayClient::new(
                t.origin.clone(),
                SCRAPE_TIMEOUT,
                scraping.replay_id,
                scraping.tls,
                false,
            )?
            .with_headers(headers)
            .keeping(AnswerNeeds::bodies());
            sources.push(Source::Scrape(Box::new(Scrape::new(
                t,
                client,
                scraping.series,
            ))));
        }
        let cores = std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok());
        for pid in pids {
            sources.push(Source::Pid {
                pid: *pid,
                cpu: Counter::default(),
                cores,
            });
        }
        let (commands, rx) = mpsc::channel(8);
        let state = State {
            sources,
            readings: Vec::new(),
            failures: BTreeMap::new(),
            warned: HashSet::new(),
        };
        let task = tokio::spawn(own(state, rx));
        Ok(Some(Observer { commands, task }))
    }

    /// Reads every source now (a stage starts or ends).
    pub async fn read_now(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::ReadNow(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// The readings taken from `from_us` to `to_us` (µs since the epoch),
    /// and the failures since the last take; readings up to `to_us` are
    /// dropped.
    pub async fn take(&self, from_us: i64, to_us: i64) -> Observed {
        let (reply, taken) = oneshot::channel();
        let command = Command::Take {
            from_us,
            to_us,
            reply,
        };
        if self.commands.send(command).await.is_err() {
            return Observed::default();
        }
        taken.await.unwrap_or_default()
    }
}

/// The owner task: reads every [`PERIOD`] and on request.
async fn own(mut state: State, mut commands: mpsc::Receiver<Command>) {
    let mut tick = tokio::time::interval_at(Instant::now() + PERIOD, PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => state.read_all().await,
            command = commands.recv() => match command {
                None => break,
                Some(Command::ReadNow(reply)) => {
                    state.read_all().await;
                    let _ = reply.send(());
                }
                Some(Command::Take { from_us, to_us, reply }) => {
                    let _ = reply.send(state.take(from_us, to_us));
                }
            },
        }
    }
}

struct State {
    sources: Vec<Source>,
    readings: Vec<Reading>,
    failures: BTreeMap<String, u64>,
    /// Sources (and missing series) already warned about.
    warned: HashSet<String>,
}

impl State {
    async fn read_all(&mut self) {
        let reads = self.sources.iter_mut().map(Source::read);
        let results = futures_util::future::join_all(reads).await;
        for (name, result) in results {
            match result {
                Ok(Read { readings, missing }) => {
                    self.readings.extend(readings);
                    for series in missing {
                        let key = format!("{name} {series}");
                        if self.warned.insert(key) {
                            tracing::warn!(source = %name, series = %series, "observed series not in the scrape; check [[observe.series]] metric and labels");
                        }
                    }
                }
                Err(reason) => {
                    *self.failures.entry(name.clone()).or_insert(0) += 1;
                    if self.warned.insert(name.clone()) {
                        tracing::warn!(source = %name, error = %reason, "reading an observed source failed; counted in the report (observe_failures), warned once");
                    }
                }
            }
        }
    }

    fn take(&mut self, from_us: i64, to_us: i64) -> Observed {
        let (done, later): (Vec<Reading>, Vec<Reading>) = std::mem::take(&mut self.readings)
            .into_iter()
            .partition(|r| r.at_us <= to_us);
        self.readings = later;
        Observed {
            readings: done.into_iter().filter(|r| r.at_us >= from_us).collect(),
            failures: std::mem::take(&mut self.failures),
        }
    }
}

/// A counter's last usable reading, for rates.
#[derive(Debug, Default)]
struct Counter {
    base: Option<(Instant, f64)>,
}

impl Counter {
    /// The per-second rate since the base reading, if there is one far
    /// enough back; a counter that went down (a restart) starts over.
    ///
    /// Returns the rate and the span it covers: a rate belongs to the
    /// middle of its span (a stage's first reading then covers mostly the
    /// pause before it and counts there, not in the stage).
    fn rate(&mut self, at: Instant, value: f64) -> Option<(f64, Duration)> {
        if !value.is_finite() {
            return None;
        }
        let Some((then, before)) = self.base else {
            self.base = Some((at, value));
            return None;
        };
        if value < before {
            self.base = Some((at, value));
            return None;
        }
        let span = at.saturating_duration_since(then);
        if span < MIN_RATE_SPAN {
            return None;
        }
        self.base = Some((at, value));
        Some(((value - before) / span.as_secs_f64(), span))
    }
}

/// The middle of the `span` that ends at `end_us`.
fn midpoint(end_us: i64, span: Duration) -> i64 {
    end_us - i64::try_from(span.as_micros() / 2).unwrap_or(i64::MAX)
}

/// A series wanted from a scrape.
struct Wanted {
    /// Report key.
    key: String,
    metric: String,
    kind: Option<SeriesKind>,
    labels: Vec<(String, String)>,
    /// A standard series: silently absent when not exposed.
    optional: bool,
}

struct Scrape {
    source: String,
    client: ReplayClient,
    path: String,
    wanted: Vec<Wanted>,
    /// Per report key.
    counters: HashMap<String, Counter>,
}

impl Scrape {
    fn new(t: &ScrapeTarget, client: ReplayClient, series: &[ObservedSeries]) -> Scrape {
        let label = |name: &str| format!("{name}{{source=\"{}\"}}", t.source);
        let mut wanted = vec![
            Wanted {
                key: label("process_cpu_cores"),
                metric: "process_cpu_seconds_total".into(),
                kind: Some(SeriesKind::Counter),
                labels: Vec::new(),
                optional: true,
            },
            Wanted {
                key: label("process_resident_memory_bytes"),
                metric: "process_resident_memory_bytes".into(),
                kind: Some(SeriesKind::Gauge),
                labels: Vec::new(),
                optional: true,
            },
        ];
        wanted.extend(series.iter().map(|s| {
            Wanted {
                key: label(s.report_name()),
                metric: s.metric.clone(),
                kind: s.kind,
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                optional: false,
            }
        }));
        Scrape {
            source: t.source.clone(),
            client,
            path: t.path.clone(),
            wanted,
            counters: HashMap::new(),
        }
    }

    async fn read(&mut self) -> Result<Read, String> {
        let request = StoredExchange {
            method: "GET".into(),
            uri: self.path.clone(),
            http_version: "HTTP/1.1".into(),
            request_headers: vec![(
                "accept".into(),
                "text/plain;version=0.0.4;q=1,*/*;q=0.1".into(),
            )],
            ..StoredExchange::default()
        };
        let (sent_us, sent) = (now_epoch_us(), Instant::now());
        let answer = self.client.send(Arc::new(request), None).await;
        // Stamped halfway through the request: nearest to when the
        // endpoint read its numbers.
        let at_us = sent_us + (now_epoch_us() - sent_us) / 2;
        let at = sent + sent.elapsed() / 2;
        answer.success(&self.path)?;
        if answer.body_truncated {
            return Err(format!(
                "GET {} answered more than the 1 MiB a scrape reads; point --observe at a \
                 smaller endpoint",
                self.path
            ));
        }
        let text = String::from_utf8_lossy(&answer.body);
        let metrics: HashSet<&str> = self.wanted.iter().map(|w| w.metric.as_str()).collect();
        let exposed = prometheus::parse(&text, |name| metrics.contains(name));
        let mut read = Read::default();
        for w in &self.wanted {
            let Some(value) = exposed.sum(&w.metric, &w.labels) else {
                if !w.optional {
                    read.missing.push(w.key.clone());
                }
                continue;
            };
            let counter = match w.kind {
                Some(kind) => kind == SeriesKind::Counter,
                None => exposed.kind(&w.metric) == Some(prometheus::Kind::Counter),
            };
            let (value, at_us) = if counter {
                let rate = self.counters.entry(w.key.clone()).or_default();
                match rate.rate(at, value) {
                    Some((v, span)) => (v, midpoint(at_us, span)),
                    None => continue,
                }
            } else {
                (value, at_us)
            };
            if value.is_finite() {
                read.readings.push(Reading {
                    at_us,
                    series: w.key.clone(),
                    value,
                    cores: None,
                });
            }
        }
        Ok(read)
    }
}

enum Source {
    Scrape(Box<Scrape>),
    Pid {
        pid: u32,
        cpu: Counter,
        cores: Option<u32>,
    },
}

/// One source's successful read.
#[derive(Default)]
struct Read {
    readings: Vec<Reading>,
    /// Series the profile named that the scrape lacked.
    missing: Vec<String>,
}

impl Source {
    /// The source's name and what reading it gave.
    async fn read(&mut self) -> (String, Result<Read, String>) {
        match self {
            Source::Scrape(s) => (s.source.clone(), s.read().await),
            Source::Pid { pid, cpu, cores } => {
                let name = format!("pid {pid}");
                let (at_us, at) = (now_epoch_us(), Instant::now());
                let sample = match process::sample(*pid) {
                    Ok(s) => s,
                    Err(e) => return (name, Err(format!("/proc/{pid}: {e}"))),
                };
                let mut read = Read::default();
                if let Some((cores_used, span)) = cpu.rate(at, sample.cpu_seconds) {
                    read.readings.push(Reading {
                        at_us: midpoint(at_us, span),
                        series: format!("process_cpu_cores{{pid=\"{pid}\"}}"),
                        value: cores_used,
                        cores: *cores,
                    });
                }
                read.readings.push(Reading {
                    at_us,
                    series: format!("process_resident_memory_bytes{{pid=\"{pid}\"}}"),
                    value: sample.resident_bytes as f64,
                    cores: None,
                });
                (name, Ok(read))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_targets_default_their_path_and_name_their_source() {
        let t = ScrapeTarget::parse("http://db.internal:9187").expect("url");
        assert_eq!(
            (t.path.as_str(), t.source()),
            ("/metrics", "db.internal:9187")
        );
        let t = ScrapeTarget::parse("https://chat/admin/metrics?x=1").expect("url");
        assert_eq!(t.path, "/admin/metrics?x=1");
        assert_eq!(t.source(), "chat:443/admin/metrics?x=1");
        for bad in [
            "chat:8000/metrics",
            "ftp://chat/metrics",
            "not a url",
            "/metrics",
        ] {
            assert!(ScrapeTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_counter_rate_needs_a_span_and_restarts_on_a_reset() {
        let mut c = Counter::default();
        let t0 = Instant::now();
        assert_eq!(c.rate(t0, 10.0), None, "the first reading is a base");
        assert_eq!(
            c.rate(t0 + Duration::from_millis(50), 10.1),
            None,
            "too close"
        );
        assert_eq!(
            c.rate(t0 + Duration::from_secs(2), 13.0).map(|r| r.0),
            Some(1.5),
            "from the base"
        );
        assert_eq!(c.rate(t0 + Duration::from_secs(3), 1.0), None, "a restart");
        assert_eq!(
            c.rate(t0 + Duration::from_secs(4), 3.0),
            Some((2.0, Duration::from_secs(1)))
        );
    }
}
