//! The checker behind the architecture test: judges what [`source`]
//! read from a package's src/ against the rules (no import cycle between
//! files or top-level modules, no file over [`MAX_LINES`] outside tests).
//!
//! Input: a package directory. Output: a list of [`Violation`]s, each of
//! which prints the problem, the evidence (file:line of every path that
//! makes an arrow) and the fix.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::path::Path;

use super::source::{self, Arrow};

/// Longest a file of src/ may be, in lines outside test code.
pub const MAX_LINES: usize = 600;

/// Checks the package in `package`: the violations found, none when its
/// src/ keeps the rules.
pub fn check(package: &Path) -> Vec<Violation> {
    let source = source::read(package);

    // Arrows between top-level modules: each arrow mapped to the modules of
    // its two ends; the crate roots belong to none, so main.rs (and lib.rs)
    // may import anything.
    let top_level: HashMap<&str, &str> = source
        .files
        .iter()
        .filter_map(|f| Some((f.path.as_str(), f.top_level.as_deref()?)))
        .collect();
    let between_modules = source.arrows.iter().filter_map(|a| {
        let from = top_level.get(a.from.as_str())?;
        let to = top_level.get(a.to.as_str())?;
        (from != to).then(|| (from.to_string(), to.to_string(), a.clone()))
    });
    let between_files = source
        .arrows
        .iter()
        .map(|a| (a.from.clone(), a.to.clone(), a.clone()));

    let unreadable = source.unreadable.into_iter().map(|u| Violation::Unchecked {
        file: u.file,
        reason: u.reason,
    });
    let long_files = source
        .files
        .iter()
        .filter(|f| f.lines > MAX_LINES)
        .map(|f| Violation::LongFile {
            file: f.path.clone(),
            lines: f.lines,
        });
    let mut violations: Vec<Violation> = unreadable.collect();
    violations.extend(
        tangles(between_modules)
            .into_iter()
            .map(Violation::ModuleCycle),
    );
    violations.extend(tangles(between_files).into_iter().map(Violation::FileCycle));
    violations.extend(long_files);
    violations
}

/// One rule broken, with what a reader needs to mend it.
#[derive(Debug)]
pub enum Violation {
    /// Top-level modules that reach each other through their files' arrows.
    ModuleCycle(Tangle),
    /// Files that reach each other through their arrows.
    FileCycle(Tangle),
    /// A file longer than [`MAX_LINES`] outside test code.
    LongFile {
        /// Its path, e.g. `src/demo/backend.rs`.
        file: String,
        /// Its lines outside test code.
        lines: usize,
    },
    /// A file the checker could not read, so the verdict is incomplete.
    Unchecked {
        /// Its path, or the path of the file whose `mod` names it.
        file: String,
        /// What went wrong.
        reason: String,
    },
}

/// Nodes (files or top-level modules) that all reach each other, and the
/// arrows among them.
#[derive(Debug)]
pub struct Tangle {
    /// The nodes, sorted.
    pub members: Vec<String>,
    /// One shortest cycle through them, its first node repeated at the end.
    pub cycle: Vec<String>,
    /// Every arrow from one member to another, grouped by (from, to).
    pub arrows: BTreeMap<(String, String), Vec<Arrow>>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::ModuleCycle(tangle) => {
                writeln!(
                    f,
                    "import cycle between top-level modules {}: {}",
                    tangle.members.join(", "),
                    tangle.cycle.join(" -> "),
                )?;
                writeln!(
                    f,
                    "fix: top-level modules depend one way (main/commands -> cli -> \
                     {{proxy, replay, report, capture, demo}} -> leaves); move what the \
                     lower module takes from the higher one down into it or into a leaf, \
                     so that one direction of the arrows below disappears.",
                )?;
                tangle.fmt_arrows(f, true)
            }
            Violation::FileCycle(tangle) => {
                writeln!(
                    f,
                    "import cycle between files {}: {}",
                    tangle.members.join(", "),
                    tangle.cycle.join(" -> "),
                )?;
                writeln!(
                    f,
                    "fix: make the arrows point one way; move what one side takes from the \
                     other into it or into a new leaf file both import (a mod.rs whose \
                     children use `super::…` must not use `self::child::…` or \
                     `crate::…::child` itself; `pub use child::X;` is fine).",
                )?;
                tangle.fmt_arrows(f, false)
            }
            Violation::LongFile { file, lines } => write!(
                f,
                "{file} is {lines} lines long outside test code (limit {MAX_LINES}): \
                 split it along its parts, one concern per file.",
            ),
            Violation::Unchecked { file, reason } => {
                write!(f, "could not check {file}: {reason}")
            }
        }
    }
}

impl Tangle {
    /// Lists the arrows, one group per (from, to) pair; `with_target` adds
    /// each path's target file (useful when the nodes are modules).
    fn fmt_arrows(&self, f: &mut fmt::Formatter<'_>, with_target: bool) -> fmt::Result {
        for ((from, to), arrows) in &self.arrows {
            writeln!(f, "  {from} -> {to}:")?;
            for arrow in arrows {
                write!(f, "    {}:{}  {}", arrow.from, arrow.line, arrow.path)?;
                if with_target {
                    write!(f, "  ({})", arrow.to)?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// Groups arrows between nodes into tangles: sets of nodes that all reach
/// each other (the strongly connected components of more than one node).
/// Each arrow comes as (from node, to node, the arrow).
fn tangles(arrows: impl Iterator<Item = (String, String, Arrow)>) -> Vec<Tangle> {
    let mut by_edge: BTreeMap<(String, String), Vec<Arrow>> = BTreeMap::new();
    for (from, to, arrow) in arrows {
        by_edge.entry((from, to)).or_default().push(arrow);
    }
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in by_edge.keys() {
        next.entry(from).or_default().insert(to);
    }
    // The graphs are small (tens of nodes), so plain reachability from
    // every node is clear and fast enough.
    let reach: BTreeMap<&str, BTreeSet<&str>> =
        next.keys().map(|&n| (n, reachable(&next, n))).collect();
    let mut placed = BTreeSet::new();
    let mut found = Vec::new();
    for (&node, from_node) in &reach {
        if placed.contains(node) || !from_node.contains(node) {
            continue;
        }
        let members: BTreeSet<&str> = from_node
            .iter()
            .copied()
            .filter(|m| reach.get(m).is_some_and(|r| r.contains(node)))
            .collect();
        placed.extend(members.iter().copied());
        let arrows = by_edge
            .iter()
            .filter(|((from, to), _)| {
                members.contains(from.as_str()) && members.contains(to.as_str())
            })
            .map(|(edge, arrows)| (edge.clone(), arrows.clone()))
            .collect();
        found.push(Tangle {
            cycle: shortest_cycle(&next, node, &members),
            members: members.iter().map(|m| m.to_string()).collect(),
            arrows,
        });
    }
    found
}

/// The nodes reachable from `start` through one arrow or more.
fn reachable<'a>(next: &BTreeMap<&'a str, BTreeSet<&'a str>>, start: &'a str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start];
    while let Some(node) = todo.pop() {
        for &n in next.get(node).into_iter().flatten() {
            if seen.insert(n) {
                todo.push(n);
            }
        }
    }
    seen
}

/// A shortest cycle from `start` back to it inside `members`, found
/// breadth-first; it ends with `start` again.
fn shortest_cycle(
    next: &BTreeMap<&str, BTreeSet<&str>>,
    start: &str,
    members: &BTreeSet<&str>,
) -> Vec<String> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut todo = VecDeque::from([start]);
    while let Some(node) = todo.pop_front() {
        for &n in next.get(node).into_iter().flatten() {
            if n == start {
                let mut cycle = vec![start.to_string()];
                let mut at = node;
                while at != start {
                    cycle.push(at.to_string());
                    at = came_from[at];
                }
                cycle.push(start.to_string());
                cycle.reverse();
                return cycle;
            }
            if members.contains(n) && !came_from.contains_key(n) {
                came_from.insert(n, node);
                todo.push_back(n);
            }
        }
    }
    // `start` is a member of a tangle, so it reaches itself.
    vec![start.to_string()]
}
