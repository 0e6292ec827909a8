//! Redaction of a whole exchange record, as the capture writer applies it
//! before a batch is written: off the client's path (docs/recording.md),
//! on a thread of its own at a lower scheduling priority.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Redactor, scannable};
use crate::capture::ExchangeRecord;

/// How much lower the redaction thread's priority is than the proxy's
/// (a nice value, Linux): under CPU contention forwarding goes first,
/// and redaction takes what is left (about a tenth of a busy core).
const NICE: i32 = 10;

type Job = (Vec<ExchangeRecord>, oneshot::Sender<Vec<ExchangeRecord>>);

/// A thread that redacts batches of records, one at a time, at a lower
/// priority than the threads that forward traffic. It ends when the
/// handle is dropped.
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
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tapedeck-redact".into())
            .spawn(move || {
                lower_priority();
                for (mut records, done) in rx {
                    for r in &mut records {
                        redactor.redact_record(r);
                    }
                    let _ = done.send(records);
                }
            })?;
        Ok(Background { jobs })
    }

    /// The records, redacted; `None` if the thread is gone (it panicked):
    /// nothing unredacted may be stored then.
    pub async fn redact(&self, records: Vec<ExchangeRecord>) -> Option<Vec<ExchangeRecord>> {
        let (done, redacted) = oneshot::channel();
        self.jobs.send((records, done)).ok()?;
        redacted.await.ok()
    }
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
        let mut secrets = self.redact_headers(&mut r.request_headers);
        if let Some(redacted) = self.redact_uri(&r.uri, &mut secrets) {
            r.uri = redacted;
        }
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
}
