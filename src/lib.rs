//! tapedeck records real traffic to a chat backend and replays it at scale.
//!
//! The recording pipeline: a client talks to [`proxy`], which forwards every
//! request to the one configured upstream, streams both bodies through, and
//! hands each finished exchange, keyed into a user session, to the capture
//! sink. One writer task ([`capture::writer`]) batches the exchanges into the
//! SQLite store ([`capture::store`]). The tap never waits for storage: a full
//! queue or a failing store drops and counts records, never requests.
//!
//! ```text
//! client ──> proxy ──────────────────────> upstream
//!              │ tap (byte-bounded queue; never blocks a request)
//!              v
//!         capture writer ──> SQLite (WAL, batched multi-row INSERTs)
//! ```
//!
//! [`demo`] holds the built-in chat backend every test and benchmark runs
//! against, and the scripted population `tapedeck demo` drives through the
//! proxy.

pub mod capture;
pub mod codec;
pub mod demo;
pub mod profile;
pub mod proxy;
pub mod replay;
pub mod report;
pub mod route;
pub mod shutdown;
pub mod time;
pub mod tls;
pub mod upstream;
