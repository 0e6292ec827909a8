//! `tapedeck replay --explain`: what replay will substitute in each route's
//! requests, and why, read from the capture alone — no traffic is sent.
//! [`explain`] reads the sessions a replay would play from the store;
//! [`Explanation`] is pure: sessions in, a table out.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::correlate::{self, Credentials, Rules};
use super::{ReplayConfig, ReplayError};
use crate::capture::redact::MARKER_PREFIX;
use crate::capture::{Store, StoredExchange};
use crate::route;

/// The explanation of the sessions a replay with `config` would play: its
/// runs, `--sessions`, the profile's rules and the credentials.
///
/// # Errors
/// When the capture cannot be read or the profile's rules do not compile.
pub async fn explain(store: &Store, config: &ReplayConfig) -> Result<Explanation, ReplayError> {
    let runs: Vec<i64> = store
        .select_runs(config.run)
        .await?
        .iter()
        .map(|r| r.id)
        .collect();
    let rules = Rules::compile(&config.profile.rules).map_err(ReplayError::Rules)?;
    let mut explanation = Explanation::with_rules(rules);
    for span in store.session_spans(&runs).await?.0 {
        if !config.plays_session(span.session_no) {
            continue;
        }
        let exchanges = store
            .session_exchanges(span.run_id, span.session_no)
            .await?;
        explanation.add_session(exchanges, &config.credentials);
    }
    Ok(explanation)
}

/// Per route: requests seen, and (where, what happens) → count.
#[derive(Debug, Default)]
pub struct Explanation {
    routes: BTreeMap<String, RoutePlaces>,
    rules: Rules,
}

#[derive(Debug, Default)]
struct RoutePlaces {
    requests: u64,
    /// (place in the request, what happens there) → requests.
    places: BTreeMap<(String, String), u64>,
}

impl Explanation {
    /// An explanation that applies the profile's rules before the
    /// heuristics.
    pub fn with_rules(rules: Rules) -> Explanation {
        Explanation {
            routes: BTreeMap::new(),
            rules,
        }
    }

    /// Adds one recorded session.
    pub fn add_session(&mut self, mut exchanges: Vec<StoredExchange>, credentials: &Credentials) {
        exchanges.iter_mut().for_each(correlate::decode_bodies);
        let exchanges = &exchanges[..];
        let values = correlate::analyze_with(exchanges, credentials);
        // The route of the response that first handed out each value.
        let mut source: HashMap<String, String> = HashMap::new();
        for (i, ex) in exchanges.iter().enumerate() {
            let route = route::normalize(&ex.method, &ex.uri);
            let entry = self.routes.entry(route.clone()).or_default();
            entry.requests += 1;
            let ruled = self.rules.places(&route);
            for (at, what) in &ruled {
                *entry.places.entry((at.clone(), what.clone())).or_insert(0) += 1;
            }
            for (at, v) in correlate::request_values_at(ex) {
                if ruled.iter().any(|(place, _)| *place == at) {
                    continue;
                }
                let from = source.get(&v);
                let what = if v.starts_with(MARKER_PREFIX) {
                    if credentials.markers.contains_key(&v)
                        || values.frame_secrets.contains_key(&v)
                        || values.secrets.get(i).is_some_and(Option::is_some)
                    {
                        "credential, from the credentials file".to_string()
                    } else if let Some(r) = from {
                        format!("credential, learned from the {r} response")
                    } else {
                        "credential with no live source: sent as recorded (see --credentials-file)"
                            .to_string()
                    }
                } else if let Some(r) = from {
                    format!("learned from the {r} response")
                } else if values.nonces.contains(&v) {
                    "nonce, regenerated per world".to_string()
                } else {
                    continue;
                };
                *entry.places.entry((at, what)).or_insert(0) += 1;
            }
            for v in correlate::response_values(ex) {
                source.entry(v).or_insert_with(|| route.clone());
            }
        }
    }

    /// The table: per route, each substituted place and how often.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rules = self.rules.describe();
        if !rules.is_empty() {
            let _ = writeln!(
                out,
                "rules (from the profile; they override the heuristics)"
            );
            for rule in rules {
                let _ = writeln!(out, "  {rule}");
            }
            out.push('\n');
        }
        for (route, RoutePlaces { requests, places }) in &self.routes {
            let _ = writeln!(out, "{route}  ({requests} requests)");
            if places.is_empty() {
                let _ = writeln!(out, "  sent as recorded");
                continue;
            }
            let width = places.keys().map(|(at, _)| at.len()).max().unwrap_or(0);
            for ((at, what), n) in places {
                let _ = writeln!(out, "  {at:<width$}  {what}  ({n})");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::WsFrame;
    use crate::capture::redact::frames::sasl_plain_payload;

    const MARK: &str = "redacted:0123456789abcdef0123456789abcdef";

    fn socket(frames: &[&str]) -> StoredExchange {
        StoredExchange {
            method: "GET".into(),
            uri: "/ws".into(),
            status: Some(101),
            ws_frames: frames
                .iter()
                .map(|data| WsFrame {
                    t_us: 0,
                    dir: "client".into(),
                    op: "text".into(),
                    fin: true,
                    len: data.len() as u64,
                    data: data.to_string(),
                    truncated: false,
                    close_code: None,
                })
                .collect(),
            ..StoredExchange::default()
        }
    }

    #[test]
    fn frame_credentials_are_listed_with_where_their_clear_values_come_from() {
        let sasl = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            sasl_plain_payload("", "alice", MARK)
        );
        let stomp = format!("CONNECT\nlogin:bob\npasscode:{MARK}\n\n\0");
        let sio = format!(r#"40{{"token":"{MARK}"}}"#);
        let creds: Credentials = toml::from_str("[users]\nalice = \"pw\"\n").expect("valid");
        let mut explanation = Explanation::default();
        explanation.add_session(vec![socket(&[&sasl])], &creds);
        explanation.add_session(vec![socket(&[&stomp, &sio])], &creds);
        // Places are padded to one width per route: compare words.
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let table = explanation.render();
        let lines: Vec<String> = table.lines().map(words).collect();
        for expected in [
            "frame 0 sasl password credential, from the credentials file (1)",
            "frame 0 stomp passcode credential with no live source",
            "body frame 1 $.token credential with no live source",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(expected)),
                "{expected:?} not in\n{table}"
            );
        }
    }
}
