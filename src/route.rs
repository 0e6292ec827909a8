//! Route templates: `GET /api/conversations/c7Hk2q9x/messages?cursor=…`
//! becomes `GET /api/conversations/{id}/messages`, so statistics group by
//! endpoint. Pure string work; used by `captures show` and the reports.

/// The normalized route of a request: method, path without query, and
/// numeric, UUID and opaque-id segments replaced by `{id}`.
pub fn normalize(method: &str, uri: &str) -> String {
    let path = uri.split(['?', '#']).next().unwrap_or("");
    // Absolute-form targets keep only their path.
    // (An origin-form path may hold `://` itself: `/proxy/https://cdn/x`.)
    let path = match path.find("://") {
        Some(i) if !path.starts_with('/') => {
            path[i + 3..].find('/').map_or("/", |j| &path[i + 3 + j..])
        }
        _ => path,
    };
    let mut out = String::with_capacity(method.len() + path.len() + 1);
    out.push_str(method);
    out.push(' ');
    if path.is_empty() {
        out.push('/');
        return out;
    }
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_id(segment) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
    }
    out
}

/// Whether a path segment looks like an identifier rather than a name.
pub fn is_id(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    // Sigil ids such as `!room:host` or `$event`, raw or percent-encoded.
    if segment.starts_with(['!', '$', '@', '+'])
        || segment.starts_with("%21")
        || segment.starts_with("%24")
        || segment.starts_with("%40")
    {
        return true;
    }
    let bytes = segment.as_bytes();
    if bytes.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(segment) {
        return true;
    }
    let idish = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=' | b'~' | b'%'));
    if !idish {
        return false;
    }
    if prefixed_id(segment) {
        return true;
    }
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    let hex = bytes.iter().all(u8::is_ascii_hexdigit);
    (hex && bytes.len() >= 16)
        || (bytes.len() >= 6 && digits > 0 && digits < bytes.len())
        || (bytes.len() >= 8 && looks_random_case(bytes))
}

/// The `type_randompart` convention (`c_hAwyPnezfkab`, `cus_9s6XKzkN`): a
/// short lower-case prefix, an underscore, then 8+ alphanumerics with mixed
/// case or digits.
fn prefixed_id(s: &str) -> bool {
    let Some((prefix, body)) = s.split_once('_') else {
        return false;
    };
    let b = body.as_bytes();
    (1..=5).contains(&prefix.len())
        && prefix.bytes().all(|c| c.is_ascii_lowercase())
        && b.len() >= 8
        && b.iter().all(u8::is_ascii_alphanumeric)
        && (b.iter().any(u8::is_ascii_digit)
            || (b.iter().any(u8::is_ascii_uppercase) && b.iter().any(u8::is_ascii_lowercase)))
}

/// Random base62 ids mix cases densely (`c_MKjMUdJhJafY`); words and
/// camelCase names (`getMessages`) do not.
fn looks_random_case(b: &[u8]) -> bool {
    let upper = b.iter().filter(|c| c.is_ascii_uppercase()).count();
    let lower = b.iter().filter(|c| c.is_ascii_lowercase()).count();
    upper >= 2 && lower >= 2 && upper * 4 >= upper + lower
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn ids_become_placeholders_and_names_stay() {
        assert_eq!(
            normalize("GET", "/api/conversations/c7Hk2q9x/messages?cursor=abc"),
            "GET /api/conversations/{id}/messages"
        );
        assert_eq!(normalize("GET", "/users/42"), "GET /users/{id}");
        assert_eq!(
            normalize(
                "PUT",
                "/rooms/%21abc%3Ahost/send/m.room.message/txn1700000000"
            ),
            "PUT /rooms/{id}/send/m.room.message/{id}"
        );
        assert_eq!(
            normalize("DELETE", "/x/123e4567-e89b-12d3-a456-426614174000"),
            "DELETE /x/{id}"
        );
        assert_eq!(normalize("GET", "/api/v1/login"), "GET /api/v1/login");
        assert_eq!(
            normalize("GET", "/c/c_MKjMUdJhJafY/getMessages"),
            "GET /c/{id}/getMessages"
        );
        assert_eq!(normalize("GET", ""), "GET /");
        assert_eq!(normalize("GET", "http://h:1/a/99?q"), "GET /a/{id}");
        // Found by the route fuzz target: normalizing again cut the path.
        let once = normalize("GET", "/proxy/https://cdn.example/42/a.png");
        assert_eq!(once, "GET /proxy/https://cdn.example/{id}/a.png");
        assert_eq!(normalize("GET", &once[4..]), once);
    }
}
