//! The streamed bot reply of the demo backend: `GET
//! /api/conversations/{id}/reply` answers with Server-Sent Events, one
//! token every `token_interval`, holding its worker slot until the stream
//! ends.
//!
//! Only counts finished replies in the shared state; the request arrives
//! from the router in the backend's face.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use super::body::{Body, error};
use super::state::Backend;

impl Backend {
    /// Streams the reply; the worker slot `permit` goes with the stream.
    pub(super) fn reply(
        self: Arc<Self>,
        conversation: &str,
        permit: OwnedSemaphorePermit,
    ) -> Response<Body> {
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
