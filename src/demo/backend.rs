//! The demo chat backend: a small but honest chat API.
//!
//! It behaves like the backends tapedeck users run: random login tokens,
//! server-made opaque ids, opaque pagination cursors bound to their
//! conversation, idempotent sends (an `Idempotency-Key` header on POST, a
//! client transaction id in the path of a PUT), a Server-Sent-Events bot
//! reply streamed token by token, a WebSocket (`/api/ws`: join a
//! conversation, get its new messages pushed, send typing events and
//! messages), and a capacity limit: `workers` slots,
//! each request (and each socket frame) holding one for `service_time`
//! (plus streaming time), a 503
//! after `queue_timeout` in the queue, an optional per-token rate limit
//! (429), and optionally a fixed set of accounts whose passwords a login
//! must give. JSON responses are gzip-encoded for clients that accept it
//! (as the web server in front of a real backend does), and encoded
//! request bodies are read. State lives in memory; `GET /api/stats` tells tests what really
//! happened. Every input error is a 4xx; nothing a client sends can stop it.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::codec::Coding;
use crate::shutdown::Shutdown;

/// Largest request body the backend reads.
const MAX_BODY: usize = 1024 * 1024;

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
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Debug, Clone, Serialize)]
struct Message {
    id: String,
    author: String,
    text: String,
    created_at_ms: u64,
}

#[derive(Debug)]
struct Conversation {
    title: String,
    created_by: String,
    messages: Vec<Message>,
}

#[derive(Debug, Default)]
struct State {
    tokens: HashMap<String, String>,
    users: HashSet<String>,
    conversations: HashMap<String, Conversation>,
    /// cursor -> (conversation, offset)
    cursors: HashMap<String, (String, usize)>,
    /// (user, Idempotency-Key) -> message
    idempotency: HashMap<(String, String), Message>,
    /// (user, txn) -> message id
    transactions: HashMap<(String, String), String>,
    buckets: HashMap<String, (f64, Instant)>,
    /// conversation -> the sockets that joined it (socket id, push queue)
    rooms: HashMap<String, Vec<(u64, mpsc::Sender<String>)>>,
    next_socket: u64,
    stats: Stats,
}

struct Backend {
    config: BackendConfig,
    workers: Arc<Semaphore>,
    state: Mutex<State>,
    started: Instant,
    /// Closes the sockets (1001) when the backend stops.
    shutdown: Shutdown,
}

/// A running demo backend.
#[derive(Debug)]
pub struct DemoBackend {
    addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

impl DemoBackend {
    /// Serves the demo API on `listener` until `shutdown` fires or
    /// [`DemoBackend::stop`] is called.
    pub fn start(
        listener: TcpListener,
        config: BackendConfig,
        shutdown: Shutdown,
    ) -> std::io::Result<DemoBackend> {
        let addr = listener.local_addr()?;
        let backend = Arc::new(Backend {
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
            config,
            state: Mutex::new(State::default()),
            started: Instant::now(),
            shutdown: shutdown.clone(),
        });
        let task = tokio::spawn(serve(listener, backend, shutdown.clone()));
        Ok(DemoBackend {
            addr,
            shutdown,
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and waits for open requests to finish.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.task.await;
    }

    /// Waits until the backend has stopped.
    pub async fn finished(self) {
        let _ = self.task.await;
    }
}

async fn serve(listener: TcpListener, backend: Arc<Backend>, shutdown: Shutdown) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "demo backend accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let backend = backend.clone();
        let service = hyper::service::service_fn(move |req| {
            let backend = backend.clone();
            async move { Ok::<_, Infallible>(backend.handle(req).await) }
        });
        let conn = graceful.watch(
            builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

fn random_id(prefix: &str, len: usize) -> String {
    let tail: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

impl Backend {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the maps stay
        // usable, so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if accepts_gzip(req.headers()) {
            gzipped(self.answer(req).await).await
        } else {
            self.answer(req).await
        }
    }

    async fn answer(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if path == "/api/stats" && req.method() == Method::GET {
            let st = self.lock();
            let mut stats = st.stats.clone();
            stats.conversations_with_messages = st
                .conversations
                .values()
                .filter(|c| !c.messages.is_empty())
                .count() as u64;
            drop(st);
            return json_response(StatusCode::OK, &json!(stats));
        }
        let Some(permit) = self.worker().await else {
            self.lock().stats.requests += 1;
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded: no worker free within the queue timeout",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        };
        let resp = self.clone().route(req, permit).await;
        self.lock().stats.requests += 1;
        resp
    }

    /// A worker slot, held for the service time before it is handed back;
    /// `None` (counted as overloaded) past the queue timeout.
    async fn worker(&self) -> Option<OwnedSemaphorePermit> {
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

    async fn route(
        self: Arc<Self>,
        req: Request<Incoming>,
        permit: OwnedSemaphorePermit,
    ) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segments.first() != Some(&"api") {
            return error(StatusCode::NOT_FOUND, "no such route");
        }
        if segments.get(1..) == Some(&["login"][..]) {
            return match method {
                Method::POST => self.login(req).await,
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "use POST /api/login"),
            };
        }
        let user = match self.authenticate(&req) {
            Ok(user) => user,
            Err(resp) => return *resp,
        };
        match (&method, &segments[1..]) {
            (&Method::POST, ["conversations"]) => self.create_conversation(req, &user).await,
            (&Method::POST, ["conversations", id, "messages"]) => {
                let id = id.to_string();
                self.post_message(req, &user, &id).await
            }
            (&Method::PUT, ["conversations", id, "messages", txn]) => {
                let (id, txn) = (id.to_string(), txn.to_string());
                self.put_message(req, &user, &id, &txn).await
            }
            (&Method::GET, ["conversations", id, "messages"]) => self.page(id, &query),
            (&Method::GET, ["conversations", id, "reply"]) => self.reply(id, permit),
            (&Method::POST, ["conversations", id, "read"]) => {
                let id = id.to_string();
                self.mark_read(req, &id).await
            }
            (&Method::GET, ["ws"]) => {
                drop(permit);
                self.clone().websocket(req, user)
            }
            _ => error(StatusCode::NOT_FOUND, "no such route"),
        }
    }

    fn authenticate(&self, req: &Request<Incoming>) -> Result<String, Box<Response<Body>>> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let mut st = self.lock();
        let Some(user) = token.and_then(|t| st.tokens.get(t).cloned()) else {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "missing or unknown bearer token",
            )));
        };
        if let (Some(rate), Some(token)) = (self.config.rate_limit, token) {
            let now = Instant::now();
            let (tokens, last) = st
                .buckets
                .entry(token.to_string())
                .or_insert((rate.max(1.0), now));
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate.max(1.0));
            *last = now;
            let available = *tokens;
            if available >= 1.0 {
                *tokens -= 1.0;
            } else {
                st.stats.rate_limited += 1;
                let wait = ((1.0 - available) / rate).ceil().max(1.0) as u64;
                let mut resp = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate limit exceeded for this token",
                );
                if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return Err(Box::new(resp));
            }
        }
        Ok(user)
    }

    async fn login(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match read_json(req).await {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
        let (Some(user), Some(password)) = (
            body.get("user").and_then(Value::as_str),
            body.get("password").and_then(Value::as_str),
        ) else {
            return error(
                StatusCode::BAD_REQUEST,
                "expected {\"user\": string, \"password\": string}",
            );
        };
        if user.is_empty() || password.is_empty() {
            return error(StatusCode::UNAUTHORIZED, "empty user or password");
        }
        if let Some(accounts) = &self.config.accounts {
            match accounts.get(user) {
                None => return error(StatusCode::UNAUTHORIZED, "no such user"),
                Some(known) if known != password => {
                    return error(StatusCode::UNAUTHORIZED, "wrong password");
                }
                Some(_) => {}
            }
        }
        let token = random_id("tok_", 32);
        let mut st = self.lock();
        st.tokens.insert(token.clone(), user.to_string());
        if st.users.insert(user.to_string()) {
            st.stats.users += 1;
        }
        st.stats.logins += 1;
        json_response(StatusCode::OK, &json!({ "token": token, "user": user }))
    }

    async fn create_conversation(&self, req: Request<Incoming>, user: &str) -> Response<Body> {
        let body = match read_json_or_empty(req).await {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
        let title = body
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("untitled")
            .to_string();
        let id = random_id("c_", 12);
        let mut st = self.lock();
        st.conversations.insert(
            id.clone(),
            Conversation {
                title: title.clone(),
                created_by: user.to_string(),
                messages: Vec::new(),
            },
        );
        st.stats.conversations += 1;
        json_response(
            StatusCode::CREATED,
            &json!({ "id": id, "title": title, "created_by": user }),
        )
    }

    fn new_message(&self, user: &str, text: &str) -> Message {
        Message {
            id: random_id("m_", 16),
            author: user.to_string(),
            text: text.to_string(),
            created_at_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    async fn post_message(
        &self,
        req: Request<Incoming>,
        user: &str,
        conversation: &str,
    ) -> Response<Body> {
        let key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = match read_text(req).await {
            Ok(t) => t,
            Err(resp) => return *resp,
        };
        let mut st = self.lock();
        if !st.conversations.contains_key(conversation) {
            return error(StatusCode::NOT_FOUND, "no such conversation");
        }
        if let Some(key) = &key {
            let seen = st
                .idempotency
                .get(&(user.to_string(), key.clone()))
                .cloned();
            if let Some(message) = seen {
                st.stats.duplicate_sends_suppressed += 1;
                return json_response(StatusCode::CREATED, &json!({ "message": message }));
            }
        }
        let message = self.new_message(user, &text);
        if let Some(key) = key {
            st.idempotency
                .insert((user.to_string(), key), message.clone());
        }
        store_message(&mut st, conversation, message.clone(), None);
        json_response(StatusCode::CREATED, &json!({ "message": message }))
    }

    async fn put_message(
        &self,
        req: Request<Incoming>,
        user: &str,
        conversation: &str,
        txn: &str,
    ) -> Response<Body> {
        let text = match read_text(req).await {
            Ok(t) => t,
            Err(resp) => return *resp,
        };
        let mut st = self.lock();
        if !st.conversations.contains_key(conversation) {
            return error(StatusCode::NOT_FOUND, "no such conversation");
        }
        let txn_key = (user.to_string(), txn.to_string());
        if let Some(id) = st.transactions.get(&txn_key).cloned() {
            st.stats.duplicate_sends_suppressed += 1;
            return json_response(StatusCode::OK, &json!({ "message_id": id }));
        }
        let message = self.new_message(user, &text);
        let id = message.id.clone();
        st.transactions.insert(txn_key, id.clone());
        store_message(&mut st, conversation, message, None);
        json_response(StatusCode::OK, &json!({ "message_id": id }))
    }

    fn page(&self, conversation: &str, query: &str) -> Response<Body> {
        let mut limit = 20usize;
        let mut cursor = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=100).contains(&n) => limit = n,
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "limit must be a number from 1 to 100",
                        );
                    }
                },
                "cursor" => cursor = Some(v.to_string()),
                _ => {}
            }
        }
        let mut st = self.lock();
        let Some(conv) = st.conversations.get(conversation) else {
            return error(StatusCode::NOT_FOUND, "no such conversation");
        };
        let offset = match &cursor {
            None => 0,
            Some(c) => match st.cursors.get(c) {
                Some((cid, offset)) if cid == conversation => *offset,
                _ => return error(StatusCode::BAD_REQUEST, "invalid cursor"),
            },
        };
        let end = (offset + limit).min(conv.messages.len());
        let messages: Vec<Message> = conv.messages.get(offset..end).unwrap_or(&[]).to_vec();
        let title = conv.title.clone();
        let created_by = conv.created_by.clone();
        let more = end < conv.messages.len();
        let next = more.then(|| {
            let c = random_id("cur_", 20);
            st.cursors
                .insert(c.clone(), (conversation.to_string(), end));
            c
        });
        json_response(
            StatusCode::OK,
            &json!({ "title": title, "created_by": created_by, "messages": messages, "next_cursor": next }),
        )
    }

    fn reply(self: Arc<Self>, conversation: &str, permit: OwnedSemaphorePermit) -> Response<Body> {
        if !self.lock().conversations.contains_key(conversation) {
            return error(StatusCode::NOT_FOUND, "no such conversation");
        }
        const WORDS: [&str; 8] = ["Sure", "here", "is", "what", "I", "found", "for", "you"];
        let total = self.config.reply_tokens;
        let interval = self.config.token_interval;
        let backend = self.clone();
        // The worker slot is held until the stream ends, as a real backend
        // holds its model worker while it generates.
        let stream = futures_util::stream::unfold((0usize, Some(permit)), move |(i, permit)| {
            let backend = backend.clone();
            async move {
                if i > total {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(interval).await;
                }
                let event = if i == total {
                    backend.lock().stats.replies_streamed += 1;
                    "data: [DONE]\n\n".to_string()
                } else {
                    format!(
                        "data: {}\n\n",
                        json!({ "delta": WORDS[i % WORDS.len()], "index": i })
                    )
                };
                let permit = if i == total { None } else { permit };
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(event))),
                    (i + 1, permit),
                ))
            }
        });
        let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

impl Backend {
    /// `POST /api/conversations/{id}/read` with `{"message_id": …}`: marks
    /// the conversation read up to a message of it; 404 for a message id
    /// the conversation does not hold (a stale id from another run).
    async fn mark_read(&self, req: Request<Incoming>, conversation: &str) -> Response<Body> {
        let body = match read_json(req).await {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
        let Some(id) = body.get("message_id").and_then(Value::as_str) else {
            return error(StatusCode::BAD_REQUEST, "expected {\"message_id\": string}");
        };
        let mut st = self.lock();
        let Some(conv) = st.conversations.get(conversation) else {
            return error(StatusCode::NOT_FOUND, "no such conversation");
        };
        let Some(at) = conv.messages.iter().position(|m| m.id == id) else {
            return error(
                StatusCode::NOT_FOUND,
                "no such message in this conversation",
            );
        };
        let unread = conv.messages.len() - at - 1;
        st.stats.reads += 1;
        json_response(
            StatusCode::OK,
            &json!({ "read_up_to": id, "unread": unread }),
        )
    }

    /// `GET /api/ws`: answers the handshake (101) and serves the socket in
    /// a task of its own; the worker slot is handed back once switched.
    fn websocket(self: Arc<Self>, mut req: Request<Incoming>, user: String) -> Response<Body> {
        let upgrade = req
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let Some(key) = req
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|_| upgrade)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "expected a WebSocket handshake (Upgrade: websocket, Sec-WebSocket-Key)",
            );
        };
        let accept = derive_accept_key(key.as_bytes());
        let switched = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match switched.await {
                Ok(io) => {
                    let ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None)
                        .await;
                    self.socket(ws, user).await;
                }
                Err(e) => tracing::debug!(error = %e, "demo backend: upgrade failed"),
            }
        });
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = resp.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        resp
    }

    /// One socket: client frames are JSON commands, answered in order;
    /// pushes from the conversations it joined are sent as they come.
    async fn socket(self: Arc<Self>, ws: WebSocketStream<TokioIo<Upgraded>>, user: String) {
        let (mut sink, mut frames) = ws.split();
        let (push, mut pushed) = mpsc::channel::<String>(PUSH_QUEUE);
        let id = {
            let mut st = self.lock();
            st.stats.sockets += 1;
            st.next_socket += 1;
            st.next_socket
        };
        let mut joined = HashSet::new();
        loop {
            let out = tokio::select! {
                frame = frames.next() => match frame {
                    Some(Ok(WsMessage::Text(text))) => {
                        self.command(&text, &user, (id, &push), &mut joined).await
                    }
                    Some(Ok(WsMessage::Binary(_))) => {
                        json!({ "type": "error", "error": "binary frames are not understood; send JSON text" })
                            .to_string()
                    }
                    // Pings are answered by the library; a close is echoed
                    // when the sink is closed below.
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                },
                Some(text) = pushed.recv() => text,
                () = self.shutdown.wait() => {
                    let bye = CloseFrame { code: CloseCode::Away, reason: "backend stopping".into() };
                    let _ = sink.send(WsMessage::Close(Some(bye))).await;
                    break;
                }
            };
            if sink.send(WsMessage::text(out)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
        let mut st = self.lock();
        for conversation in joined {
            if let Some(members) = st.rooms.get_mut(&conversation) {
                members.retain(|(socket, _)| *socket != id);
            }
        }
    }

    /// Handles one client frame; returns the answer to send back.
    async fn command(
        &self,
        text: &str,
        user: &str,
        (socket, push): (u64, &mpsc::Sender<String>),
        joined: &mut HashSet<String>,
    ) -> String {
        let fail = |message: &str| json!({ "type": "error", "error": message }).to_string();
        // Each frame is work for a worker, as a request is.
        let Some(_permit) = self.worker().await else {
            return fail("overloaded: no worker free within the queue timeout");
        };
        let mut st = self.lock();
        st.stats.socket_frames += 1;
        let Ok(cmd) = serde_json::from_str::<Value>(text) else {
            return fail("frames are JSON objects with a \"type\"");
        };
        let kind = cmd.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(conversation) = cmd.get("conversation").and_then(Value::as_str) else {
            return fail("every command names a \"conversation\"");
        };
        if !st.conversations.contains_key(conversation) {
            return fail("no such conversation");
        }
        match kind {
            "join" => {
                if joined.insert(conversation.to_string()) {
                    st.rooms
                        .entry(conversation.to_string())
                        .or_default()
                        .push((socket, push.clone()));
                }
                let members = st.rooms.get(conversation).map_or(0, Vec::len);
                json!({ "type": "joined", "conversation": conversation, "members": members })
                    .to_string()
            }
            "typing" => {
                let event = json!({ "type": "typing", "conversation": conversation, "user": user });
                let told = push_to(&mut st, conversation, Some(socket), &event);
                json!({ "type": "typing_sent", "conversation": conversation, "told": told })
                    .to_string()
            }
            "send" => {
                let (Some(client_id), Some(text)) = (
                    cmd.get("client_id").and_then(Value::as_str),
                    cmd.get("text").and_then(Value::as_str),
                ) else {
                    return fail("send needs \"client_id\" and \"text\"");
                };
                // Idempotent on the client's id, as the PUT is.
                let txn_key = (user.to_string(), client_id.to_string());
                if let Some(id) = st.transactions.get(&txn_key).cloned() {
                    st.stats.duplicate_sends_suppressed += 1;
                    return json!({ "type": "ack", "client_id": client_id, "message_id": id })
                        .to_string();
                }
                let message = self.new_message(user, text);
                let id = message.id.clone();
                st.transactions.insert(txn_key, id.clone());
                store_message(&mut st, conversation, message, Some(socket));
                json!({ "type": "ack", "client_id": client_id, "message_id": id }).to_string()
            }
            _ => fail("unknown type; use join, typing or send"),
        }
    }
}

/// Pushes queued per socket; a socket this far behind misses pushes.
const PUSH_QUEUE: usize = 256;

/// Stores a message and pushes it to the conversation's sockets (but the
/// sender's).
fn store_message(st: &mut State, conversation: &str, message: Message, from: Option<u64>) {
    let event = json!({ "type": "message", "conversation": conversation, "message": message });
    if let Some(c) = st.conversations.get_mut(conversation) {
        c.messages.push(message);
    }
    st.stats.messages += 1;
    push_to(st, conversation, from, &event);
}

/// Queues `event` for every socket in the conversation but `except`;
/// returns how many were told.
fn push_to(st: &mut State, conversation: &str, except: Option<u64>, event: &Value) -> usize {
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

/// The request body, decoded when it is content-encoded (gzip, deflate,
/// br, zstd; 415 for another coding).
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Box<Response<Body>>> {
    let coding = match req.headers().get(header::CONTENT_ENCODING) {
        Some(v) => Coding::parse(v.as_bytes()).map_err(|_| {
            Box::new(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Encoding must be gzip, deflate, br or zstd",
            ))
        })?,
        None => None,
    };
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Err(Box::new(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body larger than 1 MiB or unreadable",
            )));
        }
    };
    match coding {
        None => Ok(bytes),
        Some(c) => c.decode(&bytes).map(Bytes::from).ok_or_else(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "body does not decode as its Content-Encoding says",
            ))
        }),
    }
}

/// Whether an `Accept-Encoding` value takes gzip (not `gzip;q=0`).
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

/// A JSON response gzip-encoded, as a web server in front of a backend
/// does for clients that accept it; other responses as they are.
async fn gzipped(resp: Response<Body>) -> Response<Body> {
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json || resp.headers().contains_key(header::CONTENT_ENCODING) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = body.collect().await.map(|c| c.to_bytes());
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts
        .headers
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    Response::from_parts(parts, full(Coding::Gzip.encode(&bytes)))
}

async fn read_json(req: Request<Incoming>) -> Result<Value, Box<Response<Body>>> {
    let bytes = read_body(req).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("body is not valid JSON: {e}"),
        ))
    })
}

/// The `text` of a `{"text": …}` body.
async fn read_text(req: Request<Incoming>) -> Result<String, Box<Response<Body>>> {
    let body = read_json(req).await?;
    match body.get("text").and_then(Value::as_str) {
        Some(t) => Ok(t.to_string()),
        None => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "expected {\"text\": string}",
        ))),
    }
}

async fn read_json_or_empty(req: Request<Incoming>) -> Result<Value, Box<Response<Body>>> {
    let bytes = read_body(req).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("body is not valid JSON: {e}"),
        ))
    })
}
