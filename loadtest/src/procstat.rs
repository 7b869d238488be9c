//! What the harness reads about the server process from `/proc` (Linux): resident
//! memory (`VmRSS`, `VmHWM` of `/proc/PID/status`), CPU time (`utime + stime` of
//! `/proc/PID/stat`, every thread of the process) and open descriptors
//! (`/proc/PID/fd`). The parsers are pure; [`sample`] does the reading.

use serde::Serialize;
use std::io;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// Resident set size (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// Peak resident set size so far (`VmHWM`), bytes.
    pub peak_rss_bytes: u64,
    /// User + system CPU time of all its threads, seconds.
    pub cpu_s: f64,
    /// Open file descriptors (sockets included).
    pub fds: u64,
}

/// `(VmRSS, VmHWM)` in bytes from the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat`. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after its
/// closing parenthesis, the last one in the line.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ppid (4), ... utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {what}"))
}

/// Reads the process now.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (rss_bytes, peak_rss_bytes) =
        parse_status(&status).ok_or_else(|| malformed("/proc/PID/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| malformed("/proc/PID/stat"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok(ProcSample {
        rss_bytes,
        peak_rss_bytes,
        cpu_s: ticks as f64 / rustix::param::clock_ticks_per_second().max(1) as f64,
        fds,
    })
}

/// Whether a process with this id exists and can be read.
pub fn exists(pid: u32) -> bool {
    sample(pid).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status =
            "Name:\tbistream\nVmPeak:\t  900 kB\nVmHWM:\t    8192 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(parse_status(status), Some((4096 * 1024, 8192 * 1024)));
        assert_eq!(parse_status("Name: x\n"), None);
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1009 0 0 0 37 12 0 0 20 0 5 0";
        assert_eq!(parse_stat_ticks(stat), Some(49));
        assert_eq!(parse_stat_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes);
        assert!(s.fds >= 3);
        assert!(s.cpu_s >= 0.0);
        assert!(!exists(u32::MAX));
    }
}
