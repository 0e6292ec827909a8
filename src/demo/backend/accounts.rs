//! Logins and bearer tokens of the demo backend: `POST /api/login` (the
//! user named in a nested `identity.login_id`, as identity providers do;
//! open sign-up, or a fixed set of accounts whose passwords must match) and the
//! token check every other request passes, with the per-token rate limit.
//!
//! Reads and writes the shared state's tokens, users and rate-limit
//! buckets; the request arrives from the router in the backend's face.

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::body::{Body, error, json_response, read_json};
use super::state::{Backend, random_id};

impl Backend {
    /// The user a request's bearer token belongs to; a 401 for a missing
    /// or unknown token, a 429 (with `Retry-After`) past the token's rate.
    pub(super) fn authenticate(
        &self,
        req: &Request<Incoming>,
    ) -> Result<String, Box<Response<Body>>> {
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

    /// `POST /api/login` with `{"identity": {"login_id": …}, "password":
    /// …}` (or the older `{"user": …, "password": …}`): a fresh token;
    /// 401 for an empty user or password, or one the accounts (when
    /// configured) do not know.
    pub(super) async fn login(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match read_json(req).await {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
        let user = body
            .pointer("/identity/login_id")
            .or_else(|| body.get("user"))
            .and_then(Value::as_str);
        let (Some(user), Some(password)) = (user, body.get("password").and_then(Value::as_str))
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "expected {\"identity\": {\"login_id\": string}, \"password\": string}",
            );
        };
        if user.is_empty() || password.is_empty() {
            return error(StatusCode::UNAUTHORIZED, "empty user or password");
        }
        if let Some(accounts) = &self.config.accounts {
            match accounts.get(user) {
                None => return error(StatusCode::UNAUTHORIZED, "no such user"),
                Some(known) if known != password => {
                    return error(StatusCode::UNAUTHORIZED, "wrong password");
                }
                Some(_) => {}
            }
        }
        let token = random_id("tok_", 32);
        let mut st = self.lock();
        st.tokens.insert(token.clone(), user.to_string());
        if st.users.insert(user.to_string()) {
            st.stats.users += 1;
        }
        st.stats.logins += 1;
        st.user(user).logins += 1;
        json_response(StatusCode::OK, &json!({ "token": token, "user": user }))
    }
}
