//! What every handler of the demo backend shares: its configuration, the
//! in-memory state (tokens, users, conversations, cursors, idempotency
//! records, socket rooms), the counters `GET /api/stats` reports, and the
//! worker slots that model its capacity.
//!
//! Handlers (the sibling files) read and change the state through
//! [`Backend::lock`], never across an `.await`. This file knows nothing of
//! HTTP: requests come in and responses go out in the handlers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// Capacity model and streaming pace.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Worker slots (concurrent requests in service).
    pub workers: usize,
    /// Time each request holds a slot before it is answered.
    pub service_time: Duration,
    /// Longest wait for a slot before answering 503.
    pub queue_timeout: Duration,
    /// Requests per second allowed per token (429 beyond); `None`: no limit.
    pub rate_limit: Option<f64>,
    /// Tokens in a streamed bot reply.
    pub reply_tokens: usize,
    /// Pause between two streamed tokens.
    pub token_interval: Duration,
    /// Registered accounts, user → password: a login must name one of them
    /// with its password (401 otherwise). `None`: open sign-up, any
    /// non-empty user and password log in.
    pub accounts: Option<Arc<HashMap<String, String>>>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            workers: 64,
            service_time: Duration::from_millis(2),
            queue_timeout: Duration::from_secs(2),
            rate_limit: None,
            reply_tokens: 12,
            token_interval: Duration::from_millis(15),
            accounts: None,
        }
    }
}

/// What the backend has done, as `GET /api/stats` reports it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// Distinct users who logged in.
    pub users: u64,
    /// Successful logins.
    pub logins: u64,
    /// Conversations created.
    pub conversations: u64,
    /// Messages stored.
    pub messages: u64,
    /// Messages stored, by how they arrived.
    #[serde(default)]
    pub messages_via: MessagesVia,
    /// Sends answered from the idempotency record instead of stored again.
    pub duplicate_sends_suppressed: u64,
    /// Requests answered (all statuses, stats calls excluded).
    pub requests: u64,
    /// Requests refused with 503 after waiting for a worker.
    pub overloaded: u64,
    /// Requests refused with 429 by the rate limit.
    pub rate_limited: u64,
    /// Bot replies streamed to the end.
    pub replies_streamed: u64,
    /// Conversations holding at least one message.
    #[serde(default)]
    pub conversations_with_messages: u64,
    /// WebSocket connections accepted.
    #[serde(default)]
    pub sockets: u64,
    /// Frames the sockets' clients sent (joins, typing, sends).
    #[serde(default)]
    pub socket_frames: u64,
    /// Frames pushed to other members of a conversation (new messages,
    /// typing).
    #[serde(default)]
    pub pushes: u64,
    /// Read marks set (`POST …/read` naming a message of the conversation).
    #[serde(default)]
    pub reads: u64,
    /// Messages edited (`PATCH` with the message's current ETag in
    /// `If-Match`), always by their author.
    #[serde(default)]
    pub edits: u64,
    /// Edits refused with 412: `If-Match` named an older version.
    #[serde(default)]
    pub edit_conflicts: u64,
    /// Edits refused with 403: the editor did not write the message.
    #[serde(default)]
    pub edits_refused: u64,
    /// Sends refused with 409: the sender had already used that
    /// `client_msg_id`.
    #[serde(default)]
    pub duplicate_client_ids: u64,
    /// Filter queries answered (`GET /api/messages?filter=…`).
    #[serde(default)]
    pub searches: u64,
    /// What each user did, by user name.
    #[serde(default)]
    pub per_user: BTreeMap<String, UserStats>,
}

/// Messages stored, by how they arrived (`messages_via` in
/// `GET /api/stats`): each counts stored messages, not the sends an
/// idempotency record answered.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct MessagesVia {
    /// `POST /api/conversations/{id}/messages`.
    #[serde(default)]
    pub post: u64,
    /// `PUT /api/conversations/{id}/messages/{txn}`.
    #[serde(default)]
    pub put: u64,
    /// A WebSocket `send`.
    #[serde(default)]
    pub socket: u64,
}

/// How a message reached [`store_message`]; a socket's sender is not
/// pushed its own message.
pub(super) enum Via {
    Post,
    Put,
    Socket(u64),
}

/// What one user did, as `GET /api/stats` reports it under `per_user`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct UserStats {
    /// Successful logins.
    #[serde(default)]
    pub logins: u64,
    /// Conversations created.
    #[serde(default)]
    pub conversations: u64,
    /// Messages stored with this user as their author.
    #[serde(default)]
    pub messages: u64,
    /// Edits of this user's own messages.
    #[serde(default)]
    pub edits: u64,
}

/// A stored message, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Message {
    pub(super) id: String,
    pub(super) author: String,
    pub(super) text: String,
    pub(super) created_at_ms: u64,
    /// The id its client chose for it, if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) client_msg_id: Option<String>,
    pub(super) edited: bool,
    /// The current version's validator (quoted), sent as `ETag`; a new one
    /// per edit.
    #[serde(skip)]
    pub(super) etag: String,
    /// 1 when sent, one more per edit.
    #[serde(skip)]
    pub(super) version: u32,
}

/// A conversation and its messages, oldest first.
#[derive(Debug)]
pub(super) struct Conversation {
    pub(super) title: String,
    pub(super) created_by: String,
    pub(super) messages: Vec<Message>,
}

/// Everything the backend remembers, behind one lock.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) tokens: HashMap<String, String>,
    pub(super) users: HashSet<String>,
    pub(super) conversations: HashMap<String, Conversation>,
    /// cursor -> (conversation, offset)
    pub(super) cursors: HashMap<String, (String, usize)>,
    /// (user, Idempotency-Key) -> message
    pub(super) idempotency: HashMap<(String, String), Message>,
    /// (user, txn) -> message id
    pub(super) transactions: HashMap<(String, String), String>,
    /// (sender, client_msg_id) -> message id: a client id is the sender's
    /// once, in whatever conversation.
    pub(super) client_ids: HashMap<(String, String), String>,
    pub(super) buckets: HashMap<String, (f64, Instant)>,
    /// conversation -> the sockets that joined it (socket id, push queue)
    pub(super) rooms: HashMap<String, Vec<(u64, mpsc::Sender<String>)>>,
    pub(super) next_socket: u64,
    pub(super) stats: Stats,
}

impl State {
    /// The counters of `user`, made on first use.
    pub(super) fn user(&mut self, user: &str) -> &mut UserStats {
        self.stats.per_user.entry(user.to_string()).or_default()
    }
}

/// The backend every handler works on: configuration, state, worker slots.
pub(super) struct Backend {
    pub(super) config: BackendConfig,
    workers: Arc<Semaphore>,
    state: Mutex<State>,
    started: Instant,
    /// Orders filter query answers: the same order on this backend, another
    /// on the next one, as a search index's ties come back.
    pub(super) search_seed: u64,
    /// Closes the sockets (1001) when the backend stops.
    pub(super) shutdown: Shutdown,
}

impl Backend {
    /// A backend with no users, conversations or sockets yet.
    pub(super) fn new(config: BackendConfig, shutdown: Shutdown) -> Backend {
        Backend {
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
            config,
            state: Mutex::new(State::default()),
            started: Instant::now(),
            search_seed: rand::rng().random(),
            shutdown,
        }
    }

    /// The state; held briefly, never across an `.await`.
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the maps stay
        // usable, so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker slot, held for the service time before it is handed back;
    /// `None` (counted as overloaded) past the queue timeout.
    pub(super) async fn worker(&self) -> Option<OwnedSemaphorePermit> {
        let acquire = self.workers.clone().acquire_owned();
        match tokio::time::timeout(self.config.queue_timeout, acquire).await {
            Ok(Ok(permit)) => {
                tokio::time::sleep(self.config.service_time).await;
                Some(permit)
            }
            _ => {
                self.lock().stats.overloaded += 1;
                None
            }
        }
    }

    /// The counters, as `GET /api/stats` reports them.
    pub(super) fn stats(&self) -> Stats {
        let st = self.lock();
        let mut stats = st.stats.clone();
        stats.conversations_with_messages = st
            .conversations
            .values()
            .filter(|c| !c.messages.is_empty())
            .count() as u64;
        stats
    }

    /// A new message by `user`, with a fresh id and the time since start.
    pub(super) fn new_message(&self, user: &str, text: &str) -> Message {
        Message {
            id: random_id("m_", 16),
            author: user.to_string(),
            text: text.to_string(),
            created_at_ms: self.started.elapsed().as_millis() as u64,
            client_msg_id: None,
            edited: false,
            etag: new_etag(1),
            version: 1,
        }
    }
}

/// `prefix` and `len` random alphanumerics: the backend's opaque ids,
/// tokens and cursors.
pub(super) fn random_id(prefix: &str, len: usize) -> String {
    let tail: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

/// A quoted validator for version `version` of a message:
/// `"r1-8f3kQ2m9qZ"`, random so that no other run can guess it.
pub(super) fn new_etag(version: u32) -> String {
    format!("\"{}\"", random_id(&format!("r{version}-"), 10))
}

/// Stores a message and pushes it to the conversation's sockets (but the
/// sender's).
pub(super) fn store_message(st: &mut State, conversation: &str, message: Message, via: Via) {
    let event = json!({ "type": "message", "conversation": conversation, "message": message });
    st.user(&message.author).messages += 1;
    let from = match via {
        Via::Post => {
            st.stats.messages_via.post += 1;
            None
        }
        Via::Put => {
            st.stats.messages_via.put += 1;
            None
        }
        Via::Socket(socket) => {
            st.stats.messages_via.socket += 1;
            Some(socket)
        }
    };
    if let Some(c) = st.conversations.get_mut(conversation) {
        c.messages.push(message);
    }
    st.stats.messages += 1;
    push_to(st, conversation, from, &event);
}

/// Queues `event` for every socket in the conversation but `except`;
/// returns how many were told.
pub(super) fn push_to(
    st: &mut State,
    conversation: &str,
    except: Option<u64>,
    event: &Value,
) -> usize {
    let Some(members) = st.rooms.get(conversation) else {
        return 0;
    };
    let text = event.to_string();
    let told = members
        .iter()
        .filter(|(socket, _)| Some(*socket) != except)
        .filter(|(_, queue)| queue.try_send(text.clone()).is_ok())
        .count();
    st.stats.pushes += told as u64;
    told
}
