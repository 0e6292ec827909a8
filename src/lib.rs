//! tapedeck records real traffic to a chat backend and replays it at scale.
//!
//! The recording pipeline: a client talks to [`proxy`], which forwards every
//! request to the one configured [`upstream`], streams both bodies through,
//! and hands each finished exchange, keyed into a user session, to the
//! capture sink. One writer task ([`capture::writer`]) batches the exchanges
//! into the store ([`capture::store`], SQLite or PostgreSQL). The tap never
//! waits for storage: a full queue or a failing store drops and counts
//! records, never requests.
//!
//! ```text
//! client ──> proxy ──────────────────────> upstream
//!              │ tap (byte-bounded queue; never blocks a request)
//!              v
//!         capture::writer ──> capture::store (WAL, batched multi-row INSERTs)
//! ```
//!
//! The replay pipeline: [`replay`] reads a run's sessions back from the
//! store, plans worlds × sessions on absolute deadlines ([`replay::plan`]),
//! and its engine sends each request at its due time, made ready by
//! [`replay::correlate`] (live ids, tokens, cursors, nonces, credentials)
//! and learned from when its answer comes. Every sent or skipped request
//! becomes a [`report::outcome`] event; [`report::collect`] turns them into
//! HDR statistics and the versioned report, which [`report::render`] shows
//! and [`report::compare`] compares. A [`profile`] gives the stages, SLOs,
//! safety limits and rules.
//!
//! ```text
//! capture::store ──> replay::plan ──> replay::engine ──> replay::client ──> target
//!                                       │   ↕ correlate (prepare / learn, per world)
//!                                       v outcome events
//!                                report::collect ──> report JSON ──> render / compare
//! ```
//!
//! Dependencies point one way: `proxy` and `replay` use `capture` and the
//! leaves (`upstream`, which uses `tls`; `codec`, `route`, `time`,
//! `shutdown`; `admin`, the `--admin` HTTP server of `record` and
//! `replay`); `replay` also uses `profile` and `report`; `report` uses
//! `capture`, `profile` and the leaves, never `replay`. [`demo`], above
//! them all, holds the built-in chat backend every test and benchmark runs
//! against, and the scripted population `tapedeck demo` drives through the
//! proxy and replays.

pub mod admin;
pub mod capture;
pub mod codec;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod profile;
pub mod proxy;
pub mod replay;
pub mod report;
pub mod route;
pub mod shutdown;
pub mod time;
pub mod tls;
pub mod upstream;
