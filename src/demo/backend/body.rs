//! HTTP bodies both ways for the demo backend's handlers: reading a
//! request body (content-decoded, size-limited, as JSON) and making JSON
//! and error responses, gzip-encoded for clients that accept it.
//!
//! Knows nothing of the backend's state; the codings come from
//! [`crate::codec`].

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::codec::Coding;

/// Largest request body the backend reads.
const MAX_BODY: usize = 1024 * 1024;

/// Every response body the backend sends: whole, streamed or empty.
pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

pub(super) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

pub(super) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `resp` with an `ETag` header (a quoted validator such as `"r1-…"`).
pub(super) fn with_etag(mut resp: Response<Body>, etag: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

pub(super) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// The request body, decoded when it is content-encoded (gzip, deflate,
/// br, zstd; 415 for another coding).
pub(super) async fn read_body(req: Request<Incoming>) -> Result<Bytes, Box<Response<Body>>> {
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
pub(super) fn accepts_gzip(headers: &http::HeaderMap) -> bool {
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
pub(super) async fn gzipped(resp: Response<Body>) -> Response<Body> {
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

pub(super) async fn read_json(req: Request<Incoming>) -> Result<Value, Box<Response<Body>>> {
    let bytes = read_body(req).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("body is not valid JSON: {e}"),
        ))
    })
}

/// The `text` of a `{"text": …}` body.
pub(super) async fn read_text(req: Request<Incoming>) -> Result<String, Box<Response<Body>>> {
    let body = read_json(req).await?;
    match body.get("text").and_then(Value::as_str) {
        Some(t) => Ok(t.to_string()),
        None => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "expected {\"text\": string}",
        ))),
    }
}

pub(super) async fn read_json_or_empty(
    req: Request<Incoming>,
) -> Result<Value, Box<Response<Body>>> {
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
