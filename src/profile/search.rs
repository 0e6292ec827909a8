//! The `[search]` table (or `replay --find-capacity`): find the highest
//! multiplier that meets every SLO, by doubling then bisection. Parsed and
//! checked here; replay runs it.

use serde::Deserialize;

use super::MAX_MULTIPLIER;

/// Where the search starts, how far it goes, how fine it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// The first multiplier tried.
    #[serde(default = "one")]
    pub start: u32,
    /// The highest multiplier tried.
    #[serde(default = "default_max")]
    pub max_multiplier: u32,
    /// Bisection stops when the safe and the failing multiplier are this
    /// close.
    #[serde(default = "one")]
    pub resolution: u32,
}

fn one() -> u32 {
    1
}

fn default_max() -> u32 {
    DEFAULT_MAX
}

/// `max_multiplier` when neither the profile nor `--max-multiplier` sets
/// one.
pub const DEFAULT_MAX: u32 = 64;

impl Default for Search {
    fn default() -> Self {
        Search {
            start: 1,
            max_multiplier: DEFAULT_MAX,
            resolution: 1,
        }
    }
}

impl Search {
    /// Checks the ranges.
    ///
    /// # Errors
    /// A message naming the key and the fix.
    pub fn check(&self) -> Result<(), String> {
        if self.start == 0 {
            return Err("search.start = 0: use 1 or more".into());
        }
        if self.max_multiplier < self.start || self.max_multiplier > MAX_MULTIPLIER {
            return Err(format!(
                "search.max_multiplier = {}: use a number from search.start ({}) to \
                 {MAX_MULTIPLIER}",
                self.max_multiplier, self.start
            ));
        }
        if self.resolution == 0 {
            return Err("search.resolution = 0: use 1 or more".into());
        }
        Ok(())
    }
}
