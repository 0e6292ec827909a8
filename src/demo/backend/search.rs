//! The demo backend's filter query, `GET
//! /api/messages?filter=(conversation='c_…')&limit=N`: the messages of a
//! conversation (`and author='…'` narrows them to one author), in the order
//! a search index gives equally ranked hits — the same on one backend, a
//! different one on the next — so a replay cannot pair its answer with the
//! recorded one by position.
//!
//! Requests arrive from the router in the backend's face; it only reads the
//! shared state (and counts the query).

use std::hash::{DefaultHasher, Hash, Hasher};

use http::{Response, StatusCode};
use serde_json::json;

use super::body::{Body, error, json_response};
use super::state::{Backend, Message};

/// How the filter must look.
const FILTER_SYNTAX: &str =
    "filter must look like (conversation='ID') or (conversation='ID' and author='NAME')";

impl Backend {
    /// See the module's documentation.
    pub(super) fn search(&self, query: &str) -> Response<Body> {
        let mut filter = None;
        let mut limit = 50usize;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "filter" => filter = Some(query_decode(v)),
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=100).contains(&n) => limit = n,
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "limit must be a number from 1 to 100",
                        );
                    }
                },
                _ => {}
            }
        }
        let Some(terms) = filter.as_deref().and_then(parse_filter) else {
            return error(StatusCode::BAD_REQUEST, FILTER_SYNTAX);
        };
        let term = |name: &str| terms.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let Some(conversation) = term("conversation") else {
            return error(StatusCode::BAD_REQUEST, FILTER_SYNTAX);
        };
        let author = term("author");
        let mut st = self.lock();
        let Some(conv) = st.conversations.get(conversation.as_str()) else {
            return error(StatusCode::NOT_FOUND, "no such conversation");
        };
        let mut hits: Vec<&Message> = conv
            .messages
            .iter()
            .filter(|m| author.is_none_or(|a| m.author == *a))
            .collect();
        let total = hits.len();
        hits.sort_by_key(|m| {
            let mut h = DefaultHasher::new();
            (self.search_seed, &m.id).hash(&mut h);
            h.finish()
        });
        hits.truncate(limit);
        let answer = json!({ "messages": hits, "total": total });
        st.stats.searches += 1;
        json_response(StatusCode::OK, &answer)
    }
}

/// `(name='value' and name='value')` as its terms; `None` when it is not
/// that shape or names a field the query does not know.
fn parse_filter(filter: &str) -> Option<Vec<(String, String)>> {
    let inner = filter.trim().strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(" and ")
        .map(|term| {
            let (name, value) = term.trim().split_once('=')?;
            let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
            let name = name.trim();
            (matches!(name, "conversation" | "author") && !value.contains('\''))
                .then(|| (name.to_string(), value.to_string()))
        })
        .collect()
}

/// A query value percent-decoded, `+` read as a space.
fn query_decode(v: &str) -> String {
    percent_encoding::percent_decode_str(&v.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}
