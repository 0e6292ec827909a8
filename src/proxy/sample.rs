//! Session sampling (`record --sample`): which sessions a run records.
//!
//! The decision is made once per session, when the session tracker first
//! sees it, from a hash of the session's stored key (the same key the
//! proxy groups requests by), so a session is recorded whole or not at all.
//! Header, bearer and cookie keys are stored as markers keyed with the
//! store's redaction key, which replicas writing one store share: they
//! sample the same users. Nothing here touches requests or the store.

use crate::capture::SessionKeyKind;

/// The share of sessions recorded: a number above 0 and at most 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleFraction(f64);

impl Default for SampleFraction {
    /// Every session.
    fn default() -> Self {
        SampleFraction(1.0)
    }
}

impl SampleFraction {
    /// A fraction of sessions to record.
    ///
    /// # Errors
    /// When `fraction` is not above 0 and at most 1, with the accepted
    /// range in the message.
    pub fn new(fraction: f64) -> Result<Self, String> {
        if fraction > 0.0 && fraction <= 1.0 {
            Ok(SampleFraction(fraction))
        } else {
            Err(format!(
                "{fraction} is not a share of sessions: give a number above 0 and at most 1 \
                 (0.25 records a quarter of the sessions, 1 all of them)"
            ))
        }
    }

    /// The fraction, in (0, 1].
    pub fn get(self) -> f64 {
        self.0
    }

    /// Whether every session is recorded.
    pub fn is_all(self) -> bool {
        self.0 >= 1.0
    }

    /// Whether the session with this stored key is in the sample: the
    /// key's BLAKE3 hash, read as a number in [0, 1), is below the
    /// fraction.
    pub fn keeps(self, kind: SessionKeyKind, key: &str) -> bool {
        if self.is_all() {
            return true;
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(kind.as_str().as_bytes());
        hasher.update(b"\0");
        hasher.update(key.as_bytes());
        let hash = hasher.finalize();
        let mut head = [0u8; 8];
        head.copy_from_slice(&hash.as_bytes()[..8]);
        // The top 53 bits: exactly representable as an f64 in [0, 1).
        let unit = (u64::from_le_bytes(head) >> 11) as f64 / (1u64 << 53) as f64;
        unit < self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_outside_zero_to_one_are_refused() {
        for bad in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            assert!(SampleFraction::new(bad).is_err(), "{bad}");
        }
        assert_eq!(SampleFraction::new(0.25).expect("valid").get(), 0.25);
        assert!(SampleFraction::new(1.0).expect("valid").is_all());
    }

    #[test]
    fn a_key_is_decided_the_same_way_every_time_and_the_share_follows_the_fraction() {
        let quarter = SampleFraction::new(0.25).expect("valid");
        let keys: Vec<String> = (0..4000).map(|i| format!("redacted:{i:032x}")).collect();
        let kept: Vec<bool> = keys
            .iter()
            .map(|k| quarter.keeps(SessionKeyKind::Header, k))
            .collect();
        let again: Vec<bool> = keys
            .iter()
            .map(|k| quarter.keeps(SessionKeyKind::Header, k))
            .collect();
        assert_eq!(kept, again);
        let share = kept.iter().filter(|k| **k).count() as f64 / keys.len() as f64;
        assert!((0.22..0.28).contains(&share), "{share}");
        assert!(
            keys.iter()
                .all(|k| SampleFraction::default().keeps(SessionKeyKind::Header, k))
        );
    }
}
