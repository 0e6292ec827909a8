//! The replay plan: pure arithmetic, no clock and no I/O.
//!
//! Multiplier N plays N copies ("worlds") of the recorded population. A
//! virtual user (VU) is one recorded session in one world. World 0 plays
//! the recording as it was; world k plays it shifted by a phase
//! `(k + u_k) / N` of its span (u_k from the seed), so N worlds arrive at N
//! times the recorded rate without synchronized bursts. A world keeps the
//! recording's order whole — a room one user created exists before the
//! other users of that world post to it — so a one-pass stage lasts up to
//! twice the recording. Speed S divides every offset. With a duration and
//! `loop`, each world's passes repeat back to back until the duration is
//! filled.
//! VUs come out of [`VuSchedule`] in start order, lazily: the plan is never
//! materialized whole.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::capture::SessionSpan;

/// One virtual user to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedVu {
    /// Planned start, from the stage origin.
    pub start: Duration,
    /// World number, from 0.
    pub world: u32,
    /// Pass over the capture, from 0 (loops).
    pub pass: u32,
    /// Index into the session list.
    pub session: usize,
}

/// A deterministic number in [0, 1) from a seed and an index (SplitMix64).
pub fn unit(seed: u64, index: u64) -> f64 {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Where world `world` of `multiplier` starts in a recording of `span`.
pub fn world_phase(seed: u64, world: u32, multiplier: u32, span: Duration) -> Duration {
    if world == 0 || multiplier <= 1 {
        return Duration::ZERO;
    }
    let frac = (f64::from(world) + unit(seed, u64::from(world))) / f64::from(multiplier);
    span.mul_f64(frac.min(0.999_999))
}

/// Scales a recorded offset by the speed.
pub fn scaled(offset_us: i64, speed: f64) -> Duration {
    Duration::from_micros(offset_us.max(0) as u64).div_f64(speed)
}

/// Yields the VUs of a stage in start order.
#[derive(Debug)]
pub struct VuSchedule<'a> {
    sessions: &'a [SessionSpan],
    speed: f64,
    cycle: Duration,
    phases: Vec<Duration>,
    limit: Option<Duration>,
    repeat: bool,
    /// (start, world, pass, position in `order`)
    heap: BinaryHeap<Reverse<(Duration, u32, u32, usize)>>,
    /// Session indexes sorted by first offset.
    order: Vec<usize>,
    /// Per world: how far into `order` it has gone in its current pass.
    started: Vec<usize>,
}

impl<'a> VuSchedule<'a> {
    /// The schedule of a stage. `span_us` is the recording's length (first
    /// request to last response end); `limit` the stage duration, if any.
    pub fn new(
        sessions: &'a [SessionSpan],
        span_us: i64,
        multiplier: u32,
        speed: f64,
        seed: u64,
        limit: Option<Duration>,
        repeat: bool,
    ) -> Self {
        let span = scaled(span_us.max(1), speed);
        let mut order: Vec<usize> = (0..sessions.len()).collect();
        order.sort_by_key(|&i| {
            let s = &sessions[i];
            (s.first_offset_us, s.run_id, s.session_no)
        });
        let phases: Vec<Duration> = (0..multiplier)
            .map(|w| world_phase(seed, w, multiplier, span))
            .collect();
        let mut this = VuSchedule {
            sessions,
            speed,
            // One pass takes the recording's span; the next starts right after.
            cycle: span,
            phases,
            limit,
            repeat,
            heap: BinaryHeap::new(),
            order,
            started: vec![0; multiplier as usize],
        };
        if !this.order.is_empty() {
            for w in 0..multiplier {
                this.push_next(w, 0);
            }
        }
        this
    }

    /// Start of the `pos`-th session (in recorded order) of a world's pass.
    fn start_of(&self, world: u32, pass: u32, pos: usize) -> Duration {
        let s = &self.sessions[self.order[pos]];
        self.phases[world as usize] + self.cycle * pass + scaled(s.first_offset_us, self.speed)
    }

    fn push_next(&mut self, world: u32, pass: u32) {
        let pos = self.started[world as usize];
        let (pos, pass) = if pos >= self.order.len() {
            if !self.repeat {
                return;
            }
            self.started[world as usize] = 0;
            (0, pass + 1)
        } else {
            (pos, pass)
        };
        let start = self.start_of(world, pass, pos);
        if self.limit.is_some_and(|l| start >= l) {
            return;
        }
        self.heap.push(Reverse((start, world, pass, pos)));
    }
}

impl Iterator for VuSchedule<'_> {
    type Item = PlannedVu;

    fn next(&mut self) -> Option<PlannedVu> {
        let Reverse((start, world, pass, pos)) = self.heap.pop()?;
        let session = self.order[pos];
        self.started[world as usize] = pos + 1;
        self.push_next(world, pass);
        Some(PlannedVu {
            start,
            world,
            pass,
            session,
        })
    }
}

/// One request of a VU: when it is due and what it must wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    /// Due time relative to the VU's start.
    pub due: Duration,
    /// Earlier requests of the VU (indexes) whose responses had ended before
    /// this one started in the recording.
    pub after: Vec<usize>,
}

/// Due times and happens-before edges of a session's requests, given their
/// recorded `(offset_us, duration_us)` in send order. Only the edges that
/// matter are kept: a request waits for the latest-ending earlier requests
/// not already covered by another wait.
pub fn requests(recorded: &[(i64, i64)], speed: f64) -> Vec<PlannedRequest> {
    let Some(&(first, _)) = recorded.first() else {
        return Vec::new();
    };
    let mut out: Vec<PlannedRequest> = Vec::with_capacity(recorded.len());
    // Requests whose end we have not yet waited for.
    let mut open: Vec<usize> = Vec::new();
    for (j, &(start, _)) in recorded.iter().enumerate() {
        let (done, still): (Vec<usize>, Vec<usize>) = open
            .iter()
            .partition(|&&i| recorded[i].0 + recorded[i].1 <= start);
        open = still;
        out.push(PlannedRequest {
            due: scaled(start - first, speed),
            after: done,
        });
        open.push(j);
    }
    out
}

/// Which VUs a shard plays: whole VUs, each (in plan order) to the shard
/// with the fewest planned requests so far, the lowest index on a tie.
/// Every shard derives the same plan from the same seed, so every shard
/// makes the same split, and the shards' requests differ by at most one
/// session's.
#[derive(Debug)]
pub struct ShardSplit {
    index: usize,
    planned: Vec<u64>,
}

impl ShardSplit {
    /// The split for shard `index` (from 0) of `count`.
    pub fn new((index, count): (u32, u32)) -> ShardSplit {
        ShardSplit {
            index: index as usize,
            planned: vec![0; count.max(1) as usize],
        }
    }

    /// Assigns the next VU (with `requests` planned); whether it is ours.
    pub fn mine(&mut self, requests: u64) -> bool {
        let (to, _) = self
            .planned
            .iter()
            .enumerate()
            .min_by_key(|(i, n)| (**n, *i))
            .unwrap_or((0, &0));
        if let Some(n) = self.planned.get_mut(to) {
            *n += requests;
        }
        to == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(offsets: &[i64]) -> Vec<SessionSpan> {
        offsets
            .iter()
            .enumerate()
            .map(|(i, &o)| SessionSpan {
                run_id: 1,
                session_no: i as i64 + 1,
                first_offset_us: o,
                requests: 1,
            })
            .collect()
    }

    #[test]
    fn one_world_plays_the_recording_as_it_was_and_speed_halves_it() {
        let s = spans(&[0, 200_000, 700_000]);
        let starts: Vec<Duration> = VuSchedule::new(&s, 1_000_000, 1, 1.0, 7, None, false)
            .map(|v| v.start)
            .collect();
        assert_eq!(starts, [0, 200, 700].map(Duration::from_millis));
        let fast: Vec<Duration> = VuSchedule::new(&s, 1_000_000, 1, 2.0, 7, None, false)
            .map(|v| v.start)
            .collect();
        assert_eq!(fast, [0, 100, 350].map(Duration::from_millis));
    }

    #[test]
    fn five_worlds_of_ten_sessions_are_fifty_spread_vus() {
        let s = spans(&(0..10).map(|i| i * 100_000).collect::<Vec<_>>());
        let vus: Vec<PlannedVu> = VuSchedule::new(&s, 1_000_000, 5, 1.0, 42, None, false).collect();
        assert_eq!(vus.len(), 50);
        for w in 0..5 {
            let mut sessions: Vec<usize> = vus
                .iter()
                .filter(|v| v.world == w)
                .map(|v| v.session)
                .collect();
            sessions.sort_unstable();
            assert_eq!(
                sessions,
                (0..10).collect::<Vec<_>>(),
                "world {w} plays every session once"
            );
        }
        // In start order, and no two clones of a session at one instant.
        assert!(vus.windows(2).all(|p| p[0].start <= p[1].start));
        for session in 0..10 {
            let mut starts: Vec<Duration> = vus
                .iter()
                .filter(|v| v.session == session)
                .map(|v| v.start)
                .collect();
            starts.dedup();
            assert_eq!(starts.len(), 5, "session {session} clones start apart");
        }
        // Each world keeps the recorded order; the stage ends within two spans.
        for w in 0..5 {
            let order: Vec<usize> = vus
                .iter()
                .filter(|v| v.world == w)
                .map(|v| v.session)
                .collect();
            assert_eq!(
                order,
                (0..10).collect::<Vec<_>>(),
                "world {w} plays sessions in recorded order"
            );
        }
        assert!(vus.iter().all(|v| v.start < Duration::from_secs(2)));
        // Deterministic for a seed, different for another.
        let again: Vec<PlannedVu> =
            VuSchedule::new(&s, 1_000_000, 5, 1.0, 42, None, false).collect();
        assert_eq!(vus, again);
        let other: Vec<PlannedVu> =
            VuSchedule::new(&s, 1_000_000, 5, 1.0, 43, None, false).collect();
        assert_ne!(vus, other);
    }

    #[test]
    fn loop_fills_the_duration_with_passes() {
        let s = spans(&[0, 500_000]);
        let vus: Vec<PlannedVu> = VuSchedule::new(
            &s,
            1_000_000,
            1,
            1.0,
            1,
            Some(Duration::from_millis(3200)),
            true,
        )
        .collect();
        let starts: Vec<u128> = vus.iter().map(|v| v.start.as_millis()).collect();
        assert_eq!(starts, [0, 500, 1000, 1500, 2000, 2500, 3000]);
        assert_eq!(vus.last().map(|v| v.pass), Some(3));
        let once: Vec<PlannedVu> = VuSchedule::new(
            &s,
            1_000_000,
            1,
            1.0,
            1,
            Some(Duration::from_millis(300)),
            false,
        )
        .collect();
        assert_eq!(
            once.len(),
            1,
            "without loop, the duration only cuts the pass"
        );
    }

    #[test]
    fn sequential_requests_wait_and_overlapping_ones_do_not() {
        // 0: 0..100ms; 1 starts at 50ms (overlaps 0); 2 starts at 300ms after
        // both ended; 3 at 300ms too (overlaps 2).
        let rec = [
            (0, 100_000),
            (50_000, 100_000),
            (300_000, 400_000),
            (300_000, 10_000),
        ];
        let plan = requests(&rec, 1.0);
        assert_eq!(
            plan[0],
            PlannedRequest {
                due: Duration::ZERO,
                after: vec![]
            }
        );
        assert_eq!(
            plan[1],
            PlannedRequest {
                due: Duration::from_millis(50),
                after: vec![]
            }
        );
        assert_eq!(
            plan[2],
            PlannedRequest {
                due: Duration::from_millis(300),
                after: vec![0, 1]
            }
        );
        assert_eq!(
            plan[3],
            PlannedRequest {
                due: Duration::from_millis(300),
                after: vec![]
            }
        );
        let gaps = requests(&[(0, 1), (200_000, 1), (700_000, 1)], 2.0);
        let dues: Vec<Duration> = gaps.iter().map(|p| p.due).collect();
        assert_eq!(
            dues,
            [0, 100, 350].map(Duration::from_millis),
            "speed 2 halves the gaps exactly"
        );
    }

    #[test]
    fn shards_take_whole_vus_balanced_by_planned_requests() {
        // A skewed population: one long session among short ones.
        let vus: Vec<u64> = (0..40)
            .map(|k| if k % 13 == 0 { 60 } else { 1 + k % 7 })
            .collect();
        let count = 3;
        let mut owner = vec![None; vus.len()];
        let mut load = vec![0u64; count];
        for (index, load) in load.iter_mut().enumerate() {
            let mut split = ShardSplit::new((index as u32, count as u32));
            for (k, requests) in vus.iter().enumerate() {
                if split.mine(*requests) {
                    assert_eq!(owner[k], None, "VU {k} in two shards");
                    owner[k] = Some(index);
                    *load += requests;
                }
            }
        }
        assert!(owner.iter().all(Option::is_some), "every VU has a shard");
        assert_eq!(load.iter().sum::<u64>(), vus.iter().sum::<u64>());
        let spread = load.iter().max().unwrap_or(&0) - load.iter().min().unwrap_or(&0);
        assert!(spread <= 60, "loads {load:?}");
    }
}
