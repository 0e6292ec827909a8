//! `replay --token-file`: live bearer tokens given to the recorded
//! credentials. Reads which credentials the chosen runs used (through
//! `capture::Store`) and returns the credentials a replay runs with; sends
//! nothing and touches no other part of the replay.

use super::ReplayError;
use super::correlate::Credentials;
use crate::capture::{RunChoice, Store};

/// `credentials` with each distinct credential recorded in `run`'s
/// requests, in first-seen order, mapped to the next of `tokens`: the Nth
/// credential gets the Nth token. With fewer tokens than credentials, the
/// tokens are reused in turn, and a warning says so. No tokens: an
/// unchanged copy, and the capture is not read.
///
/// # Errors
/// When the capture cannot be read.
pub async fn assign_tokens(
    store: &Store,
    run: RunChoice,
    tokens: &[String],
    credentials: &Credentials,
) -> Result<Credentials, ReplayError> {
    let mut assigned = credentials.clone();
    if tokens.is_empty() {
        return Ok(assigned);
    }
    let mut recorded: Vec<String> = Vec::new();
    for run in store.select_runs(run).await? {
        for credential in store.credentials_in_order(run.id).await? {
            if !recorded.contains(&credential) {
                recorded.push(credential);
            }
        }
    }
    if recorded.len() > tokens.len() {
        // The binary's target, as when the binary itself assigned tokens:
        // log filters and readers of the line see no change.
        tracing::warn!(
            target: "tapedeck",
            credentials = recorded.len(),
            tokens = tokens.len(),
            "fewer tokens than recorded credentials: tokens are reused in turn"
        );
    }
    for (i, credential) in recorded.into_iter().enumerate() {
        let token = tokens[i % tokens.len()].clone();
        assigned.markers.insert(credential, token);
    }
    Ok(assigned)
}
