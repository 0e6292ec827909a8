//! The capacity search (`--find-capacity`, a profile's `[search]`): which
//! multiplier to try next, given the stages run so far. Pure: replay runs
//! each step as a stage and tells the result back.
//!
//! Doubling from `start` (1, 2, 4, … capped at `max_multiplier`) until a
//! stage fails; then bisection between the highest stage that passed and
//! the lowest that failed, until they are `resolution` apart. A failure
//! at the start bisects down towards 1.

use crate::profile::Search;
use crate::report::model::{SearchReport, SearchStep};

/// A search in progress.
#[derive(Debug, Clone)]
pub struct CapacitySearch {
    settings: Search,
    steps: Vec<SearchStep>,
    /// Highest multiplier that passed.
    safe: Option<u32>,
    /// Lowest multiplier that failed.
    failing: Option<u32>,
}

impl CapacitySearch {
    /// A search with nothing run yet.
    pub fn new(settings: Search) -> Self {
        CapacitySearch {
            settings,
            steps: Vec::new(),
            safe: None,
            failing: None,
        }
    }

    /// The multiplier to run next, and the phase it belongs to; `None`
    /// when the search is over.
    pub fn next(&self) -> Option<(u32, &'static str)> {
        let Search {
            start,
            max_multiplier: max,
            resolution,
        } = self.settings;
        match (self.safe, self.failing) {
            (None, None) => Some((start, "doubling")),
            (Some(safe), None) if safe >= max => None,
            (Some(safe), None) => Some((safe.saturating_mul(2).min(max), "doubling")),
            (safe, Some(failing)) => {
                let low = safe.unwrap_or(0);
                let mid = low + (failing - low) / 2;
                (failing - low > resolution && mid >= 1 && mid != failing && mid != low)
                    .then_some((mid, "bisection"))
            }
        }
    }

    /// Records how the stage at `multiplier` went.
    pub fn record(&mut self, multiplier: u32, phase: &'static str, pass: bool) {
        self.steps.push(SearchStep {
            multiplier,
            phase: phase.to_string(),
            pass,
        });
        if pass {
            self.safe = Some(self.safe.map_or(multiplier, |s| s.max(multiplier)));
        } else {
            self.failing = Some(self.failing.map_or(multiplier, |f| f.min(multiplier)));
        }
    }

    /// What the search found, for the report; `interrupted` when a stop
    /// signal ended it early (a step the safety limit stopped is a failed
    /// step, and the search goes on).
    pub fn report(&self, interrupted: bool) -> SearchReport {
        let outcome = if interrupted {
            "interrupted"
        } else if self.safe.is_none() {
            "fails_at_start"
        } else if self.failing.is_none() {
            "max_reached"
        } else {
            "found"
        };
        SearchReport {
            start: self.settings.start,
            max_multiplier: self.settings.max_multiplier,
            resolution: self.settings.resolution,
            steps: self.steps.clone(),
            safe_multiplier: self.safe,
            failing_multiplier: self.failing,
            outcome: outcome.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a backend whose capacity is `knee` (a stage
    /// passes at or below it): the multipliers tried, in order.
    fn run(settings: Search, knee: u32) -> (Vec<u32>, SearchReport) {
        let mut search = CapacitySearch::new(settings);
        let mut tried = Vec::new();
        while let Some((m, phase)) = search.next() {
            assert!(tried.len() < 64, "the search ends: {tried:?}");
            tried.push(m);
            search.record(m, phase, m <= knee);
        }
        (tried, search.report(false))
    }

    fn settings(start: u32, max: u32, resolution: u32) -> Search {
        Search {
            start,
            max_multiplier: max,
            resolution,
        }
    }

    #[test]
    fn doubling_then_bisection_ends_one_apart() {
        let (tried, report) = run(settings(1, 64, 1), 11);
        assert_eq!(tried, [1, 2, 4, 8, 16, 12, 10, 11]);
        assert_eq!(
            (report.safe_multiplier, report.failing_multiplier),
            (Some(11), Some(12))
        );
        assert_eq!(report.outcome, "found");
        let phases: Vec<&str> = report.steps.iter().map(|s| s.phase.as_str()).collect();
        assert_eq!(phases[..5], ["doubling"; 5]);
        assert_eq!(phases[5..], ["bisection"; 3]);
    }

    #[test]
    fn a_coarser_resolution_stops_earlier() {
        let (tried, report) = run(settings(1, 64, 4), 11);
        assert_eq!(tried, [1, 2, 4, 8, 16, 12]);
        assert_eq!(
            (report.safe_multiplier, report.failing_multiplier),
            (Some(8), Some(12))
        );
    }

    #[test]
    fn the_maximum_caps_doubling_and_ends_a_search_that_never_fails() {
        let (tried, report) = run(settings(1, 20, 1), 1000);
        assert_eq!(tried, [1, 2, 4, 8, 16, 20]);
        assert_eq!(report.outcome, "max_reached");
        assert_eq!(report.safe_multiplier, Some(20));
    }

    #[test]
    fn a_failing_start_bisects_down_and_a_failing_1x_ends_it() {
        let (tried, report) = run(settings(8, 64, 1), 2);
        assert_eq!(tried, [8, 4, 2, 3]);
        assert_eq!(
            (report.safe_multiplier, report.failing_multiplier),
            (Some(2), Some(3))
        );
        let (tried, report) = run(settings(1, 64, 1), 0);
        assert_eq!(tried, [1]);
        assert_eq!(report.outcome, "fails_at_start");
    }
}
