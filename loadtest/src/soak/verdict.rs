//! The soak's verdict, pure: the readings after the churn against those before it, and
//! the harness's own counters, each against its tolerance.

use crate::units::{fmt_bytes, parse_size};
use serde::Serialize;

/// How much RSS may grow: bytes, or a share of the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Allowance {
    Bytes(u64),
    /// A fraction of the baseline (0.05 = 5%).
    Share(f64),
}

impl Allowance {
    /// `4MiB`, `65536` or `5%`.
    pub fn parse(s: &str) -> Result<Allowance, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .ok()
                .filter(|p: &f64| p.is_finite() && *p >= 0.0)
                .ok_or_else(|| format!("`{s}` is not a percentage"))?;
            Ok(Allowance::Share(p / 100.0))
        } else {
            Ok(Allowance::Bytes(parse_size(s)? as u64))
        }
    }

    /// The allowed growth over `baseline`.
    pub fn of(self, baseline: f64) -> f64 {
        match self {
            Allowance::Bytes(b) => b as f64,
            Allowance::Share(s) => s * baseline,
        }
    }

    fn show(self) -> String {
        match self {
            Allowance::Bytes(b) => fmt_bytes(b as f64),
            Allowance::Share(s) => format!("{:.1}%", s * 100.0),
        }
    }
}

/// What may differ between the baseline and the final reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerances {
    pub rss: Allowance,
    /// Descriptors more than at the baseline.
    pub fds: u64,
    /// History bytes may differ by this share of the baseline, either way.
    pub history: f64,
}

/// One reading compared (the series' baseline or final sample).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Reading {
    pub rss_bytes: u64,
    pub fds: u64,
    pub history_bytes: Option<f64>,
}

/// What the harness counted over the soak.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counters {
    pub churned: u64,
    pub connect_failures: u64,
    pub closed_by_server: u64,
    pub lost: u64,
    pub order_violations: u64,
    pub publish_errors: u64,
    pub published: u64,
}

/// One line of the verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was measured, in words.
    pub measured: String,
    /// What was allowed, in words.
    pub allowed: String,
}

/// Every check of a soak.
pub fn judge(baseline: &Reading, last: &Reading, tol: &Tolerances, c: &Counters) -> Vec<Check> {
    let mut out = Vec::new();
    let rss_delta = last.rss_bytes as f64 - baseline.rss_bytes as f64;
    let rss_room = tol.rss.of(baseline.rss_bytes as f64);
    out.push(Check {
        name: "rss",
        ok: rss_delta <= rss_room,
        measured: format!(
            "{} -> {} ({}{})",
            fmt_bytes(baseline.rss_bytes as f64),
            fmt_bytes(last.rss_bytes as f64),
            if rss_delta >= 0.0 { "+" } else { "" },
            fmt_bytes(rss_delta)
        ),
        allowed: format!("+{} ({})", fmt_bytes(rss_room), tol.rss.show()),
    });
    out.push(Check {
        name: "fds",
        ok: last.fds <= baseline.fds + tol.fds,
        measured: format!(
            "{} -> {} ({:+})",
            baseline.fds,
            last.fds,
            last.fds as i64 - baseline.fds as i64
        ),
        allowed: format!("+{}", tol.fds),
    });
    out.push(match (baseline.history_bytes, last.history_bytes) {
        (Some(b), Some(l)) => {
            let share = if b > 0.0 {
                (l - b) / b
            } else if l > 0.0 {
                1.0
            } else {
                0.0
            };
            Check {
                name: "history_bytes",
                ok: share.abs() <= tol.history,
                measured: format!(
                    "{} -> {} ({:+.2}%)",
                    fmt_bytes(b),
                    fmt_bytes(l),
                    share * 100.0
                ),
                allowed: format!("±{:.1}%", tol.history * 100.0),
            }
        }
        _ => Check {
            name: "history_bytes",
            ok: false,
            measured: "not readable (GET /metrics has no bistream_history_bytes)".into(),
            allowed: "a reading".into(),
        },
    });
    let zero = |name, v: u64, what: &str| Check {
        name,
        ok: v == 0,
        measured: format!("{v} {what}"),
        allowed: "0".into(),
    };
    out.push(Check {
        name: "churn",
        ok: c.churned > 0 && c.published > 0,
        measured: format!(
            "{} connections churned, {} events published",
            c.churned, c.published
        ),
        allowed: "both above 0".into(),
    });
    out.push(zero(
        "connect_failures",
        c.connect_failures,
        "connections never established",
    ));
    out.push(zero(
        "server_closes",
        c.closed_by_server,
        "live connections closed by the server",
    ));
    out.push(zero(
        "lost",
        c.lost,
        "deliveries lost (seqs skipped while connected)",
    ));
    out.push(zero("order", c.order_violations, "order violations"));
    out.push(zero(
        "publish_errors",
        c.publish_errors,
        "publish requests failed",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol() -> Tolerances {
        Tolerances {
            rss: Allowance::Bytes(4 << 20),
            fds: 2,
            history: 0.02,
        }
    }

    fn counters() -> Counters {
        Counters {
            churned: 100,
            published: 1000,
            ..Default::default()
        }
    }

    fn reading(rss_mib: u64, fds: u64, history: f64) -> Reading {
        Reading {
            rss_bytes: rss_mib << 20,
            fds,
            history_bytes: Some(history),
        }
    }

    #[test]
    fn a_return_to_baseline_passes() {
        let checks = judge(
            &reading(20, 12, 100_000.0),
            &reading(22, 13, 100_500.0),
            &tol(),
            &counters(),
        );
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        assert_eq!(checks[0].measured, "20.00 MiB -> 22.00 MiB (+2.00 MiB)");
    }

    #[test]
    fn growth_fails_each_check() {
        let b = reading(20, 12, 100_000.0);
        let grown = [
            ("rss", reading(25, 12, 100_000.0)),
            ("fds", reading(20, 15, 100_000.0)),
            ("history_bytes", reading(20, 12, 103_000.0)),
            ("history_bytes", reading(20, 12, 90_000.0)),
        ];
        for (name, last) in grown {
            let checks = judge(&b, &last, &tol(), &counters());
            let failed: Vec<_> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
            assert_eq!(failed, vec![name]);
        }
        let mut c = counters();
        c.lost = 3;
        c.closed_by_server = 1;
        let failed: Vec<_> = judge(&b, &b, &tol(), &c)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect();
        assert_eq!(failed, vec!["server_closes", "lost"]);
        let none = Counters::default();
        assert!(
            !judge(&b, &b, &tol(), &none)
                .iter()
                .find(|c| c.name == "churn")
                .unwrap()
                .ok
        );
    }

    #[test]
    fn allowances_in_bytes_or_percent() {
        assert_eq!(Allowance::parse("4MiB"), Ok(Allowance::Bytes(4 << 20)));
        assert_eq!(Allowance::parse("10%"), Ok(Allowance::Share(0.1)));
        assert!(Allowance::parse("x%").is_err());
        assert_eq!(Allowance::Share(0.1).of(50.0), 5.0);
        let t = Tolerances {
            rss: Allowance::Share(0.1),
            ..tol()
        };
        let checks = judge(&reading(20, 1, 1.0), &reading(22, 1, 1.0), &t, &counters());
        assert!(checks[0].ok);
        let no_metric = Reading {
            history_bytes: None,
            ..reading(20, 1, 0.0)
        };
        let checks = judge(&no_metric, &no_metric, &tol(), &counters());
        assert!(!checks[2].ok);
    }
}
