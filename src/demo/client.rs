//! The demo's chat client: JSON over HTTP (a pooled hyper client that
//! takes gzip, as a browser does) and the WebSocket part of a user's
//! script. The scripted population (`script.rs`) drives it; tests
//! use it to call the demo backend directly.
//!
//! Knows nothing of the script's users or of what statuses it expects.

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// A small JSON-over-HTTP client for the demo API.
#[derive(Debug, Clone)]
pub struct ChatClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    user_agent: String,
}

/// A response as the script sees it.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `ETag` header, if any.
    pub fn etag(&self) -> Option<&str> {
        self.headers.get(header::ETAG).and_then(|v| v.to_str().ok())
    }
}

impl ChatClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, user_agent: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        ChatClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_string(),
            user_agent: user_agent.to_string(),
        }
    }

    /// Sends one request and reads the whole response.
    ///
    /// # Errors
    /// A transport failure, as text.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Reply, String> {
        // Like a browser: compressed responses welcome.
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header(header::USER_AGENT, &self.user_agent)
            .header(header::ACCEPT_ENCODING, "gzip");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let coding = headers.get(header::CONTENT_ENCODING).cloned();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body = crate::codec::decoded(coding.as_ref().map(|v| v.as_bytes()), body)
            .ok_or_else(|| format!("a body in an unreadable Content-Encoding ({coding:?})"))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// The socket part of a user's script: join the conversation, say it is
/// typing, send a message and wait for its acknowledgement, close (1000).
/// Returns the acknowledged message id; an error says which step failed.
pub(super) async fn chat_socket(
    base: &str,
    client: &ChatClient,
    token: Option<&str>,
    conversation: &str,
    client_id: &str,
    text: &str,
) -> Result<String, String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let url = format!("{}/api/ws", base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    let mut add = |name: header::HeaderName, value: &str| {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    add(header::USER_AGENT, &client.user_agent);
    if let Some(t) = token {
        add(header::AUTHORIZATION, &format!("Bearer {t}"));
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let commands = [
        json!({ "type": "join", "conversation": conversation }),
        json!({ "type": "typing", "conversation": conversation }),
        json!({ "type": "send", "conversation": conversation, "client_id": client_id, "text": text }),
    ];
    let mut answer = Value::Null;
    for (command, expected) in commands.iter().zip(["joined", "typing_sent", "ack"]) {
        socket
            .send(Message::text(command.to_string()))
            .await
            .map_err(|e| format!("send {}: {e}", command["type"]))?;
        answer = loop {
            match socket.next().await {
                Some(Ok(Message::Text(t))) => {
                    break serde_json::from_str(&t).unwrap_or(Value::Null);
                }
                Some(Ok(_)) => continue,
                other => return Err(format!("socket ended before `{expected}`: {other:?}")),
            }
        };
        if answer["type"] != expected {
            return Err(format!("expected `{expected}`, got {answer}"));
        }
    }
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    socket
        .close(Some(bye))
        .await
        .map_err(|e| format!("close: {e}"))?;
    // Read to the server's close.
    while let Some(Ok(_)) = socket.next().await {}
    answer["message_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("ack without a message_id: {answer}"))
}
