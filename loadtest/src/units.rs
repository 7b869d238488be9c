//! Parsing and printing of durations, sizes and rates, shared by the CLI, the SLO
//! parser and the report.

use std::time::Duration;

/// Parses a humantime duration (`10s`, `500ms`, `2m`) for clap.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}"))
}

/// Parses a latency threshold that may have a fraction: `10ms`, `1.5ms`, `250us`, `2s`.
/// Returns nanoseconds. Units: `ns`, `us`/`µs`, `ms`, `s`.
pub fn parse_latency_ns(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit (write e.g. 10ms, 250us, 1.5s)"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: `{num}` is not a number"))?;
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        other => return Err(format!("`{s}`: unknown unit `{other}` (ns, us, ms, s)")),
    };
    let ns = value * scale;
    if !ns.is_finite() || ns < 0.0 || ns > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(ns.round() as u64)
}

/// Parses a byte size: plain bytes or with a `KiB`/`MiB`/`GiB` (or `KB`/`MB`) suffix.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (write 1MiB, 64KiB or bytes)"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" | "k" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => return Err(format!("`{s}`: unknown size unit `{other}`")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Prints nanoseconds with three significant digits: `850ns`, `12.3us`, `1.23ms`, `2.50s`.
pub fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    let (value, unit) = if ns < 1_000 {
        return format!("{ns}ns");
    } else if ns < 1_000_000 {
        (v / 1e3, "us")
    } else if ns < 1_000_000_000 {
        (v / 1e6, "ms")
    } else {
        (v / 1e9, "s")
    };
    if value >= 100.0 {
        format!("{value:.0}{unit}")
    } else if value >= 10.0 {
        format!("{value:.1}{unit}")
    } else {
        format!("{value:.2}{unit}")
    }
}

/// Prints a rate or count compactly: `950`, `12.3k`, `1.05M`.
pub fn fmt_si(v: f64) -> String {
    if v < 1e3 {
        if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.2}M", v / 1e6)
    }
}

/// Prints bytes (possibly negative or fractional, as a per-connection delta is):
/// `850 B`, `12.3 KiB`, `1.05 MiB`, `2.00 GiB`.
pub fn fmt_bytes(b: f64) -> String {
    let a = b.abs();
    if a < 1024.0 {
        format!("{b:.0} B")
    } else if a < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if a < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_parse_with_fractions_and_units() {
        assert_eq!(parse_latency_ns("10ms"), Ok(10_000_000));
        assert_eq!(parse_latency_ns("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_latency_ns("250us"), Ok(250_000));
        assert_eq!(parse_latency_ns("250µs"), Ok(250_000));
        assert_eq!(parse_latency_ns("2s"), Ok(2_000_000_000));
        assert!(parse_latency_ns("10").is_err());
        assert!(parse_latency_ns("10m").is_err());
        assert!(parse_latency_ns("ms").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations_print_with_three_digits() {
        assert_eq!(fmt_ns(850), "850ns");
        assert_eq!(fmt_ns(12_345), "12.3us");
        assert_eq!(fmt_ns(1_234_567), "1.23ms");
        assert_eq!(fmt_ns(123_456_789), "123ms");
        assert_eq!(fmt_ns(2_500_000_000), "2.50s");
        assert_eq!(fmt_si(950.0), "950");
        assert_eq!(fmt_si(12_345.0), "12.3k");
        assert_eq!(fmt_si(1_050_000.0), "1.05M");
        assert_eq!(fmt_bytes(850.4), "850 B");
        assert_eq!(fmt_bytes(-300.0), "-300 B");
        assert_eq!(fmt_bytes(12_600.0), "12.3 KiB");
        assert_eq!(fmt_bytes(1_101_005.0), "1.05 MiB");
    }
}
