//! The only human output: text for the terminal, Markdown for pull
//! requests, self-contained HTML pages with SVG charts. Every function takes
//! report-model values (or capture summaries) and returns a `String`; the
//! binary decides where it goes. Nothing here reads files, judges a number
//! (that is [`super::verdict`] and [`super::compare`]) or changes a report.

pub mod charts;
pub mod html;
pub mod junit;
pub mod markdown;
mod table;
pub mod terminal;
