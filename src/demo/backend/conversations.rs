//! Conversations and their messages in the demo backend: create one,
//! post (idempotent on an `Idempotency-Key` header, or naming the id its
//! client chose, once per sender) or put (idempotent on the client's
//! transaction id) a message, each answered with its version's `ETag`, page through the messages with
//! opaque cursors bound to their conversation, and mark it read.
//!
//! Requests arrive from the router in the backend's face; new messages go
//! into the shared state, which also pushes them to the conversation's
//! sockets.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::body::{
    Body, error, json_response, read_json, read_json_or_empty, read_text, with_etag,
};
use super::state::{Backend, Conversation, Message, Via, random_id, store_message};

impl Backend {
    /// `POST /api/conversations` with an optional `{"title": …}`.
    pub(super) async fn create_conversation(
        &self,
        req: Request<Incoming>,
        user: &str,
    ) -> Response<Body> {
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
        st.user(user).conversations += 1;
        json_response(
            StatusCode::CREATED,
            &json!({ "id": id, "title": title, "created_by": user }),
        )
    }
    /// `POST /api/conversations/{id}/messages` with `{"text": …}` and
    /// optionally the id the client chose for it, `"client_msg_id": …`; a
    /// repeated `Idempotency-Key` answers the first message again, a
    /// `client_msg_id` the sender used before is a 409. The answer's
    /// `ETag` is what an edit must name in `If-Match`.
    pub(super) async fn post_message(
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
        let body = match read_json(req).await {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
        let Some(text) = body.get("text").and_then(Value::as_str) else {
            return error(StatusCode::BAD_REQUEST, "expected {\"text\": string}");
        };
        let client_msg_id = match body.get("client_msg_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if (1..=128).contains(&id.len()) => Some(id.clone()),
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "client_msg_id must be a string of 1 to 128 characters",
                );
            }
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
                return with_etag(
                    json_response(StatusCode::CREATED, &json!({ "message": message })),
                    &message.etag,
                );
            }
        }
        if let Some(id) = &client_msg_id
            && let Some(existing) = st.client_ids.get(&(user.to_string(), id.clone())).cloned()
        {
            st.stats.duplicate_client_ids += 1;
            return json_response(
                StatusCode::CONFLICT,
                &json!({ "error": "client_msg_id already used by this sender", "message_id": existing }),
            );
        }
        let mut message = self.new_message(user, text);
        message.client_msg_id = client_msg_id.clone();
        if let Some(key) = key {
            st.idempotency
                .insert((user.to_string(), key), message.clone());
        }
        if let Some(id) = client_msg_id {
            st.client_ids
                .insert((user.to_string(), id), message.id.clone());
        }
        let etag = message.etag.clone();
        store_message(&mut st, conversation, message.clone(), Via::Post);
        with_etag(
            json_response(StatusCode::CREATED, &json!({ "message": message })),
            &etag,
        )
    }

    /// `PUT /api/conversations/{id}/messages/{txn}` with `{"text": …}`;
    /// a repeated transaction id answers the first message's id again.
    pub(super) async fn put_message(
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
        let (id, etag) = (message.id.clone(), message.etag.clone());
        st.transactions.insert(txn_key, id.clone());
        store_message(&mut st, conversation, message, Via::Put);
        with_etag(
            json_response(StatusCode::OK, &json!({ "message_id": id })),
            &etag,
        )
    }

    /// `GET /api/conversations/{id}/messages?limit=&cursor=`: a page of
    /// messages and a cursor to the next one, valid for this conversation.
    pub(super) fn page(&self, conversation: &str, query: &str) -> Response<Body> {
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
    /// `POST /api/conversations/{id}/read` with `{"message_id": …}`: marks
    /// the conversation read up to a message of it; 404 for a message id
    /// the conversation does not hold (a stale id from another run).
    pub(super) async fn mark_read(
        &self,
        req: Request<Incoming>,
        conversation: &str,
    ) -> Response<Body> {
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
}
