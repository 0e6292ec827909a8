//! `tapedeck report merge|render`: loads saved reports, merges shard
//! reports into one, or prints a report's tables, Markdown or HTML page.
//! Loading, merging and rendering are the library's.

use super::Exit;
use super::output::write_page;
use crate::cli::report::ReportCommand;
use tapedeck::report::render::{html, markdown, terminal};

/// Runs `tapedeck report …`.
pub async fn run(cmd: ReportCommand) -> anyhow::Result<Exit> {
    match cmd {
        ReportCommand::Merge {
            files,
            output,
            allow_partial,
        } => {
            let mut reports = Vec::new();
            for f in files {
                let r = tapedeck::report::load(&f)?;
                reports.push((f, r));
            }
            let merged = tapedeck::report::merge_shards(&reports, None, allow_partial)?;
            tapedeck::report::save(&merged, &output)?;
            print!("{}", terminal::stages_table(&merged));
            print!("{}", terminal::warnings_text(&merged));
            println!("merged {} reports into {}", reports.len(), output.display());
        }
        ReportCommand::Render {
            file,
            markdown,
            html: page,
        } => {
            let r = tapedeck::report::load(&file)?;
            if let Some(path) = &page {
                write_page(path, html::report_page(&r))?;
                println!("page {}", path.display());
                return Ok(Exit::Success);
            }
            if markdown {
                print!("{}", markdown::report_markdown(&r));
                return Ok(Exit::Success);
            }
            print!("{}", terminal::stages_table(&r));
            println!();
            for s in &r.stages {
                print!("{}", terminal::stage_details(s, 20));
            }
            println!();
            print!("{}", terminal::capacity(&r));
            print!("{}", terminal::warnings_text(&r));
            println!("verdict: {}", r.verdict);
        }
    }
    Ok(Exit::Success)
}
