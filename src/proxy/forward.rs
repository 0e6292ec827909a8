//! One client request in, one upstream request out.
//!
//! Refuses what a reverse proxy must not do (CONNECT other than RFC 8441's
//! WebSocket over h2, absolute-form targets
//! for other hosts), strips hop-by-hop headers (RFC 9110 §7.6.1), adds
//! `X-Forwarded-*`, rewrites Host unless told to keep it, and answers 502
//! (upstream unreachable or failing) and 504 (upstream too slow) itself
//! with a short JSON body naming the cause. Those answers are recorded too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::ProxyState;
use super::tap::{Pending, RequestBody, RequestCapture, ResponseBody};
use crate::capture::{CapturedBody, ExchangeFailure, now_epoch_us};

/// The body the proxy answers with: the upstream's, tapped, or its own.
#[derive(Debug)]
pub enum ProxyBody {
    /// The upstream's response body.
    Upstream(ResponseBody),
    /// An answer made by the proxy.
    Local(Full<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Local(b) => b.size_hint(),
        }
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including those the Connection header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in crate::upstream::HOP_BY_HOP {
        headers.remove(name);
    }
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn json_answer(
    status: StatusCode,
    error: &str,
    detail: &str,
    upstream: &str,
) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": error, "detail": detail, "upstream": upstream });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serves one request.
pub(crate) async fn handle(
    state: Arc<ProxyState>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let arrived = Instant::now();
    let started_at_us = now_epoch_us();
    state.metrics.requests.inc();
    let upstream = &state.config.upstream;

    let h2_socket = websocket_over_h2(&req);
    if req.method() == Method::CONNECT && !h2_socket {
        state.metrics.refused.inc();
        let mut resp = json_answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "connect_refused",
            "tapedeck is a reverse proxy for one upstream, not a forward proxy; CONNECT is refused",
            upstream.as_str(),
        );
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return Ok(resp.map(ProxyBody::Local));
    }
    if req.version() < Version::HTTP_2
        && let Some(authority) = req.uri().authority()
    {
        let ours = authority == upstream.authority()
            || local.is_some_and(|l| authority.as_str() == l.to_string());
        if !ours {
            state.metrics.refused.inc();
            let detail = format!(
                "absolute-form request for {authority}: tapedeck forwards only to its upstream and is not an open proxy"
            );
            return Ok(json_answer(
                StatusCode::FORBIDDEN,
                "foreign_host",
                &detail,
                upstream.as_str(),
            )
            .map(ProxyBody::Local));
        }
    }

    // A protocol upgrade (WebSocket): the client's side of the switched
    // connection, and the protocol it asks for.
    let mut req = req;
    let protocol = match h2_socket {
        true => Some(HeaderValue::from_static("websocket")),
        false => upgrade_request(req.headers()),
    };
    let upgrade = protocol.map(|protocol| (protocol, hyper::upgrade::on(&mut req)));
    let (mut parts, body) = req.into_parts();
    if h2_socket {
        // RFC 8441: the h2 stream becomes the socket. The upstream gets
        // (and the capture keeps) the HTTP/1.1 handshake it knows, which
        // h2 clients send without a key.
        parts.method = Method::GET;
        if !parts.headers.contains_key(header::SEC_WEBSOCKET_KEY) {
            use base64::Engine;
            let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
            if let Ok(key) = HeaderValue::from_str(&key) {
                parts.headers.insert(header::SEC_WEBSOCKET_KEY, key);
            }
        }
    }
    let recorded = state.config.filter.records(parts.uri.path());
    let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(&mut parts.headers);

    let pending = recorded.then(|| {
        let assigned = state
            .sessions
            .assign(&parts.headers, peer.ip(), &state.redactor, arrived);
        // Counted on arrival, as recorded exchanges are committed or
        // dropped: each answered exchange is in exactly one count.
        if !assigned.sampled {
            state.metrics.unsampled.inc();
        }
        Pending {
            state: state.clone(),
            session: assigned.session,
            seq: assigned.seq,
            arrived,
            started_at_us,
            method: parts.method.as_str().to_string(),
            uri: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string()),
            http_version: version_name(parts.version),
            request_headers: parts.headers.clone(),
            request_capture: assigned
                .sampled
                .then(|| Arc::new(Mutex::new(RequestCapture::default()))),
            status: None,
            response_headers: HeaderMap::new(),
            ttfb: None,
            response_chunks: Vec::new(),
            ws_frames: Vec::new(),
            ws_frames_dropped: 0,
            in_flight: assigned.sampled.then(|| state.in_flight.enter()),
        }
    });

    // The upstream request.
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target = upstream.join(path_and_query);
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            let resp = json_answer(
                StatusCode::BAD_REQUEST,
                "bad_target",
                &e.to_string(),
                upstream.as_str(),
            );
            return Ok(resp.map(ProxyBody::Local));
        }
    };
    let headers = &mut parts.headers;
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    let proto = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some((protocol, _)) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    if let Some(host) = &client_host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    if state.config.preserve_host {
        if let Some(host) = client_host {
            headers.insert(header::HOST, host);
        }
    } else if let Ok(v) = HeaderValue::from_str(upstream.authority().as_str()) {
        headers.insert(header::HOST, v);
    }
    parts.uri = target;
    parts.version = Version::HTTP_11;
    let request_capture = pending.as_ref().and_then(|p| p.request_capture.clone());
    let client_failed = Arc::new(AtomicBool::new(false));
    let upstream_req = Request::from_parts(
        parts,
        RequestBody::new(
            body,
            request_capture,
            state.config.max_body,
            client_failed.clone(),
        ),
    );

    let client = match upgrade {
        Some(_) => &state.upgrade_client,
        None => &state.client,
    };
    let outcome =
        tokio::time::timeout(state.config.upstream_timeout, client.request(upstream_req)).await;
    let failure = match outcome {
        Ok(Ok(mut resp)) => {
            strip_hop_by_hop(resp.headers_mut());
            *resp.version_mut() = Version::default();
            let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            if switched && let Some((protocol, _)) = &upgrade {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                resp.headers_mut().insert(header::UPGRADE, protocol.clone());
            }
            let mut pending = pending.map(|mut p| {
                p.status = Some(resp.status().as_u16());
                p.response_headers = resp.headers().clone();
                p.ttfb = Some(arrived.elapsed());
                Box::new(p)
            });
            if switched && let Some((_, client_side)) = upgrade {
                // The handshake is recorded when the socket closes, with
                // its frames.
                let upstream_side = hyper::upgrade::on(&mut resp);
                // An unsampled socket is relayed without reading frames.
                tokio::spawn(super::websocket::relay(
                    client_side,
                    upstream_side,
                    peer,
                    pending.take().filter(|p| p.in_flight.is_some()),
                    state.shutdown.clone(),
                ));
                if h2_socket {
                    // An h2 stream is switched by a 2xx with no body.
                    let (mut head, _) = resp.into_parts();
                    head.status = StatusCode::OK;
                    for name in [
                        header::CONNECTION,
                        header::UPGRADE,
                        header::SEC_WEBSOCKET_ACCEPT,
                    ] {
                        head.headers.remove(name);
                    }
                    return Ok(Response::from_parts(
                        head,
                        ProxyBody::Local(Full::default()),
                    ));
                }
            }
            let cap = state.config.max_body;
            return Ok(resp.map(|b| ProxyBody::Upstream(ResponseBody::new(b, cap, pending))));
        }
        Ok(Err(_)) if client_failed.load(Ordering::SeqCst) => {
            // The client went away mid-upload: no answer reaches anyone,
            // and the upstream did nothing wrong.
            if let Some(p) = pending {
                p.complete(
                    CapturedBody::default(),
                    Some(ExchangeFailure {
                        kind: "downstream_closed",
                        message: "the client went away before the end of its request body".into(),
                    }),
                );
            }
            let resp = json_answer(
                StatusCode::BAD_REQUEST,
                "downstream_closed",
                "the request body ended early",
                upstream.as_str(),
            );
            return Ok(resp.map(ProxyBody::Local));
        }
        Ok(Err(e)) => classify(&e),
        Err(_) => ExchangeFailure {
            kind: "upstream_timeout",
            message: format!(
                "no response head from the upstream within {}",
                humantime::format_duration(state.config.upstream_timeout)
            ),
        },
    };
    state.metrics.upstream_error(failure.kind);
    tracing::debug!(kind = failure.kind, detail = %failure.message, "upstream failed");
    let status = if failure.kind == "upstream_timeout" {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    let resp = json_answer(status, failure.kind, &failure.message, upstream.as_str());
    if let Some(mut p) = pending {
        p.status = Some(status.as_u16());
        p.response_headers = resp.headers().clone();
        p.ttfb = Some(arrived.elapsed());
        let body = resp.body().clone();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let captured = CapturedBody {
            len: bytes.len() as u64,
            bytes,
            truncated: false,
        };
        p.complete(captured, Some(failure));
    }
    Ok(resp.map(ProxyBody::Local))
}

/// An RFC 8441 extended CONNECT: a WebSocket over an h2 stream.
fn websocket_over_h2(req: &Request<Incoming>) -> bool {
    req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// The protocol a request asks to switch to (`Connection: upgrade` with an
/// `Upgrade` header, HTTP/1.1 only).
fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Names an upstream client failure.
fn classify(e: &hyper_util::client::legacy::Error) -> ExchangeFailure {
    if let Some(tls) = crate::tls::failure(e) {
        return ExchangeFailure {
            kind: "upstream_tls",
            message: format!(
                "TLS to the upstream failed: {tls}; {}",
                crate::tls::remedy(&tls)
            ),
        };
    }
    if e.is_connect() {
        return ExchangeFailure {
            kind: "upstream_unreachable",
            message: format!("cannot connect to the upstream: {}", error_chain(e)),
        };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionAborted
            )
        {
            break;
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_closed() || h.is_canceled())
        {
            break;
        }
        source = s.source();
    }
    let kind = if source.is_some() {
        "upstream_reset"
    } else {
        "upstream_error"
    };
    ExchangeFailure {
        kind,
        message: format!("upstream failed: {}", error_chain(e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
