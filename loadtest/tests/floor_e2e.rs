//! End to end: the harness against its own floor server on 127.0.0.1 (port 0).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_bistream-loadtest");

struct Floor(Child);

impl Floor {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a floor on a free port; answers it and its address.
fn floor(threads: &str) -> (Floor, String) {
    let mut child = Command::new(BIN)
        .args([
            "floor",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            threads,
            "--exit-after",
            "120s",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start floor");
    let stderr = child.stderr.take().expect("stderr");
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .expect("floor banner");
    let addr = line
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .expect("address in banner")
        .to_owned();
    (Floor(child), addr)
}

fn run(args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("run loadtest");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn every_event_reaches_every_connection() {
    let (_floor, addr) = floor("2");
    let (code, j) = run(&[
        "--url",
        &addr,
        "-c",
        "300",
        "--channels",
        "2",
        "--locations",
        "3",
        "--rate",
        "60",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--procs",
        "2",
        "--slo",
        "loss=0,order=0",
    ]);
    assert_eq!(code, 0, "{j}");
    let d = &j["deliveries"];
    let published = j["published"]["events"].as_u64().unwrap();
    assert_eq!(published, 150); // 60/s for 2.5 s
    assert_eq!(j["connections"]["established"], 300);
    // 6 streams, 50 connections and 25 events each.
    assert_eq!(d["expected"], 300 * 25);
    assert_eq!(d["total"], 300 * 25);
    assert_eq!(d["lost"], 0);
    assert_eq!(d["order_violations"], 0);
    assert_eq!(d["measured"], 300 * 20);
    assert!(j["latency"]["p99_ns"].as_u64().unwrap() > 0);
}

#[test]
fn slo_breach_exits_1_and_bad_slo_exits_2() {
    let (_floor, addr) = floor("1");
    let (code, j) = run(&[
        "--url",
        &addr,
        "-c",
        "20",
        "--burst",
        "50",
        "--batch",
        "25",
        "--warmup",
        "0s",
        "--slo",
        "p50<1ns,loss=0",
    ]);
    assert_eq!(code, 1, "{j}");
    assert_eq!(j["deliveries"]["total"], 20 * 50);
    assert_eq!(j["slo"][0]["ok"], false);
    assert_eq!(j["slo"][1]["ok"], true);
    let out = Command::new(BIN)
        .args(["--url", &addr, "--slo", "p99<fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("p99<fast"));
}

#[test]
fn refuses_remote_targets_and_reports_unreachable_servers() {
    let out = Command::new(BIN)
        .args(["--url", "ws://192.0.2.1:8000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote"));
    // Nothing listens on port 1: every connection fails, the run exits 3.
    let out = Command::new(BIN)
        .args([
            "--url",
            "127.0.0.1:1",
            "-c",
            "5",
            "--connect-timeout",
            "1s",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("refused 5"), "{text}");
}

#[test]
fn idle_runs_read_the_servers_memory_and_cpu() {
    let (floor, addr) = floor("1");
    let pid = floor.pid();
    let (code, j) = run(&[
        "--url",
        &addr,
        "-c",
        "400",
        "--procs",
        "2",
        "--idle",
        "--settle",
        "500ms",
        "--server-pid",
        &pid,
        "--slo",
        "rss_per_conn<1MiB",
    ]);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["run"]["mode"], "idle");
    assert_eq!(j["connections"]["established"], 400);
    assert_eq!(j["published"]["events"], 0);
    let s = &j["server"];
    assert_eq!(s["pid"].as_u64().unwrap().to_string(), pid);
    // Every subscriber is an open descriptor of the server while it is read.
    let before = s["before"]["fds"].as_u64().unwrap();
    assert!(
        s["connected"]["fds"].as_u64().unwrap() >= before + 400,
        "{s}"
    );
    assert!(s["end"]["fds"].as_u64().unwrap() >= before + 400, "{s}");
    let per_conn = s["rss_per_connection_bytes"].as_f64().unwrap();
    assert!(per_conn > 0.0, "{s}");

    // A publishing run carries CPU per delivery.
    let (code, j) = run(&[
        "--url",
        &addr,
        "-c",
        "100",
        "--rate",
        "100",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(code, 0, "{j}");
    let s = &j["server"];
    assert!(s["cpu_publish_s"].as_f64().unwrap() >= 0.0);
    assert!(s["cpu_us_per_delivery"].as_f64().unwrap() >= 0.0, "{s}");
    assert!(s["end"]["cpu_s"].as_f64().unwrap() >= s["before"]["cpu_s"].as_f64().unwrap());

    // A PID that is no process is a usage error.
    let out = Command::new(BIN)
        .args(["--url", &addr, "--server-pid", "4294967295"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `compare` end to end, with the floor standing in for bistream too (a wrapper script
/// that takes bistream's flags), so that the test needs no other binary: both sides
/// must run, be read, and be put side by side.
#[test]
fn compare_runs_both_servers_alternately() {
    let dir = std::env::temp_dir().join(format!("lt-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("bistream");
    // bistream is started as: --listen ADDR --threads N --log-level warn
    std::fs::write(
        &fake,
        format!("#!/bin/sh\nexec {BIN} floor --listen \"$2\" --threads \"$4\" --exit-after 60s\n"),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let out = Command::new(BIN)
        .args(["compare", "--runs", "2", "--json", "--bistream"])
        .arg(&fake)
        .arg("--save")
        .arg(&dir)
        .args([
            "--",
            "-c",
            "50",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sc = &j["scenarios"][0];
    assert_eq!(sc["name"], "custom");
    for side in ["floor", "bistream"] {
        let runs = sc[side]["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{sc}");
        for r in runs {
            assert_eq!(r["established"], 50);
            assert_eq!(r["lost"], 0);
            assert_eq!(r["deliveries"], 50 * 20);
            assert!(r["cpu_us_per_delivery"].as_f64().is_some(), "{r}");
        }
        assert!(sc[side]["median"]["p99_ms"].as_f64().unwrap() > 0.0);
    }
    assert!(sc["ratio"]["p99_ms"].as_f64().unwrap() > 0.0);
    // Runs alternate: floor first in run 1, bistream first in run 2.
    let order: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" run "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        order,
        ["floor", "bistream", "bistream", "floor"],
        "{stderr}"
    );
    let saved = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(saved, 5); // four runs and the wrapper
    let _ = std::fs::remove_dir_all(&dir);
}

/// Conflating and snapshot subscribers against the floor, which supports neither: it
/// passes `key` through and delivers every event, so each conflating connection must
/// end on the last published value of every key; and no snapshot marker ever comes,
/// which the harness must report.
#[test]
fn conflating_and_snapshot_subscribers_are_accounted_for() {
    let (_floor, addr) = floor("1");
    let (code, j) = run(&[
        "--url",
        &addr,
        "-c",
        "120",
        "--locations",
        "2",
        "--rate",
        "100",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--conflate-share",
        "0.5",
        "--snapshot-share",
        "0.25",
        "--keys",
        "6",
        "--publishers",
        "2",
        "--batch",
        "4",
        "--slo",
        "conflate_mismatch=0,loss=0,order=0",
    ]);
    assert_eq!(code, 0, "{j}");
    let c = &j["conflation"];
    assert_eq!(c["connections"], 60);
    // 30 conflating connections per stream. With 2 publishers and 2 streams, each
    // publisher's events all go to one stream, and each publishes its own 3 keys.
    assert_eq!(c["matching"], 60 * 3, "{c}");
    assert_eq!(
        (c["mismatching"].as_u64(), c["unknown"].as_u64()),
        (Some(0), Some(0))
    );
    // Only the 60 ordinary connections are owed every event.
    assert_eq!(j["deliveries"]["expected"], 60 * 50);
    assert_eq!(j["deliveries"]["total"], 120 * 50);
    let s = &j["snapshots"];
    assert_eq!(s["connections"], 30);
    assert_eq!(s["missing_marker"], 30);
    let (code, _) = run(&[
        "--url",
        &addr,
        "-c",
        "8",
        "--rate",
        "20",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--snapshot-share",
        "1",
        "--slo",
        "snapshot_errors=0",
    ]);
    assert_eq!(code, 1);
}

/// The soak's phases end to end against the floor (short ones): it connects, churns in
/// every way, pauses, reads the server, and finishes; the floor has no /metrics, so
/// the history check fails and the soak exits 1 with every other check passing.
#[test]
fn soak_phases_run_and_judge() {
    let (floor, addr) = floor("1");
    let pid = floor.pid();
    let out = Command::new(BIN)
        .args([
            "soak",
            "--url",
            &addr,
            "--server-pid",
            &pid,
            "-c",
            "60",
            "--churn-rate",
            "60",
            "--rate",
            "50",
            "--warmup",
            "1500ms",
            "--duration",
            "2s",
            "--settle",
            "500ms",
            "--sample-every",
            "1s",
            "--json",
            "--quiet",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&str> = j["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["history_bytes"], "{stderr}");
    // Both readings have no harness connection open.
    assert_eq!(j["baseline"]["open"], 0);
    assert_eq!(j["final"]["open"], 0);
    assert!(j["final"]["fds"].as_u64().unwrap() <= j["baseline"]["fds"].as_u64().unwrap() + 2);
    for kind in ["close", "reset", "drop", "abort"] {
        assert!(
            j["churned"][kind].as_u64().unwrap() > 0,
            "{kind}: {}",
            j["churned"]
        );
    }
    assert!(stderr.contains("soak         FAILED"), "{stderr}");
}
