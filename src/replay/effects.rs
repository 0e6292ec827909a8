//! Reading a profile's `[[effect]]` numbers on the target, before and
//! after each stage: a GET through the replay's own client (so it carries
//! `X-Tapedeck-Replay` and the `--header` overrides), outside every
//! statistic. A reading that fails is reported with the effect, never
//! fatal.

use std::sync::Arc;

use super::engine::Dispatch;
use crate::capture::StoredExchange;
use crate::profile::Effect;

/// Each effect's number now, or why it could not be read.
pub async fn read_all<D: Dispatch>(client: &D, effects: &[Effect]) -> Vec<Result<f64, String>> {
    let mut out = Vec::with_capacity(effects.len());
    for e in effects {
        out.push(read(client, e).await);
    }
    out
}

async fn read<D: Dispatch>(client: &D, e: &Effect) -> Result<f64, String> {
    let request = StoredExchange {
        method: "GET".into(),
        uri: e.url.clone(),
        http_version: "HTTP/1.1".into(),
        request_headers: vec![("accept".into(), "application/json".into())],
        ..StoredExchange::default()
    };
    let sent = client.send(Arc::new(request), None).await;
    let status = sent.success(&e.url)?;
    let json: serde_json::Value = serde_json::from_slice(&sent.body).map_err(|err| {
        format!(
            "GET {} answered {status} without a JSON body ({err})",
            e.url
        )
    })?;
    json.pointer(&e.pointer())
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| format!("GET {}: no number at {}", e.url, e.json_path))
}
