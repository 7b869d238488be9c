//! The harness's clean environment (`SERVER_ENV` in tests/common): every
//! variable the server reads is removed before a test's own `env`, so that a
//! secret exported in the shell that runs the tests cannot turn auth on in the
//! other suites. It is tested here because auth is what such a variable would
//! silently change.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;
use crate::servers::*;
use crate::tokens::SECRET;

/// Every variable src/ names: clap's `env = "NAME"` (src/config.rs) and
/// `env::var("NAME")` / `env::var_os("NAME")` anywhere: (name, file).
fn variables_named_in_src() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            for marker in ["env = \"", "env::var(\"", "env::var_os(\""] {
                for (at, _) in text.match_indices(marker) {
                    let rest = &text[at + marker.len()..];
                    let name = &rest[..rest.find('"').expect("closing quote")];
                    let file = path.strip_prefix(root).unwrap_or(&path);
                    found.push((name.to_string(), file.display().to_string()));
                }
            }
        }
    }
    found
}

#[test]
fn the_harness_clears_every_variable_the_server_reads() {
    let found = variables_named_in_src();
    // The scan itself works: it sees the flags everyone knows.
    for known in [
        "JWT_SECRET_KEY",
        "BISTREAM_JWT_SECRET_FILE",
        "BISTREAM_LISTEN",
    ] {
        assert!(
            found.iter().any(|(n, _)| n == known),
            "the scan of src/ missed {known}: {found:?}"
        );
    }
    for (name, file) in &found {
        // PATH is read only to find argv[0] the way a shell did (a hand-over
        // starts that path again); tests start the binary by its full path.
        if name == "PATH" {
            continue;
        }
        assert!(
            SERVER_ENV.contains(&name.as_str()),
            "{file} reads {name}: add it to SERVER_ENV in tests/common/mod.rs, \
             or an exported {name} changes every test's server"
        );
    }
    // And the list names nothing the server stopped reading (env_logger's
    // variables are read by a crate, not named in src/).
    for name in SERVER_ENV.iter().filter(|n| !n.starts_with("RUST_LOG")) {
        assert!(
            found.iter().any(|(n, _)| n == name),
            "SERVER_ENV lists {name}, which src/ no longer reads"
        );
    }
}

/// `bistream` with `exported` in its environment as if the shell running the
/// tests had exported it, then cleaned the way every test's server is.
fn cleaned(exported: &[(&str, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bistream"));
    for (k, v) in exported {
        cmd.env(k, v);
    }
    clear_server_env(&mut cmd).args(args).stdin(Stdio::null());
    cmd
}

#[test]
fn an_exported_secret_file_does_not_turn_auth_on() {
    let file = temp_file("exported-secret", SECRET);
    let exported = [("BISTREAM_JWT_SECRET_FILE", file.display().to_string())];
    let args = ["--listen", "127.0.0.1:0", "--threads", "1"];
    // Reaching the server, the variable turns auth on...
    let env: Vec<(&str, &str)> = exported.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let on = Server::launch(&[], &args, &env);
    let a = upgrade(&on, "/ws/dashboard/loc-1", "");
    assert_refused(&a, 401, "token_missing", "secret file passed on purpose");
    drop(on);
    // ...exported and cleaned, it does not.
    let off = Server::from_command(cleaned(&exported, &args));
    assert_upgraded(
        &upgrade(&off, "/ws/dashboard/loc-1", ""),
        "secret file exported in the shell",
    );
}

#[test]
fn an_environment_full_of_bad_values_reaches_no_server() {
    let exported: Vec<(&str, String)> = SERVER_ENV
        .iter()
        .map(|k| (*k, "not-a-value".to_string()))
        .collect();
    let args = ["--listen", "127.0.0.1:0", "--threads", "1"];
    // Passed on purpose, the values stop the server from starting...
    let env: Vec<(&str, &str)> = exported.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = run_bistream(&args, &env);
    assert!(
        !refused.status.success(),
        "bistream started with every variable set to garbage"
    );
    // ...exported and cleaned, the server starts with its defaults: open on
    // loopback, the info log on.
    let s = Server::from_command(cleaned(&exported, &args));
    assert_upgraded(&upgrade(&s, "/ws/dashboard/loc-1", ""), "after cleaning");
    assert_eq!(s.get("/readyz").0, 200);
}
