//! `tapedeck compare`: loads a base and a candidate report (every histogram
//! checked), refuses two with no stage in common, warns once per caveat
//! (other captures, a partial merge), compares them with the `--threshold`
//! rules, writes the JSON and HTML asked for and prints the comparison.
//! Comparing and rendering are the library's.

use anyhow::Context;

use super::output::write_page;
use super::{Exit, LOG_TARGET};
use crate::cli::report::CompareArgs;
use tapedeck::report::compare::{self, Thresholds};
use tapedeck::report::render::{html, junit, markdown, terminal};

/// Runs `tapedeck compare`: [`Exit::Failed`] on a regression.
pub fn run(args: CompareArgs) -> anyhow::Result<Exit> {
    let thresholds = Thresholds::parse(&args.threshold)
        .map_err(anyhow::Error::msg)
        .context("--threshold")?;
    let base = tapedeck::report::load(&args.base)?;
    let candidate = tapedeck::report::load(&args.candidate)?;
    tapedeck::report::comparable(&args.base, &base, &args.candidate, &candidate)?;
    for caveat in tapedeck::report::comparison_caveats(&base, &candidate) {
        tracing::warn!(target: LOG_TARGET, "{caveat}");
    }
    let diff = compare::compare(&base, &candidate, &thresholds);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&diff)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        write_page(path, html::compare_page(&base, &candidate, &diff))?;
    }
    if let Some(path) = &args.junit {
        write_page(path, Ok(junit::comparison_junit(&diff)))?;
    }
    if args.markdown {
        print!("{}", markdown::comparison_markdown(&diff));
    } else {
        print!("{}", terminal::comparison(&diff, 10));
    }
    Ok(if diff.regression {
        Exit::Failed
    } else {
        Exit::Success
    })
}
