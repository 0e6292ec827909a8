//! Redaction of a whole exchange record, and of a part of a socket's
//! frames, as the capture writer applies it before a batch is written: off
//! the client's path (docs/recording.md), on a thread of its own at a lower
//! scheduling priority.

use std::sync::mpsc;

use http::HeaderMap;
use tokio::sync::oneshot;

use super::{Redactor, scannable};
use crate::capture::{ExchangeRecord, FramePart};

/// How much lower the redaction thread's priority is than the proxy's
/// (a nice value, Linux): under CPU contention forwarding goes first,
/// and redaction takes what is left (about a tenth of a busy core).
const NICE: i32 = 10;

/// A batch's records and frame parts.
type Work = (Vec<ExchangeRecord>, Vec<FramePart>);
type Job = (Work, oneshot::Sender<Redacted>);

/// A batch back from the redaction thread.
#[derive(Debug)]
pub struct Redacted {
    /// The records, redacted.
    pub records: Vec<ExchangeRecord>,
    /// The frame parts, redacted.
    pub parts: Vec<FramePart>,
    /// Records whose redaction panicked: left out, never stored.
    pub failed_records: u64,
    /// Parts whose redaction panicked, as they came (never stored; their
    /// frames are counted as dropped).
    pub failed_parts: Vec<FramePart>,
}

/// What the thread does to each record and part.
trait Redact: Send + 'static {
    fn record(&self, r: &mut ExchangeRecord);
    fn part(&self, p: &mut FramePart);
}

impl Redact for Redactor {
    fn record(&self, r: &mut ExchangeRecord) {
        self.redact_record(r);
    }
    fn part(&self, p: &mut FramePart) {
        self.redact_part(p);
    }
}

/// A thread that redacts batches of records, one at a time, at a lower
/// priority than the threads that forward traffic. It ends when the
/// handle is dropped. A record or part whose redaction panics is left
/// out of its batch and counted; the rest of the batch, and later ones,
/// go on.
#[derive(Debug)]
pub struct Background {
    jobs: mpsc::Sender<Job>,
}

impl Background {
    /// Starts the thread.
    ///
    /// # Errors
    /// When the OS cannot start a thread.
    pub fn spawn(redactor: Redactor) -> std::io::Result<Self> {
        Self::spawn_with(redactor)
    }

    fn spawn_with(redactor: impl Redact) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tapedeck-redact".into())
            .spawn(move || {
                lower_priority();
                for ((records, parts), done) in rx {
                    let (records, failed_records) = isolated(records, |r| redactor.record(r));
                    let (parts, failed_parts) = isolated(parts, |p| redactor.part(p));
                    let _ = done.send(Redacted {
                        records,
                        parts,
                        failed_records: failed_records.len() as u64,
                        failed_parts,
                    });
                }
            })?;
        Ok(Background { jobs })
    }

    /// The records and frame parts, redacted; `None` if the thread is gone:
    /// nothing unredacted may be stored then.
    pub async fn redact(
        &self,
        records: Vec<ExchangeRecord>,
        parts: Vec<FramePart>,
    ) -> Option<Redacted> {
        let (done, redacted) = oneshot::channel();
        self.jobs.send(((records, parts), done)).ok()?;
        redacted.await.ok()
    }
}

/// Applies `f` to each item, each on its own: an item `f` panics on is
/// moved to the second list (as it was before `f`, as far as `f` left
/// it), the others stay in order in the first.
fn isolated<T>(items: Vec<T>, f: impl Fn(&mut T)) -> (Vec<T>, Vec<T>) {
    let mut done = Vec::with_capacity(items.len());
    let mut failed = Vec::new();
    for mut item in items {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut item))) {
            Ok(()) => done.push(item),
            Err(_) => {
                tracing::error!(
                    "redacting a record or frame part panicked (a bug); it is dropped, not stored"
                );
                failed.push(item);
            }
        }
    }
    (done, failed)
}

/// Lowers the calling thread's scheduling priority by [`NICE`]. On Linux
/// a nice value is per thread; elsewhere it would be the whole process's,
/// so this is Linux only.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), NICE) {
            tracing::debug!(error = %e, "could not lower the redaction thread's priority");
        }
    }
}

impl Redactor {
    /// Replaces every credential the record carries by its marker: the
    /// request's credential headers, secret query parameters and secret
    /// body fields; the response's credential headers and secret fields;
    /// text frames' secret fields; and wherever a response or a frame
    /// echoes a value redacted from the request. A no-op with
    /// `--keep-credentials`.
    pub fn redact_record(&self, r: &mut ExchangeRecord) {
        if self.keeps_credentials() {
            return;
        }
        // What the request carried in clear, to be redacted wherever the
        // response echoes it too.
        let mut secrets = self.redact_request_head(&mut r.request_headers, &mut r.uri);
        if let Some(body) = scannable(&r.request_headers, &r.request_body.bytes) {
            secrets.extend(
                self.secret_ranges(&body.content, &body.kind)
                    .into_iter()
                    .map(|range| body.content[range].to_vec()),
            );
            if let Some(b) = self.redact_content(&body, &[]) {
                r.request_body.bytes = b;
            }
        }
        self.redact_headers(&mut r.response_headers);
        self.redact_echoed_headers(&mut r.response_headers, &secrets);
        if let Some(body) = scannable(&r.response_headers, &r.response_body.bytes)
            && let Some(b) = self.redact_content(&body, &secrets)
        {
            r.response_body.bytes = b;
        }
        self.redact_frames(&mut r.ws_frames, &secrets);
    }

    /// Redacts a part of a socket's frames as [`Redactor::redact_record`]
    /// redacts the frames its handshake's record carries: the same rules,
    /// and the values the handshake request carried in clear (its
    /// credential headers and secret query parameters; a handshake is a
    /// `GET`, without a body) replaced wherever a frame repeats them. A
    /// no-op with `--keep-credentials`.
    pub fn redact_part(&self, part: &mut FramePart) {
        if self.keeps_credentials() {
            return;
        }
        let mut headers = part.handshake.request_headers.clone();
        let mut uri = part.handshake.uri.clone();
        let secrets = self.redact_request_head(&mut headers, &mut uri);
        self.redact_frames(&mut part.frames, &secrets);
    }

    /// Replaces a request's credential headers and secret query parameters
    /// by markers, in place; returns the clear values replaced.
    fn redact_request_head(&self, headers: &mut HeaderMap, uri: &mut String) -> Vec<Vec<u8>> {
        let mut secrets = self.redact_headers(headers);
        if let Some(redacted) = self.redact_uri(uri, &mut secrets) {
            *uri = redacted;
        }
        secrets
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http::{HeaderMap, HeaderValue, header};

    use super::super::RedactionConfig;
    use super::*;
    use crate::capture::{CapturedBody, Handshake, SessionInfo, SessionKeyKind, WsFrame};

    fn text(data: &str) -> WsFrame {
        WsFrame::text("server", data)
    }

    #[test]
    fn a_parts_frames_are_redacted_with_the_handshakes_secrets() {
        let r = Redactor::new([3; 32], &RedactionConfig::default()).expect("valid");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok_live_123456789"),
        );
        let handshake = Handshake::new("/ws?room=1&access_token=qtok_abcdefgh", &headers);
        let mut part = FramePart {
            session_no: 1,
            seq: 1,
            part_no: 1,
            frames: vec![
                text(r#"{"password":"hunter2","note":"you are tok_live_123456789"}"#),
                text("welcome qtok_abcdefgh"),
            ],
            handshake: Arc::new(handshake),
        };
        r.redact_part(&mut part);
        let [fields, echo] = &part.frames[..] else {
            panic!("two frames")
        };
        assert_eq!(
            fields.data,
            format!(
                r#"{{"password":"{}","note":"you are {}"}}"#,
                r.marker(b"hunter2"),
                r.marker(b"tok_live_123456789")
            )
        );
        assert_eq!(echo.data, format!("welcome {}", r.marker(b"qtok_abcdefgh")));
        // The handshake itself is left as it came: its record is redacted
        // on its own.
        assert!(part.handshake.uri.contains("qtok_abcdefgh"));
    }

    fn record(uri: &str) -> ExchangeRecord {
        ExchangeRecord {
            session: Arc::new(SessionInfo {
                session_no: 1,
                key_kind: SessionKeyKind::Header,
                key: "s".into(),
                client_addr: "127.0.0.1".into(),
                user_agent: None,
                started_at_us: 0,
            }),
            seq: 1,
            started_at_us: 0,
            offset: Duration::ZERO,
            method: "GET".into(),
            uri: uri.into(),
            http_version: "HTTP/1.1",
            request_headers: HeaderMap::new(),
            request_body: CapturedBody::default(),
            status: Some(200),
            response_headers: HeaderMap::new(),
            response_body: CapturedBody::default(),
            ttfb: None,
            duration: Duration::ZERO,
            failure: None,
            response_chunks: Vec::new(),
            ws_frames: Vec::new(),
            ws_frames_dropped: 0,
        }
    }

    /// Marks each record's URI, and panics on one.
    struct PanicsOn(&'static str);

    impl Redact for PanicsOn {
        fn record(&self, r: &mut ExchangeRecord) {
            assert!(r.uri != self.0, "a redaction bug");
            r.uri.push_str("?redacted");
        }
        fn part(&self, _: &mut FramePart) {}
    }

    #[tokio::test]
    async fn a_record_whose_redaction_panics_is_left_out_and_the_thread_goes_on() {
        let thread = Background::spawn_with(PanicsOn("/bad")).expect("thread");
        let batch = vec![record("/a"), record("/bad"), record("/b")];
        let out = thread.redact(batch, Vec::new()).await.expect("redacted");
        let uris: Vec<&str> = out.records.iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(uris, ["/a?redacted", "/b?redacted"]);
        assert_eq!(out.failed_records, 1);
        // The thread is still there for the next batch.
        let out = thread
            .redact(vec![record("/c")], Vec::new())
            .await
            .expect("the thread survived");
        assert_eq!(out.records[0].uri, "/c?redacted");
        assert_eq!(out.failed_records, 0);
    }
}
