//! A real PostgreSQL server for the tests: Debian's `postgresql` binaries (installed by
//! `scripts/setup`), a fresh cluster in a temporary directory on a free loopback port, trust
//! authentication, no fsync; stopped on drop. As root, the server runs as the `postgres` user
//! (PostgreSQL refuses to run as root).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PostgresServer {
    child: Child,
    pub port: u16,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn bin(name: &str) -> PathBuf {
    let root = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/setup installs it)")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .max()
        .expect("a PostgreSQL version");
    root.join("bin").join(name)
}

fn as_server_user(program: PathBuf) -> Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let init = as_server_user(bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "condenser", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb");
        assert!(init.success(), "initdb failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = as_server_user(bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        let started = Instant::now();
        while !Command::new(bin("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "PostgreSQL did not accept connections within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            port,
            data,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://condenser@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (immediate shutdown, as in an outage). `pg_ctl` signals the
    /// postmaster itself: the process started here may be `runuser`, which would not pass a
    /// signal on.
    pub fn stop(&mut self) {
        let _ = as_server_user(bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate", "-w", "-t", "10"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
