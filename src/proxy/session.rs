//! Session keying: which user session a request belongs to.
//!
//! The first source that matches wins, in the configured order (default:
//! `header:x-session-id`, `bearer`, `cookie:session`, `client`). An idle gap
//! longer than the configured one starts a new session for the same key.
//! A credential handed out by a response (a login's `token` field, a
//! `Set-Cookie` of the session cookie) is bound to the session that asked
//! for it, so the requests a user makes after logging in stay in the
//! session of the login. Credentials appear in keys only as markers.
//!
//! With sampling (`record --sample`) each new session is decided in or out
//! of the sample once, by `sample`; the tracker keeps unsampled sessions
//! too (with numbers below zero, never stored), so their later requests
//! and the credentials they are handed stay out of the recording as well.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use http::header::{self, HeaderName};
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use super::sample::SampleFraction;
use crate::capture::redact::Redactor;
use crate::capture::{SessionInfo, SessionKeyKind, now_epoch_us};

/// One place a session key can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header holding a session id.
    Header(HeaderName),
    /// The credential of the `Authorization` header.
    Bearer,
    /// A named cookie.
    Cookie(String),
    /// Client IP address and User-Agent.
    Client,
}

impl FromStr for KeySource {
    type Err = String;

    /// `header:NAME`, `bearer`, `cookie:NAME` or `client`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.split_once(':') {
            Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes())
                .map(KeySource::Header)
                .map_err(|_| format!("`{name}` is not a valid header name")),
            Some(("cookie", name)) if !name.trim().is_empty() => {
                Ok(KeySource::Cookie(name.trim().to_string()))
            }
            None if s == "bearer" => Ok(KeySource::Bearer),
            None if s == "client" => Ok(KeySource::Client),
            _ => Err(format!(
                "unknown session key source `{s}`: use header:NAME, bearer, cookie:NAME or client"
            )),
        }
    }
}

/// How sessions are recognised.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Key sources, first match wins. `client` always ends the list.
    pub sources: Vec<KeySource>,
    /// A gap without requests longer than this starts a new session.
    pub idle_gap: Duration,
    /// The share of sessions recorded.
    pub sample: SampleFraction,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            sources: vec![
                KeySource::Header(HeaderName::from_static("x-session-id")),
                KeySource::Bearer,
                KeySource::Cookie("session".into()),
                KeySource::Client,
            ],
            idle_gap: Duration::from_secs(30 * 60),
            sample: SampleFraction::default(),
        }
    }
}

/// Assigns sessions and in-session sequence numbers to requests.
#[derive(Debug)]
pub struct SessionTracker {
    config: SessionConfig,
    inner: Mutex<Inner>,
    live: Gauge,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct Inner {
    by_key: HashMap<u64, i64>,
    sessions: HashMap<i64, Live>,
    /// Numbers of sampled sessions count up from 1, the run's session
    /// numbers; unsampled ones count down from -1 and are never stored.
    last_no: i64,
    last_unsampled_no: i64,
    assigned_since_sweep: u64,
}

#[derive(Debug)]
struct Live {
    info: Arc<SessionInfo>,
    last_seen: Instant,
    next_seq: i64,
}

/// Where a request that carries none of the configured keys belongs: the
/// `client` source.
#[derive(Debug, Clone, Copy)]
pub enum Fallback<'a> {
    /// A live client: its IP address (and the request's User-Agent).
    Client(IpAddr),
    /// A request read from a file that names no client (a HAR entry):
    /// the page it belongs to, or the file when it names no page (with
    /// the request's User-Agent, as a live client's).
    Page(&'a str),
}

/// The session of one request.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The session (an unsampled one has a number below zero).
    pub session: Arc<SessionInfo>,
    /// The request's position in the session, from 1.
    pub seq: i64,
    /// Whether the session is in the sample, i.e. recorded.
    pub sampled: bool,
}

/// Sweep idle sessions out of memory every this many assignments.
const SWEEP_EVERY: u64 = 4096;

impl SessionTracker {
    /// A tracker with this configuration; `live` follows the number of
    /// sessions held in memory.
    pub fn new(mut config: SessionConfig, live: Gauge) -> Self {
        if !config.sources.contains(&KeySource::Client) {
            config.sources.push(KeySource::Client);
        }
        SessionTracker {
            config,
            inner: Mutex::new(Inner::default()),
            live,
            hasher: RandomState::new(),
        }
    }

    /// The session and sequence number of a request arriving now, and
    /// whether its session is sampled.
    pub fn assign(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
        redactor: &Redactor,
        now: Instant,
    ) -> Assignment {
        self.assign_at(
            headers,
            Fallback::Client(peer),
            redactor,
            now,
            now_epoch_us(),
        )
    }

    /// [`SessionTracker::assign`] for a request that arrived at `now` on
    /// the tracker's clock and `wall_us` (µs since the Unix epoch) on the
    /// wall clock, keyed to `fallback` when it carries no configured key:
    /// an imported request as much as a live one.
    pub fn assign_at(
        &self,
        headers: &HeaderMap,
        fallback: Fallback<'_>,
        redactor: &Redactor,
        now: Instant,
        wall_us: i64,
    ) -> Assignment {
        let matched = self.match_key(headers, fallback);
        let lookup = self.lookup_hash(&matched);
        let gap = self.config.idle_gap;
        // Poisoning only follows a panic elsewhere while holding the lock;
        // the map is still consistent then, so keep using it.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.assigned_since_sweep += 1;
        if inner.assigned_since_sweep >= SWEEP_EVERY {
            inner.sweep(now, gap);
            self.live.set(inner.sessions.len() as i64);
        }
        let current = inner.by_key.get(&lookup).copied().filter(|no| {
            inner
                .sessions
                .get(no)
                .is_some_and(|s| now.duration_since(s.last_seen) <= gap)
        });
        let no = match current {
            Some(no) => no,
            None => {
                let (key_kind, key) = matched.describe(redactor);
                let no = match self.config.sample.keeps(key_kind, &key) {
                    true => {
                        inner.last_no += 1;
                        inner.last_no
                    }
                    false => {
                        inner.last_unsampled_no -= 1;
                        inner.last_unsampled_no
                    }
                };
                let info = Arc::new(SessionInfo {
                    session_no: no,
                    key_kind,
                    key,
                    client_addr: match fallback {
                        Fallback::Client(peer) => peer.to_string(),
                        Fallback::Page(_) => String::new(),
                    },
                    user_agent: headers
                        .get(header::USER_AGENT)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                    started_at_us: wall_us,
                });
                inner.sessions.insert(
                    no,
                    Live {
                        info,
                        last_seen: now,
                        next_seq: 1,
                    },
                );
                inner.by_key.insert(lookup, no);
                self.live.set(inner.sessions.len() as i64);
                no
            }
        };
        let live = inner
            .sessions
            .get_mut(&no)
            .expect("session inserted or checked present above under the same lock");
        live.last_seen = now;
        let seq = live.next_seq;
        live.next_seq += 1;
        Assignment {
            session: live.info.clone(),
            seq,
            sampled: no > 0,
        }
    }

    /// Binds credentials a response handed out (bearer tokens and cookies,
    /// as clear values) to `session_no`, so later requests presenting them
    /// continue that session.
    pub fn bind_credentials(&self, session_no: i64, bearer: &[&[u8]], cookies: &[(String, &[u8])]) {
        if bearer.is_empty() && cookies.is_empty() {
            return;
        }
        let mut hashes: Vec<u64> = bearer
            .iter()
            .map(|token| self.lookup_hash(&Matched::Bearer(token)))
            .collect();
        for (name, value) in cookies {
            if self
                .config
                .sources
                .contains(&KeySource::Cookie(name.clone()))
            {
                hashes.push(self.lookup_hash(&Matched::Cookie(name, value)));
            }
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !inner.sessions.contains_key(&session_no) {
            return;
        }
        for h in hashes {
            inner.by_key.insert(h, session_no);
        }
    }

    /// Binds what a successful answer hands out (secret fields such as a
    /// login's `token`, the session cookie) to the session that asked for
    /// it; only the first `scan` bytes of its content are read.
    pub fn bind_answer(
        &self,
        session_no: i64,
        redactor: &Redactor,
        headers: &HeaderMap,
        body: &[u8],
        scan: usize,
    ) {
        let cookies = set_cookies(headers);
        let tokens = redactor.secrets_in_head(headers, body, scan);
        let tokens: Vec<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
        self.bind_credentials(session_no, &tokens, &cookies);
    }

    /// The first configured source that this request carries.
    fn match_key<'a>(&'a self, headers: &'a HeaderMap, fallback: Fallback<'a>) -> Matched<'a> {
        for source in &self.config.sources {
            match source {
                KeySource::Header(name) => {
                    if let Some(v) = headers.get(name).filter(|v| !v.is_empty()) {
                        return Matched::Header(v.as_bytes());
                    }
                }
                KeySource::Bearer => {
                    if let Some(v) = headers.get(header::AUTHORIZATION) {
                        let credential = Redactor::credential_of(v.as_bytes());
                        if !credential.is_empty() {
                            return Matched::Bearer(credential);
                        }
                    }
                }
                KeySource::Cookie(name) => {
                    if let Some(value) = cookie_value(headers, name) {
                        return Matched::Cookie(name, value);
                    }
                }
                KeySource::Client => break,
            }
        }
        let ua = headers
            .get(header::USER_AGENT)
            .map_or(&b""[..], |v| v.as_bytes());
        match fallback {
            Fallback::Client(peer) => Matched::Client(peer, ua),
            Fallback::Page(page) => Matched::Page(page, ua),
        }
    }

    /// A keyed 64-bit hash of the matched key: lookups allocate nothing,
    /// and the clear key never sits in memory longer than the request.
    fn lookup_hash(&self, m: &Matched<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        match m {
            Matched::Header(v) => (0u8, v).hash(&mut h),
            Matched::Bearer(v) => (1u8, v).hash(&mut h),
            Matched::Cookie(name, v) => (2u8, name, v).hash(&mut h),
            Matched::Client(ip, ua) => (3u8, ip, ua).hash(&mut h),
            Matched::Page(page, ua) => (4u8, page, ua).hash(&mut h),
        }
        h.finish()
    }
}

/// A session key as found in a request, borrowed from it.
#[derive(Debug)]
enum Matched<'a> {
    Header(&'a [u8]),
    Bearer(&'a [u8]),
    Cookie(&'a str, &'a [u8]),
    Client(IpAddr, &'a [u8]),
    Page(&'a str, &'a [u8]),
}

impl Matched<'_> {
    /// The stored form of the key: credentials as markers.
    fn describe(&self, redactor: &Redactor) -> (SessionKeyKind, String) {
        match self {
            // A session header is a credential's kind of value (a
            // session id): stored as its marker.
            Matched::Header(v) => (SessionKeyKind::Header, redactor.marker(v)),
            Matched::Bearer(v) => (SessionKeyKind::Bearer, redactor.marker(v)),
            Matched::Cookie(name, v) => (
                SessionKeyKind::Cookie,
                format!("{name}={}", redactor.marker(v)),
            ),
            Matched::Client(ip, ua) => (
                SessionKeyKind::Client,
                format!("{ip}|{}", String::from_utf8_lossy(ua)),
            ),
            Matched::Page(page, ua) => (
                SessionKeyKind::Page,
                format!("{page}|{}", String::from_utf8_lossy(ua)),
            ),
        }
    }
}

impl Inner {
    fn sweep(&mut self, now: Instant, gap: Duration) {
        self.assigned_since_sweep = 0;
        self.sessions
            .retain(|_, s| now.duration_since(s.last_seen) <= gap);
        let sessions = &self.sessions;
        self.by_key.retain(|_, no| sessions.contains_key(no));
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(header::COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq] == *name.as_bytes()).then(|| &pair[eq + 1..])
        })
    })
}

/// `(name, value)` of every cookie a response sets.
pub fn set_cookies(headers: &HeaderMap) -> Vec<(String, &[u8])> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| {
            let b = v.as_bytes();
            let end = b.iter().position(|c| *c == b';').unwrap_or(b.len());
            let pair = b[..end].trim_ascii();
            let eq = pair.iter().position(|c| *c == b'=')?;
            Some((
                String::from_utf8_lossy(&pair[..eq]).into_owned(),
                &pair[eq + 1..],
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::redact::RedactionConfig;
    use http::HeaderValue;

    fn redactor() -> Redactor {
        Redactor::new([3; 32], &RedactionConfig::default()).expect("valid")
    }

    /// The session and sequence number of a sampled assignment.
    fn pair(a: Assignment) -> (Arc<SessionInfo>, i64) {
        assert!(a.sampled, "every session is sampled by default");
        (a.session, a.seq)
    }

    #[test]
    fn first_matching_source_wins_and_sequence_counts_up() {
        let t = SessionTracker::new(SessionConfig::default(), Gauge::default());
        let r = redactor();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let now = Instant::now();
        let mut h = HeaderMap::new();
        h.insert("x-session-id", HeaderValue::from_static("s1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let (a, seq_a) = pair(t.assign(&h, ip, &r, now));
        let (b, seq_b) = pair(t.assign(&h, ip, &r, now));
        assert_eq!(a.key_kind, SessionKeyKind::Header);
        assert_eq!(a.session_no, b.session_no);
        assert_eq!((seq_a, seq_b), (1, 2));
        h.remove("x-session-id");
        let (c, _) = pair(t.assign(&h, ip, &r, now));
        assert_eq!(c.key_kind, SessionKeyKind::Bearer);
        assert_eq!(c.key, r.marker(b"t"));
        assert_ne!(c.session_no, a.session_no);
    }

    #[test]
    fn idle_gap_starts_a_new_session() {
        let config = SessionConfig {
            idle_gap: Duration::from_secs(10),
            ..SessionConfig::default()
        };
        let t = SessionTracker::new(config, Gauge::default());
        let r = redactor();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        let h = HeaderMap::new();
        let (a, _) = pair(t.assign(&h, ip, &r, now));
        let (b, _) = pair(t.assign(&h, ip, &r, now + Duration::from_secs(9)));
        let (c, seq) = pair(t.assign(&h, ip, &r, now + Duration::from_secs(20)));
        assert_eq!(a.session_no, b.session_no);
        assert_ne!(b.session_no, c.session_no);
        assert_eq!(seq, 1);
    }

    #[test]
    fn a_credential_handed_out_continues_the_session_that_asked() {
        let t = SessionTracker::new(SessionConfig::default(), Gauge::default());
        let r = redactor();
        let ip: IpAddr = [10, 0, 0, 2].into();
        let now = Instant::now();
        let (login, _) = pair(t.assign(&HeaderMap::new(), ip, &r, now));
        t.bind_credentials(login.session_no, &[b"tok"], &[]);
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        let (next, seq) = pair(t.assign(&h, ip, &r, now));
        assert_eq!(next.session_no, login.session_no);
        assert_eq!(seq, 2);
    }

    #[test]
    fn a_sampled_out_session_stays_out_with_its_login_and_numbers_stay_dense() {
        let config = SessionConfig {
            sample: SampleFraction::new(0.5).expect("valid"),
            ..SessionConfig::default()
        };
        let t = SessionTracker::new(config, Gauge::default());
        let r = redactor();
        let ip: IpAddr = [10, 0, 0, 3].into();
        let now = Instant::now();
        let with_id = |id: String| {
            let mut h = HeaderMap::new();
            h.insert("x-session-id", HeaderValue::from_str(&id).expect("value"));
            h
        };
        let mut sampled_numbers = Vec::new();
        for i in 0..64 {
            let h = with_id(format!("user-{i}"));
            let first = t.assign(&h, ip, &r, now);
            let again = t.assign(&h, ip, &r, now);
            assert_eq!(first.sampled, again.sampled, "decided once per session");
            assert_eq!(first.session.session_no, again.session.session_no);
            if first.sampled {
                sampled_numbers.push(first.session.session_no);
                continue;
            }
            assert!(first.session.session_no < 0, "never a stored number");
            // A token handed to an unsampled login continues it, unsampled.
            let token = format!("tok-{i}");
            t.bind_credentials(first.session.session_no, &[token.as_bytes()], &[]);
            let mut h = HeaderMap::new();
            let bearer = format!("Bearer {token}");
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&bearer).expect("value"),
            );
            let next = t.assign(&h, ip, &r, now);
            assert!(!next.sampled);
            assert_eq!(next.session.session_no, first.session.session_no);
        }
        let n = sampled_numbers.len() as i64;
        assert!((16..=48).contains(&n), "{n} of 64 sampled at 0.5");
        assert_eq!(sampled_numbers, (1..=n).collect::<Vec<_>>());
    }

    #[test]
    fn key_sources_parse_and_reject_unknown_ones() {
        assert_eq!("bearer".parse::<KeySource>(), Ok(KeySource::Bearer));
        assert_eq!(
            "cookie:sid".parse::<KeySource>(),
            Ok(KeySource::Cookie("sid".into()))
        );
        assert!("header:X-User".parse::<KeySource>().is_ok());
        assert!("ip".parse::<KeySource>().is_err());
    }
}
