//! The JSON walking under `read`: a struson pull reader with checks
//! that name the field. Each helper checks the type first, so a wrong one
//! is an error naming the field (never a struson panic), and consumes
//! exactly one value; strings are read as streams and kept only up to a
//! bound.

use std::fs::File;
use std::io::{BufReader, Read};

use struson::reader::{JsonReader, JsonStreamReader, ReaderError, SyntaxErrorKind, ValueType};

/// Longest string outside bodies and WebSocket messages (a URL, a header
/// value): a longer one is refused, not held.
pub const MAX_SHORT: usize = 1024 * 1024;

/// The pull reader over a HAR file.
pub(super) struct Walker {
    pub(super) json: JsonStreamReader<BufReader<File>>,
}

/// An error inside an entry, before the file's path is known to it.
pub(super) struct Problem {
    pub(super) field: String,
    pub(super) problem: String,
}

pub(super) type Found<T> = Result<T, Problem>;

pub(super) fn problem(field: &str, problem: impl Into<String>) -> Problem {
    Problem {
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// A reader error at `field`: a type found where another was expected, or
/// JSON broken or cut short (struson names the line and column).
pub(super) fn broken(field: &str, e: ReaderError) -> Problem {
    let cut = match &e {
        ReaderError::IoError { error, .. } => cut_short(error),
        ReaderError::SyntaxError(s) => s.kind == SyntaxErrorKind::IncompleteDocument,
        _ => false,
    };
    problem(field, describe(cut, &e))
}

/// What went wrong reading JSON: the file cut short, or malformed.
fn describe(cut: bool, e: &dyn std::fmt::Display) -> String {
    match cut {
        true => format!("the file ends inside this entry (truncated?): {e}"),
        false => format!("malformed JSON: {e}"),
    }
}

/// Whether a read error is the file ending early. A string reader's
/// syntax error comes wrapped in an `io::Error`: its kind is read from
/// the wrapped reader error (or its text).
fn cut_short(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::UnexpectedEof
        || e.get_ref()
            .is_some_and(|inner| match inner.downcast_ref::<ReaderError>() {
                Some(ReaderError::SyntaxError(s)) => s.kind == SyntaxErrorKind::IncompleteDocument,
                Some(ReaderError::IoError { error, .. }) => {
                    error.kind() == std::io::ErrorKind::UnexpectedEof
                }
                _ => inner.to_string().contains("IncompleteDocument"),
            })
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Array => "an array",
        ValueType::Object => "an object",
        ValueType::String => "a string",
        ValueType::Number => "a number",
        ValueType::Boolean => "a boolean",
        ValueType::Null => "null",
    }
}

impl Walker {
    // The walking helpers: each checks the type first, so a wrong one is
    // an error naming the field (never a struson panic), and consumes
    // exactly one value.

    pub(super) fn peek(&mut self, field: &str) -> Found<ValueType> {
        self.json.peek().map_err(|e| broken(field, e))
    }

    pub(super) fn expect(&mut self, field: &str, want: ValueType) -> Found<()> {
        match self.peek(field)? {
            t if t == want => Ok(()),
            t => Err(problem(
                field,
                format!("expected {}, found {}", type_name(want), type_name(t)),
            )),
        }
    }

    pub(super) fn name(&mut self, field: &str) -> Found<String> {
        self.json.next_name_owned().map_err(|e| broken(field, e))
    }

    pub(super) fn skip(&mut self, field: &str) -> Found<()> {
        self.json.skip_value().map_err(|e| broken(field, e))
    }

    /// A string of at most [`MAX_SHORT`] bytes.
    pub(super) fn short(&mut self, field: &str) -> Found<String> {
        self.expect(field, ValueType::String)?;
        let (kept, len, _) = self.streamed(field, MAX_SHORT)?;
        if len > kept.len() as u64 {
            return Err(problem(
                field,
                format!("{len} bytes long; at most {MAX_SHORT} are read here"),
            ));
        }
        String::from_utf8(kept).map_err(|_| problem(field, "not UTF-8"))
    }

    pub(super) fn opt_short(&mut self, field: &str) -> Found<Option<String>> {
        if self.peek(field)? == ValueType::Null {
            self.json.next_null().map_err(|e| broken(field, e))?;
            return Ok(None);
        }
        self.short(field).map(Some)
    }

    pub(super) fn number(&mut self, field: &str) -> Found<f64> {
        self.expect(field, ValueType::Number)?;
        let text = self
            .json
            .next_number_as_str()
            .map_err(|e| broken(field, e))?;
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| problem(field, format!("`{text}` is not a usable number")))
    }

    pub(super) fn opt_number(&mut self, field: &str) -> Found<Option<f64>> {
        if self.peek(field)? == ValueType::Null {
            self.json.next_null().map_err(|e| broken(field, e))?;
            return Ok(None);
        }
        self.number(field).map(Some)
    }

    /// Reads the string value through, keeping its first `keep` bytes;
    /// returns them, its whole length and its last two bytes.
    pub(super) fn streamed(&mut self, field: &str, keep: usize) -> Found<(Vec<u8>, u64, Vec<u8>)> {
        let mut reader = self
            .json
            .next_string_reader()
            .map_err(|e| broken(field, e))?;
        let mut kept = Vec::new();
        let mut len = 0u64;
        let mut tail = Vec::with_capacity(4);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(problem(field, describe(cut_short(&e), &e))),
            };
            let chunk = &buf[..n];
            if kept.len() < keep {
                let room = keep - kept.len();
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            len += n as u64;
            tail.extend_from_slice(&chunk[n.saturating_sub(2)..]);
            let excess = tail.len().saturating_sub(2);
            tail.drain(..excess);
        }
        Ok((kept, len, tail))
    }
}
