//! A local process's CPU time and resident memory, from Linux's /proc
//! (`--observe-pid`). Plain reads of two small files; on other systems
//! every read fails (and is counted like any failed read).

use std::io;

/// A process's counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time since it started, seconds (all threads).
    pub cpu_seconds: f64,
    /// Resident set, bytes.
    pub resident_bytes: u64,
}

/// Reads `pid`'s counters now.
///
/// # Errors
/// When the process is gone or /proc cannot be read.
pub fn sample(pid: u32) -> io::Result<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| malformed("stat"))?;
    let pages = resident_pages(&statm).ok_or_else(|| malformed("statm"))?;
    let (per_second, page) = units()?;
    Ok(ProcessSample {
        cpu_seconds: ticks as f64 / per_second as f64,
        resident_bytes: pages.saturating_mul(page),
    })
}

/// Whether `pid` names a running process.
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
}

fn malformed(file: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("/proc {file} unreadable"),
    )
}

/// Clock ticks per second and the page size, in bytes.
#[cfg(target_os = "linux")]
fn units() -> io::Result<(u64, u64)> {
    Ok((
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as u64,
    ))
}

#[cfg(not(target_os = "linux"))]
fn units() -> io::Result<(u64, u64)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "--observe-pid reads Linux's /proc",
    ))
}

/// `utime + stime` (clock ticks) from /proc/PID/stat. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses itself,
/// so the fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // Fields 3 (state) to 13 come first; utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The resident pages (second field) of /proc/PID/statm.
fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_from_the_last_parenthesis() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1022 0 0 0 \
                    150 25 0 0 20 0 3 0 12345 1000000 300 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("1 (x) S 1 2"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
        assert_eq!(resident_pages("1000 250 30 4 0 100 0"), Some(250));
        assert_eq!(resident_pages("1000"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_sampled() {
        let s = sample(std::process::id()).expect("own /proc");
        assert!(s.resident_bytes > 1_000_000, "{s:?}");
        assert!(s.cpu_seconds >= 0.0);
        assert!(exists(std::process::id()));
        assert!(sample(u32::MAX).is_err(), "no such pid");
    }
}
