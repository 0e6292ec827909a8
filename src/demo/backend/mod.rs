//! The demo chat backend: a small but honest chat API.
//!
//! It behaves like the backends tapedeck users run: random login tokens,
//! server-made opaque ids, opaque pagination cursors bound to their
//! conversation, idempotent sends (an `Idempotency-Key` header on POST, a
//! client transaction id in the path of a PUT, a client-chosen
//! `client_msg_id` that a sender may use once), edits of one's own message
//! guarded by the `ETag` its send answered with (`If-Match`, 412 when
//! stale), a filter query naming the conversation inside an expression
//! (`GET /api/messages?filter=(conversation='c_…')`) whose hits come in an
//! order of this backend's own, a login naming its user in a nested
//! `identity.login_id`, a Server-Sent-Events bot
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
//!
//! This file is the backend's face: [`DemoBackend`] (start, stop), the
//! accept loop and the router. The handlers live beside it, one concern
//! per file: `accounts` (login, tokens, rate limit), `conversations`
//! (conversations and messages), `edits` (conditional edits), `search`
//! (the filter query), `reply` (the SSE bot reply), `websocket`;
//! `state` holds what they share and `body` the HTTP bodies both ways.
//! The face only dispatches: it keeps no state of its own and its
//! handlers never call back into it.

mod accounts;
mod body;
mod conversations;
mod edits;
mod reply;
mod search;
mod state;
mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;
use body::{Body, accepts_gzip, error, gzipped, json_response};
use state::Backend;
pub use state::{BackendConfig, MessagesVia, Stats, UserStats};

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
        let backend = Arc::new(Backend::new(config, shutdown.clone()));
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

impl Backend {
    /// Answers one request, gzip-encoding a JSON answer for clients that
    /// accept it.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if accepts_gzip(req.headers()) {
            gzipped(self.answer(req).await).await
        } else {
            self.answer(req).await
        }
    }

    /// `GET /api/stats` at once; anything else once a worker slot is free
    /// (503 after the queue timeout), counted as a request.
    async fn answer(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if path == "/api/stats" && req.method() == Method::GET {
            return json_response(StatusCode::OK, &json!(self.stats()));
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

    /// Dispatches an authenticated request (or a login) to its handler.
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
            (&Method::PATCH, ["conversations", id, "messages", message]) => {
                let (id, message) = (id.to_string(), message.to_string());
                self.edit_message(req, &user, &id, &message).await
            }
            (&Method::GET, ["conversations", id, "messages"]) => self.page(id, &query),
            (&Method::GET, ["messages"]) => self.search(&query),
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
}
