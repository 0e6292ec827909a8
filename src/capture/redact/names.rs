//! The one list of what holds a credential, by name: recording redacts
//! what it names and replay treats the same places as credentials, never
//! as values to regenerate. Names are compared in snake case
//! (`accessToken`, `X-Api-Key` and `x_api_key` are the same name).

/// Header names that are always credentials.
const HEADERS: [&str; 4] = [
    "authorization",
    "proxy_authorization",
    "cookie",
    "set_cookie",
];

/// Words that make a header name a credential's (`X-Auth-Token`,
/// `X-Api-Key`, `X-Session-Id`, `X-Amz-Signature`, STOMP's `passcode`).
const HEADER_WORDS: [&str; 10] = [
    "token",
    "key",
    "apikey",
    "secret",
    "auth",
    "session",
    "signature",
    "cookie",
    "password",
    "passcode",
];

/// Field and parameter names that are secrets whole.
const FIELDS: [&str; 8] = [
    "secret",
    "token",
    "apikey",
    "passwd",
    "api_key",
    "id_token",
    "client_secret",
    "access_token",
];

/// Suffixes that make a field or parameter name a secret's
/// (`refresh_token`, `app_secret`, `signing_key`).
const FIELD_SUFFIXES: [&str; 3] = ["_token", "_secret", "_key"];

/// Words that make a `…_token` name a cursor's (`page_token`,
/// `nextPageToken`, `sync_token`, `continuation_token`), which replay must
/// learn from the answer that handed it out.
const CURSOR_WORDS: [&str; 6] = [
    "page",
    "next",
    "cursor",
    "continuation",
    "sync",
    "pagination",
];

/// Names that look like credentials but are not: replay regenerates
/// idempotency keys, `Sec-WebSocket-Key` is a handshake nonce, and cursors
/// (a bare `_token` too, as paging APIs name theirs) are learned.
fn never(name: &str) -> bool {
    name == "_token"
        || CURSOR_WORDS.iter().any(|w| name.contains(w))
        || name.contains("idempotency")
        || name.starts_with("sec_web")
        || name.ends_with("request_id")
        || name.ends_with("correlation_id")
}

/// `accessToken`, `X-Api-Key`, `api-key` → `access_token`, `x_api_key`,
/// `api_key`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(if c == '-' || c == '.' {
            '_'
        } else {
            c.to_ascii_lowercase()
        });
    }
    out
}

/// Whether a JSON, form or multipart field, or a query parameter, of this
/// name holds a secret: any name with `password` or `passcode` in it,
/// `secret`, `token`,
/// `api_key`, `id_token`, `client_secret`, or one ending in `_token`,
/// `_secret` or `_key` (`refresh_token`, `accessToken`, `apiKey`) — but
/// not an idempotency key.
pub fn is_secret_field(name: &str) -> bool {
    let name = snake(name);
    !never(&name)
        && (name.contains("password")
            || name.contains("passcode")
            || FIELDS.contains(&name.as_str())
            || FIELD_SUFFIXES.iter().any(|s| name.ends_with(s)))
}

/// Whether a header of this name carries a credential: `Authorization`,
/// `Cookie`, `Set-Cookie`, or a name with a word saying token, key,
/// secret, auth, session, signature, cookie, password or passcode in it
/// (`X-Auth-Token`, `X-Api-Key`, `X-Session-Id`) — but not
/// `Idempotency-Key`, `Sec-WebSocket-Key` or a request or correlation id.
pub fn is_credential_header(name: &str) -> bool {
    let name = snake(name);
    if HEADERS.contains(&name.as_str()) {
        return true;
    }
    !never(&name) && name.split('_').any(|w| HEADER_WORDS.contains(&w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_list_names_credentials_and_leaves_nonces_alone() {
        for secret in [
            "password",
            "newPassword",
            "user.password_confirmation",
            "token",
            "access_token",
            "accessToken",
            "refresh_token",
            "id_token",
            "client_secret",
            "apiKey",
            "api-key",
            "signing_key",
            "passcode",
        ] {
            assert!(is_secret_field(secret), "{secret}");
        }
        for plain in [
            "user",
            "idempotency_key",
            "IdempotencyKey",
            "tokens",
            "monkey",
            "keyboard",
        ] {
            assert!(!is_secret_field(plain), "{plain}");
        }
        for header in [
            "Authorization",
            "Cookie",
            "Set-Cookie",
            "X-Api-Key",
            "X-Auth-Token",
            "X-Session-Id",
            "X-Amz-Signature",
            "Api-Key",
            "passcode",
        ] {
            assert!(is_credential_header(header), "{header}");
        }
        for plain in [
            "Idempotency-Key",
            "Sec-WebSocket-Key",
            "X-Request-Id",
            "X-Correlation-Id",
            "Content-Type",
            "Keep-Alive",
            "If-Match",
        ] {
            assert!(!is_credential_header(plain), "{plain}");
        }
    }
}
