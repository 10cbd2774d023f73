//! What the binary tests share: a real `tacit server` process, `tacit` runs and their JSON
//! lines, a PostgreSQL schema of a test's own.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `tacit server`; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `tacit server ARGS` (through `sh -c 'umask U; exec ...'` when `umask` is given)
    /// and waits until it listens.
    pub fn start(args: &[&str], umask: Option<&str>) -> Self {
        Self::start_with_env(args, umask, &[])
    }

    /// [`Self::start`] with these environment variables set.
    pub fn start_with_env(args: &[&str], umask: Option<&str>, env: &[(&str, &str)]) -> Self {
        let bin = env!("CARGO_BIN_EXE_tacit");
        let mut cmd = match umask {
            Some(u) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("umask {u}; exec \"$0\" \"$@\"")).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        for k in ["TACIT_LISTEN", "TACIT_DATA", "TACIT_DATABASE_URL", "TACIT_CONFIG", "TACIT_ORIGIN"] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .arg("server")
            .args(args)
            .env("TACIT_KT_EPOCH_INTERVAL", "50ms")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut server = Self { child, log, addr: "0.0.0.0:0".parse().unwrap() };
        server.wait_for("tacit server listening");
        let log = server.log();
        let addr = log.split("local_addr=").nth(1).unwrap().split_whitespace().next().unwrap();
        server.addr = addr.parse().unwrap();
        server
    }

    /// `tacit server` on a free loopback port with its data in `data`.
    /// [`Self::on_loopback`], on the PostgreSQL database `database` when given.
    pub fn on_loopback_with(data: &Path, database: Option<&str>) -> Self {
        let mut args = vec!["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()];
        if let Some(url) = database {
            args.extend(["--database", url]);
        }
        Self::start(&args, None)
    }

    pub fn on_loopback(data: &Path) -> Self {
        Self::start(&["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()], None)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (at most 30 s) until the log holds `text` `times` times.
    pub fn wait_for_n(&mut self, text: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches(text).count() < times {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited ({status}) before logging {text:?}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no {text:?} in the log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_for(&mut self, text: &str) {
        self.wait_for_n(text, 1);
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(mut self) {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}:\n{}", self.log());
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `tacit --json --home HOME ARGS`; the exit code and the JSON lines.
pub fn tacit(home: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, Vec<Value>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tacit"));
    for k in ["TACIT_PASSPHRASE", "TACIT_HOME", "TACIT_CA_FILE", "TACIT_INSECURE_HTTP"] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.arg("--json").arg("--home").arg(home).args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code().unwrap(), stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

/// `tacit --json --home HOME ARGS` started, not waited for (stdout piped).
pub fn spawn_tacit(home: &Path, args: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tacit"));
    for k in ["TACIT_PASSPHRASE", "TACIT_HOME", "TACIT_CA_FILE", "TACIT_INSECURE_HTTP"] {
        cmd.env_remove(k);
    }
    cmd.arg("--json").arg("--home").arg(home).args(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap()
}

/// Waits for a child started by [`spawn_tacit`]: its exit code and JSON lines.
pub fn finish(child: Child) -> (i32, Vec<Value>) {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code().unwrap(), stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

/// The texts of the `message` lines.
pub fn texts(lines: &[Value]) -> Vec<String> {
    lines.iter().filter(|l| l["type"] == "message").map(|l| l["text"].as_str().unwrap().to_owned()).collect()
}

/// Receives on `home` until `n` messages came (at most 30 s), with `receive` runs.
pub fn receive_n(home: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let (code, l) = tacit(home, &[], &["receive", "--wait", "2"]);
        assert_eq!(code, 0, "{l:?}");
        got.extend(texts(&l));
    }
    got
}

/// A PostgreSQL schema of its own (dropped at the end) and a URL whose connections use it.
pub struct PgSchema {
    pub name: String,
    pub url: String,
}

impl PgSchema {
    pub fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("{prefix}_{:x}_{:x}", std::process::id(), nanos & 0xffff_ffff_ffff);
        Self::admin(&format!("CREATE SCHEMA {name}"));
        let url = format!("postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{name}");
        Self { name, url }
    }

    pub fn admin(sql: &str) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let admin = "host=127.0.0.1 port=5432 user=postgres dbname=test";
            let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.batch_execute(sql).await.unwrap();
        });
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        Self::admin(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}
