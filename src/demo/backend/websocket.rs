//! The demo backend's WebSocket, `GET /api/ws`: the handshake, then JSON
//! commands from the client (join a conversation, send typing events and
//! messages), each answered in order and each holding a worker slot, and
//! pushes of the joined conversations' new messages and typing events.
//!
//! The upgrade request arrives from the router in the backend's face;
//! rooms and messages live in the shared state. A socket closes with 1001
//! when the backend stops.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::body::{Body, error, full};
use super::state::{Backend, Via, push_to, store_message};

/// Pushes queued per socket; a socket this far behind misses pushes.
const PUSH_QUEUE: usize = 256;

impl Backend {
    /// `GET /api/ws`: answers the handshake (101) and serves the socket in
    /// a task of its own; the worker slot is handed back once switched.
    pub(super) fn websocket(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        user: String,
    ) -> Response<Body> {
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
                store_message(&mut st, conversation, message, Via::Socket(socket));
                json!({ "type": "ack", "client_id": client_id, "message_id": id }).to_string()
            }
            _ => fail("unknown type; use join, typing or send"),
        }
    }
}
