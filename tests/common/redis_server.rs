//! A real `redis-server` (Debian's, installed by tests/setup/ensure-apt.sh when
//! missing) on a free loopback port, in a folder of its own, for the tests of
//! the Redis engine. No persistence unless the test asks for it. Stopped
//! (SIGKILL) when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

static INSTALL: Once = Once::new();

fn ensure_installed() {
    INSTALL.call_once(|| {
        let found = Command::new("sh")
            .args([
                "-c",
                "command -v redis-server || test -x /usr/bin/redis-server",
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup/ensure-apt.sh");
            let ok = Command::new("bash")
                .args([script, "redis-server:redis-server"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "redis-server is needed and could not be installed");
        }
    });
}

/// How the instance keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing: a restart comes back empty.
    None,
    /// An append-only file synced on every write: nothing acknowledged is lost.
    AofAlways,
    /// Only an RDB file written by an explicit `SAVE`.
    SnapshotOnly,
}

pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    persistence: Persistence,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    pub fn start(persistence: Persistence) -> RedisServer {
        ensure_installed();
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("bistream-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = RedisServer {
            port,
            dir,
            persistence,
            child: None,
        };
        r.run();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(["--dbfilename", "dump.rdb", "--save", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match self.persistence {
            Persistence::AofAlways => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
            }
            Persistence::None | Persistence::SnapshotOnly => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        let child = cmd.spawn().expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.query(&["PING"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not come up on port {}", self.port);
    }

    /// Kills the process (no save): what a crash looks like.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and folder (with what it persisted).
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    pub fn pause(&self) {
        if let Some(c) = &self.child {
            super::signal_pid(c.id(), "STOP");
        }
    }

    pub fn resume(&self) {
        if let Some(c) = &self.child {
            super::signal_pid(c.id(), "CONT");
        }
    }

    /// One command on a fresh connection.
    pub fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con)
    }

    /// `SAVE`, and a copy of the RDB file as it is now.
    pub fn save_copy(&self) -> PathBuf {
        self.query(&["SAVE"]).expect("SAVE");
        let copy = self.dir.join("snapshot.rdb");
        std::fs::copy(self.dir.join("dump.rdb"), &copy).expect("copy the RDB file");
        copy
    }

    /// Kills the process and starts it from an RDB file saved earlier.
    pub fn restore(&mut self, rdb: &PathBuf) {
        self.kill();
        std::fs::copy(rdb, self.dir.join("dump.rdb")).expect("restore the RDB file");
        self.run();
    }

    pub fn dbsize(&self) -> i64 {
        match self.query(&["DBSIZE"]) {
            Ok(redis::Value::Int(n)) => n,
            other => panic!("DBSIZE: {other:?}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused process does not die of SIGKILL until continued on some
            // systems' tools; continue it first.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
