//! Editing one's own message in the demo backend: `PATCH
//! /api/conversations/{id}/messages/{message}` with `{"text": …}`, the
//! message named by the id its client chose (`client_msg_id`) or by the
//! server's id, and `If-Match` naming the version being edited (the `ETag`
//! its send or its last edit answered with), as optimistic concurrency
//! asks: 428 without `If-Match`, 412 on an older version, 403 for another
//! user's message.
//!
//! Requests arrive from the router in the backend's face; the message is
//! changed in the shared state and counted there, per user too.

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::body::{Body, error, json_response, read_json, with_etag};
use super::state::{Backend, new_etag};

impl Backend {
    /// See the module's documentation.
    pub(super) async fn edit_message(
        &self,
        req: Request<Incoming>,
        user: &str,
        conversation: &str,
        message: &str,
    ) -> Response<Body> {
        let Some(if_match) = req
            .headers()
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
        else {
            return error(
                StatusCode::PRECONDITION_REQUIRED,
                "an edit names the version it changes in If-Match",
            );
        };
        let body = match read_json(req).await {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
        let Some(text) = body.get("text").and_then(Value::as_str) else {
            return error(StatusCode::BAD_REQUEST, "expected {\"text\": string}");
        };
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(conv) = st.conversations.get_mut(conversation) else {
            return error(StatusCode::NOT_FOUND, "no such conversation");
        };
        let Some(m) = conv
            .messages
            .iter_mut()
            .find(|m| m.id == message || m.client_msg_id.as_deref() == Some(message))
        else {
            return error(
                StatusCode::NOT_FOUND,
                "no such message in this conversation",
            );
        };
        if m.author != user {
            st.stats.edits_refused += 1;
            return error(StatusCode::FORBIDDEN, "only its author edits a message");
        }
        if if_match != m.etag && if_match != "*" {
            st.stats.edit_conflicts += 1;
            return with_etag(
                error(
                    StatusCode::PRECONDITION_FAILED,
                    "If-Match names another version of this message",
                ),
                &m.etag.clone(),
            );
        }
        m.text = text.to_string();
        m.edited = true;
        m.version += 1;
        m.etag = new_etag(m.version);
        let edited = m.clone();
        st.stats.edits += 1;
        st.stats.per_user.entry(user.to_string()).or_default().edits += 1;
        with_etag(
            json_response(StatusCode::OK, &json!({ "message": edited })),
            &edited.etag,
        )
    }
}
