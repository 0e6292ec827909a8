//! The demo chat backend: a small but honest chat API.
//!
//! It behaves like the backends tapedeck users run: random login tokens,
//! server-made opaque ids, opaque pagination cursors bound to their
//! conversation, idempotent sends (an `Idempotency-Key` header on POST, a
//! client transaction id in the path of a PUT), a Server-Sent-Events bot
//! reply streamed token by token, and a capacity limit: `workers` slots,
//! each request holding one for `service_time` (plus streaming time), a 503
//! after `queue_timeout` in the queue, an optional per-token rate limit
//! (429). State lives in memory; `GET /api/stats` tells tests what really
//! happened. Every input error is a 4xx; nothing a client sends can stop it.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
    stats: Stats,
}

struct Backend {
    config: BackendConfig,
    workers: Arc<Semaphore>,
    state: Mutex<State>,
    started: Instant,
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
                .serve_connection(TokioIo::new(stream), service)
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
        let permit = match tokio::time::timeout(
            self.config.queue_timeout,
            self.workers.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                let mut st = self.lock();
                st.stats.requests += 1;
                st.stats.overloaded += 1;
                drop(st);
                let mut resp = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded: no worker free within the queue timeout",
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return resp;
            }
        };
        tokio::time::sleep(self.config.service_time).await;
        let resp = self.clone().route(req, permit).await;
        self.lock().stats.requests += 1;
        resp
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
        if let Some(c) = st.conversations.get_mut(conversation) {
            c.messages.push(message.clone());
        }
        st.stats.messages += 1;
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
        if let Some(c) = st.conversations.get_mut(conversation) {
            c.messages.push(message);
        }
        st.stats.messages += 1;
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

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Box<Response<Body>>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body larger than 1 MiB or unreadable",
        ))),
    }
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
