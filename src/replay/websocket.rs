//! Replaying a recorded WebSocket: the handshake goes to the target with
//! the recorded headers (Sec-WebSocket-* made fresh), the client's frames
//! are sent at their recorded offsets from the switch, the server's are
//! read as they come. Measured: connect time (the handshake, which is also
//! the exchange's latency), round trips
//! (a client frame to the next server frame), frames each way and the
//! close code the server sent.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::either::Either;

use super::correlate::SocketValues;
use super::engine::Sent;
use crate::capture::{StoredExchange, WsFrame};
use crate::report::outcome::WsTiming;
use crate::upstream::{HOP_BY_HOP, Upstream};

/// How long to wait for the server to close after the client's last frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What the socket needs besides the recorded exchange.
pub(crate) struct Target<'a> {
    pub upstream: &'a Upstream,
    pub tls: &'a Arc<rustls::ClientConfig>,
    /// Headers to set on the handshake (overrides, replay id).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub timeout: Duration,
}

/// Plays one recorded socket against the target. With `values`, the
/// server's frames are learned from as they arrive and the client's JSON
/// frames get the world's live values when they are sent.
pub(crate) async fn replay(
    target: &Target<'_>,
    ex: &Arc<StoredExchange>,
    values: Option<SocketValues>,
) -> Sent {
    match timeout(target.timeout, connect(target, ex)).await {
        Ok(Ok((socket, ttfb))) => play(socket, ex, ttfb, values).await,
        Ok(Err(kind)) => Sent::failed(kind),
        Err(_) => Sent::failed("timeout"),
    }
}

type Socket = tokio_tungstenite::WebSocketStream<
    Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>,
>;

async fn connect(
    target: &Target<'_>,
    ex: &StoredExchange,
) -> Result<(Socket, Duration), &'static str> {
    let started = Instant::now();
    let uri = target.upstream.join(&ex.uri).map_err(|_| "reset")?;
    let ws_uri = format!(
        "{}://{}{}",
        if target.upstream.is_https() {
            "wss"
        } else {
            "ws"
        },
        target.upstream.authority(),
        uri.path_and_query().map_or("/", |pq| pq.as_str())
    );
    let mut request = ws_uri.into_client_request().map_err(|_| "reset")?;
    let headers = request.headers_mut();
    for (name, value) in &ex.request_headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("sec-websocket-")
            || HOP_BY_HOP.contains(&lower.as_str())
            || super::trace::RECORDED_TRACE.contains(&lower.as_str())
            || lower == "host"
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    for (name, value) in &target.headers {
        headers.insert(name.clone(), value.clone());
    }
    let addr = format!(
        "{}:{}",
        target.upstream.authority().host(),
        target.upstream.port()
    );
    let tcp = TcpStream::connect(&addr).await.map_err(|_| "connect")?;
    let _ = tcp.set_nodelay(true);
    let io = if target.upstream.is_https() {
        let tls = target
            .upstream
            .tls_handshake(target.tls.clone(), tcp)
            .await
            .map_err(|_| "tls")?;
        Either::Right(tls)
    } else {
        Either::Left(tcp)
    };
    let (socket, _) = tokio_tungstenite::client_async(request, io)
        .await
        .map_err(|_| "reset")?;
    Ok((socket, started.elapsed()))
}

async fn play(
    socket: Socket,
    ex: &StoredExchange,
    ttfb: Duration,
    values: Option<SocketValues>,
) -> Sent {
    let switched = Instant::now();
    let (mut sink, mut stream) = socket.split();
    let client: Vec<&WsFrame> = ex.ws_frames.iter().filter(|f| f.dir == "client").collect();
    let last_server = ex
        .ws_frames
        .iter()
        .filter(|f| f.dir == "server")
        .map(|f| f.t_us)
        .max()
        .unwrap_or(0);
    // The server's frames, with when they arrived, read while we send.
    let mut learning = values.as_ref().and_then(|v| v.learner(ex));
    let reader = tokio::spawn(async move {
        let mut arrivals = Vec::new();
        let mut close_code = None;
        while let Some(Ok(msg)) = stream.next().await {
            arrivals.push(Instant::now());
            match &msg {
                Message::Close(frame) => {
                    close_code = Some(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
                }
                Message::Text(text) => {
                    if let Some(learner) = &mut learning {
                        learner.server_frame(text);
                    }
                }
                _ => {}
            }
        }
        (arrivals, close_code)
    });
    let mut sent_at = Vec::with_capacity(client.len());
    for frame in &client {
        sleep_until(switched + Duration::from_micros(frame.t_us)).await;
        let live = values
            .as_ref()
            .filter(|_| frame.op == "text")
            .and_then(|v| v.client_frame(&frame.data));
        let Some(msg) = live.map(Message::text).or_else(|| message(frame)) else {
            continue;
        };
        if sink.send(msg).await.is_err() {
            break;
        }
        sent_at.push(Instant::now());
    }
    // Let the server finish what it recorded sending, then close if the
    // recording did not.
    let until = switched + Duration::from_micros(last_server) + CLOSE_WAIT;
    let reading = timeout(until.saturating_duration_since(Instant::now()), reader).await;
    let _ = sink.close().await;
    let (arrivals, close_code) = match reading {
        Ok(Ok(done)) => done,
        _ => (Vec::new(), None),
    };
    // A round trip: a client frame to the first server frame after it.
    let rtts = sent_at
        .iter()
        .filter_map(|s| arrivals.iter().find(|a| *a >= s).map(|a| *a - *s))
        .collect();
    let mut sent = Sent::failed("reset");
    sent.failure = None;
    sent.status = Some(101);
    sent.ttfb = Some(ttfb);
    // A socket's latency is its handshake: how long it lives is the
    // recording's doing, not the backend's. Its frames' round trips are
    // reported on their own.
    sent.finished = switched;
    sent.ws = Some(WsTiming {
        connect: ttfb,
        rtts,
        sent: sent_at.len() as u64,
        received: arrivals.len() as u64,
        close_code,
    });
    sent
}

/// The message a recorded client frame becomes (continuations and pongs
/// are left to the library).
fn message(frame: &WsFrame) -> Option<Message> {
    let binary = || {
        base64::engine::general_purpose::STANDARD
            .decode(&frame.data)
            .map(Bytes::from)
            .unwrap_or_default()
    };
    match frame.op.as_str() {
        "text" => Some(Message::text(frame.data.clone())),
        "binary" => Some(Message::Binary(binary())),
        "ping" => Some(Message::Ping(Bytes::from(frame.data.clone().into_bytes()))),
        "close" => Some(Message::Close(frame.close_code.map(|code| CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }))),
        _ => None,
    }
}
