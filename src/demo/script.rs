//! The scripted demo: a population of chat users driven through the
//! recording proxy in front of the demo backend.
//!
//! Each user logs in (the user in a nested `identity.login_id`), opens a
//! conversation, sends messages with think time (the first with a
//! `client_msg_id` UUID of its own, then POSTs with an `Idempotency-Key`,
//! one client retry of the same key, PUTs with a client transaction id),
//! opens a WebSocket to join the conversation, say it is typing and send a
//! message there (the server acknowledges it with the message's id), marks
//! the conversation read up to that id, pages the history with the
//! server's cursors, edits its first message (addressed by the client's id,
//! `If-Match` the ETag the send answered with), searches the conversation
//! with its id inside a filter expression, and streams a bot reply to the
//! end. Every request's status, and every socket answer,
//! is checked against what the script expects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::client::chat_socket;
pub use super::client::{ChatClient, Reply};

/// How many users, and how they pace themselves.
#[derive(Debug, Clone)]
pub struct Population {
    /// Chat users, one session each.
    pub users: usize,
    /// Messages each user sends.
    pub messages_per_user: usize,
    /// Users start spread over this window.
    pub ramp: Duration,
    /// Think time between a user's actions is drawn from this range.
    pub think: (Duration, Duration),
    /// Seed for think times and message texts.
    pub seed: u64,
}

impl Default for Population {
    fn default() -> Self {
        Population {
            users: 20,
            messages_per_user: 6,
            ramp: Duration::from_secs(2),
            think: (Duration::from_millis(300), Duration::from_millis(900)),
            seed: 7,
        }
    }
}

impl Population {
    /// The scripted users' accounts, user name → password: what a backend
    /// with these `accounts` lets log in, and what a credentials file for
    /// replaying their capture holds (the capture keeps the passwords
    /// redacted).
    pub fn accounts(&self) -> HashMap<String, String> {
        (0..self.users)
            .map(|user| (user_name(user), self.password(user)))
            .collect()
    }

    fn password(&self, user: usize) -> String {
        let mut rng = StdRng::seed_from_u64(self.seed ^ ((user as u64) << 32) ^ 0x7077);
        format!("pw-{user:02}-{:08x}", rng.random::<u32>())
    }
}

fn user_name(user: usize) -> String {
    format!("user-{user:02}")
}

/// A scripted request that got another status than expected.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// User number.
    pub user: usize,
    /// `METHOD path`.
    pub request: String,
    /// What the script expected.
    pub expected: u16,
    /// What came back (`None`: no response).
    pub got: Option<u16>,
    /// Response body or transport error.
    pub detail: String,
}

/// What the script did.
#[derive(Debug, Clone, Default)]
pub struct ScriptOutcome {
    /// Requests sent.
    pub requests: u64,
    /// Requests answered with the expected status.
    pub as_expected: u64,
    /// The others.
    pub mismatches: Vec<Mismatch>,
}

/// Progress events, one per finished request.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// A request finished.
    Request,
    /// A user finished the script.
    UserDone,
}

struct Run<'a> {
    user: usize,
    client: &'a ChatClient,
    outcome: ScriptOutcome,
    progress: &'a mpsc::UnboundedSender<Progress>,
}

impl Run<'_> {
    /// Sends a request, checks its status, returns the reply if it matched.
    async fn expect(
        &mut self,
        expected: StatusCode,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Option<Reply> {
        let label = format!("{method} {path}");
        let result = self.client.call(method, path, token, headers, body).await;
        let got = result.as_ref().ok().map(|r| r.status.as_u16());
        let detail = || match &result {
            Ok(r) => String::from_utf8_lossy(&r.body).chars().take(200).collect(),
            Err(e) => e.clone(),
        };
        if self.counted(&label, expected.as_u16(), got, detail) {
            result.ok()
        } else {
            None
        }
    }

    /// Counts a finished request (`got`: its status, `None` when it got no
    /// answer); a mismatch unless it got `expected`. Returns whether it did.
    fn counted(
        &mut self,
        label: &str,
        expected: u16,
        got: Option<u16>,
        detail: impl FnOnce() -> String,
    ) -> bool {
        self.outcome.requests += 1;
        let _ = self.progress.send(Progress::Request);
        if got == Some(expected) {
            self.outcome.as_expected += 1;
            return true;
        }
        self.outcome.mismatches.push(Mismatch {
            user: self.user,
            request: label.to_string(),
            expected,
            got,
            detail: detail(),
        });
        false
    }
}

/// A random (version 4) UUID, as a client makes one.
fn uuid_v4(rng: &mut StdRng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A query value percent-encoded as a URL builder does it (unreserved
/// characters kept).
fn query_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn think(rng: &mut StdRng, p: &Population) -> Duration {
    let (lo, hi) = p.think;
    if hi <= lo {
        return lo;
    }
    rng.random_range(lo..hi)
}

async fn one_user(
    user: usize,
    base: String,
    population: Arc<Population>,
    progress: mpsc::UnboundedSender<Progress>,
) -> ScriptOutcome {
    let mut rng =
        StdRng::seed_from_u64(population.seed.wrapping_mul(1000).wrapping_add(user as u64));
    let client = ChatClient::new(
        &base,
        &format!(
            "tapedeck-demo/{} (user {user:02})",
            env!("CARGO_PKG_VERSION")
        ),
    );
    let mut run = Run {
        user,
        client: &client,
        outcome: ScriptOutcome::default(),
        progress: &progress,
    };
    let ramp = population.ramp.as_millis() as u64;
    let start_at = if population.users > 1 {
        Duration::from_millis(ramp * user as u64 / (population.users as u64 - 1).max(1))
    } else {
        Duration::ZERO
    };
    tokio::time::sleep(start_at).await;

    let name = user_name(user);
    // The user goes in a nested identity, as identity providers take it;
    // not in a field named `user`.
    let login = json!({
        "identity": { "login_id": name },
        "password": population.password(user),
    });
    let Some(reply) = run
        .expect(
            StatusCode::OK,
            Method::POST,
            "/api/login",
            None,
            &[],
            Some(login),
        )
        .await
    else {
        return run.outcome;
    };
    let Some(token) = reply.json()["token"].as_str().map(str::to_string) else {
        return run.outcome;
    };
    let token = Some(token.as_str());
    let title = json!({ "title": format!("{name}'s questions") });
    let Some(reply) = run
        .expect(
            StatusCode::CREATED,
            Method::POST,
            "/api/conversations",
            token,
            &[],
            Some(title),
        )
        .await
    else {
        return run.outcome;
    };
    let Some(conversation) = reply.json()["id"].as_str().map(str::to_string) else {
        return run.outcome;
    };
    let messages_path = format!("/api/conversations/{conversation}/messages");
    // The first message goes with an id the client chose (a UUID, as chat
    // apps make one to show the message before the server answers); its
    // edit later names it, with the ETag the send answered with.
    let mut own: Option<(String, String)> = None;
    for k in 0..population.messages_per_user {
        tokio::time::sleep(think(&mut rng, &population)).await;
        let text = json!({ "text": format!("message {k} from {name}") });
        if k == 0 {
            let client_msg_id = uuid_v4(&mut rng);
            let body = json!({ "text": format!("message {k} from {name}"), "client_msg_id": client_msg_id });
            let sent = run
                .expect(
                    StatusCode::CREATED,
                    Method::POST,
                    &messages_path,
                    token,
                    &[],
                    Some(body),
                )
                .await;
            own = sent
                .as_ref()
                .and_then(Reply::etag)
                .map(|etag| (client_msg_id, etag.to_string()));
        } else if k % 2 == 0 {
            let key = format!("idem-{:016x}", rng.random::<u64>());
            let headers = [("idempotency-key", key.as_str())];
            run.expect(
                StatusCode::CREATED,
                Method::POST,
                &messages_path,
                token,
                &headers,
                Some(text.clone()),
            )
            .await;
            if k == 2 {
                // A client retry after a lost response: same key, same message.
                run.expect(
                    StatusCode::CREATED,
                    Method::POST,
                    &messages_path,
                    token,
                    &headers,
                    Some(text),
                )
                .await;
            }
        } else {
            let txn = format!("txn{:012x}", rng.random::<u64>() >> 16);
            let path = format!("{messages_path}/{txn}");
            run.expect(StatusCode::OK, Method::PUT, &path, token, &[], Some(text))
                .await;
        }
    }
    tokio::time::sleep(think(&mut rng, &population)).await;
    let client_id = format!("cl_{:016x}", rng.random::<u64>());
    let said = format!("typed live by {name}");
    let label = "GET /api/ws";
    let acked = match chat_socket(&base, &client, token, &conversation, &client_id, &said).await {
        Ok(id) => run
            .counted(label, 101, Some(101), String::new)
            .then_some(id),
        Err(e) => {
            run.counted(label, 101, None, || e);
            None
        }
    };
    if let Some(id) = acked {
        tokio::time::sleep(think(&mut rng, &population)).await;
        let read = json!({ "message_id": id });
        let path = format!("/api/conversations/{conversation}/read");
        run.expect(StatusCode::OK, Method::POST, &path, token, &[], Some(read))
            .await;
    }
    tokio::time::sleep(think(&mut rng, &population)).await;
    let mut page = format!("{messages_path}?limit=4");
    while let Some(reply) = run
        .expect(StatusCode::OK, Method::GET, &page, token, &[], None)
        .await
    {
        match reply.json()["next_cursor"].as_str() {
            Some(cursor) => page = format!("{messages_path}?limit=4&cursor={cursor}"),
            None => break,
        }
    }
    if let Some((client_msg_id, etag)) = own {
        // Edit the first message: addressed by the client's own id, on
        // the condition that it is still the version the send made.
        tokio::time::sleep(think(&mut rng, &population)).await;
        let path = format!("{messages_path}/{client_msg_id}");
        let body = json!({ "text": format!("message 0 from {name}, edited") });
        let headers = [("if-match", etag.as_str())];
        run.expect(
            StatusCode::OK,
            Method::PATCH,
            &path,
            token,
            &headers,
            Some(body),
        )
        .await;
    }
    // Then look the conversation up, as the client refreshes its view
    // (no think time): its id inside a filter expression, the hits in
    // the search's own order.
    let filter = format!("(conversation='{conversation}')");
    let search = format!("/api/messages?filter={}&limit=50", query_encode(&filter));
    run.expect(StatusCode::OK, Method::GET, &search, token, &[], None)
        .await;
    tokio::time::sleep(think(&mut rng, &population)).await;
    let reply_path = format!("/api/conversations/{conversation}/reply");
    run.expect(StatusCode::OK, Method::GET, &reply_path, token, &[], None)
        .await;
    let _ = progress.send(Progress::UserDone);
    run.outcome
}

/// Drives the population against `base` (the proxy) and reports what
/// happened; `progress` receives an event per request.
pub async fn drive(
    base: SocketAddr,
    population: Population,
    progress: mpsc::UnboundedSender<Progress>,
) -> ScriptOutcome {
    let population = Arc::new(population);
    let base = format!("http://{base}");
    let tasks: Vec<_> = (0..population.users)
        .map(|user| {
            tokio::spawn(one_user(
                user,
                base.clone(),
                population.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let mut total = ScriptOutcome::default();
    for task in tasks {
        match task.await {
            Ok(o) => {
                total.requests += o.requests;
                total.as_expected += o.as_expected;
                total.mismatches.extend(o.mismatches);
            }
            Err(e) => total.mismatches.push(Mismatch {
                user: usize::MAX,
                request: "user task".into(),
                expected: 0,
                got: None,
                detail: e.to_string(),
            }),
        }
    }
    total
}

/// Where `tapedeck demo` writes when no `--out` is given:
/// `tapedeck-demo-<UTC timestamp>` under the working directory.
pub fn default_out_dir() -> PathBuf {
    PathBuf::from(format!("tapedeck-demo-{}", crate::capture::utc_stamp()))
}
