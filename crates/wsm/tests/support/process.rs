//! Real `wsm serve` processes, for the tests (`mod support;`) and the benches (which include this
//! file with `#[path]`): started with the built binary, their addresses read from stdout, signals
//! sent to them (SIGKILL, SIGSTOP/SIGCONT, SIGTERM) as an operator or a crash would, and what
//! /proc says of their memory and CPU time.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use wsm::proto::web_socket_manager_client::WebSocketManagerClient;
use wsm::proto::{ListRequest, WebSocketConnection};

pub type Client = WebSocketManagerClient<Channel>;

/// How long starting, a gRPC connect or a call may take, and a SIGTERM until the exit.
const HANG: Duration = Duration::from_secs(30);

pub struct WsmProcess {
    child: Child,
    pub http: String,
    pub grpc: String,
    /// What it logged (stderr), when spawned with [`Spawn::capture_logs`].
    logs: Option<Arc<Mutex<VecDeque<String>>>>,
}

/// How to start a `wsm serve` process beyond its flags.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// The binary (default: the one cargo built for this test, see [`wsm_bin`]).
    pub bin: Option<PathBuf>,
    /// Keep stderr for [`WsmProcess::logs`] instead of passing it through.
    pub capture_logs: bool,
    /// With `capture_logs`: keep only this many of the last lines (default all).
    pub log_lines: Option<usize>,
    /// `--log-level` (default warn; `None`: wsm's own default).
    pub log_level: Option<&'static str>,
    /// The process's open-file limit, soft and hard (as `ulimit -n`).
    pub open_files: Option<u64>,
}

impl Default for Spawn {
    fn default() -> Self {
        Spawn {
            bin: None,
            capture_logs: false,
            log_lines: None,
            log_level: Some("warn"),
            open_files: None,
        }
    }
}

/// `WSM_BIN`, else the binary cargo built with this test or bench, else `wsm` next to the
/// executable's `deps` directory (target/<profile>/wsm).
pub fn wsm_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("WSM_BIN") {
        return PathBuf::from(path);
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_wsm") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the executable's own path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("wsm"))
        .expect("target/<profile>/wsm")
}

impl WsmProcess {
    /// `wsm serve` on free loopback ports, loopback connects allowed, then `extra`.
    pub fn spawn(extra: &[&str]) -> WsmProcess {
        WsmProcess::spawn_with(extra, &Spawn::default())
    }

    /// Returns once it has printed both addresses (panics, with its log, if it does not).
    pub fn spawn_with(extra: &[&str], how: &Spawn) -> WsmProcess {
        let bin = how.bin.clone().unwrap_or_else(wsm_bin);
        let mut command = Command::new(&bin);
        command
            .args(["serve", "--bind", "127.0.0.1", "-s", "0", "-g", "0"])
            .args(["--allow-private-networks"]);
        if let Some(level) = how.log_level {
            command.args(["--log-level", level]);
        }
        command
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if how.capture_logs {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        if let Some(limit) = how.open_files {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the struct passed in.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); build it (cargo build -p wsm --bin wsm) or set WSM_BIN",
                bin.display()
            )
        });
        let logs = child.stderr.take().map(|stderr| {
            let logs = Arc::new(Mutex::new(VecDeque::new()));
            let sink = Arc::clone(&logs);
            let keep = how.log_lines.unwrap_or(usize::MAX);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut logs = sink.lock().unwrap_or_else(|e| e.into_inner());
                    if logs.len() >= keep {
                        logs.pop_front();
                    }
                    logs.push_back(line);
                }
            });
            logs
        });
        // Read on a thread (to the end: nothing blocks on a full pipe) so that a process that
        // never prints its addresses is a bounded failure.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for (port, prefix) in [
                    ("http", "http listening on "),
                    ("grpc", "grpc listening on "),
                ] {
                    if let Some(addr) = line.strip_prefix(prefix) {
                        let _ = addr_tx.send((port, addr.trim().to_owned()));
                    }
                }
            }
        });
        let mut wsm = WsmProcess {
            child,
            http: String::new(),
            grpc: String::new(),
            logs,
        };
        while wsm.http.is_empty() || wsm.grpc.is_empty() {
            match addr_rx.recv_timeout(HANG) {
                Ok((port, addr)) if addr.parse::<SocketAddr>().is_ok() => match port {
                    "http" => wsm.http = addr,
                    _ => wsm.grpc = addr,
                },
                other => {
                    wsm.kill();
                    panic!(
                        "wsm serve did not report its addresses ({other:?}); its log:\n{}",
                        if wsm.logs.is_some() {
                            wsm.logs()
                        } else {
                            "(on this process's stderr)".to_owned()
                        }
                    );
                }
            }
        }
        wsm
    }

    /// Everything it logged so far, or the last [`Spawn::log_lines`] lines (empty unless spawned
    /// with `capture_logs`).
    pub fn logs(&self) -> String {
        self.logs
            .as_ref()
            .map(|logs| {
                let logs = logs.lock().unwrap_or_else(|e| e.into_inner());
                logs.iter().fold(String::new(), |mut all, line| {
                    all.push_str(line);
                    all.push('\n');
                    all
                })
            })
            .unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "signal {signal} reaches wsm");
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits (bounded) for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = tokio::time::Instant::now() + HANG;
        loop {
            if let Some(exit) = self.child.try_wait().expect("the child can be waited on") {
                return exit;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wsm did not exit within {HANG:?} of SIGTERM"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `VmRSS` and `VmHWM` (peak) from /proc/<pid>/status, in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time used so far (user + system), from /proc/<pid>/stat.
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/<pid>/stat");
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Duration::from_secs_f64(ticks as f64 / per_second)
    }

    /// A client whose connect and every call are bounded by 30 s.
    pub async fn client(&self) -> Client {
        self.connect(Some(HANG)).await
    }

    /// A client for long streams and large answers: calls unbounded in time and size, and
    /// TCP_NODELAY.
    pub async fn unbounded_client(&self) -> Client {
        self.connect(None)
            .await
            .max_decoding_message_size(usize::MAX)
    }

    async fn connect(&self, call_timeout: Option<Duration>) -> Client {
        let mut endpoint = Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("a valid endpoint")
            .connect_timeout(HANG)
            .tcp_nodelay(true);
        if let Some(timeout) = call_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let channel = endpoint.connect().await.expect("the gRPC port accepts");
        WebSocketManagerClient::new(channel)
    }

    /// Every connection, as `List` on this instance shows them.
    pub async fn list(&self) -> Vec<WebSocketConnection> {
        self.client()
            .await
            .list(ListRequest::default())
            .await
            .expect("List")
            .into_inner()
            .connections
    }

    /// One sample from `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        self.try_metric(name)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// One sample from `/metrics` (0 when absent), or why `/metrics` did not answer.
    pub async fn try_metric(&self, name: &str) -> Result<f64, String> {
        let text = reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .map_err(|e| format!("GET /metrics: {e}"))?
            .text()
            .await
            .map_err(|e| format!("GET /metrics body: {e}"))?;
        Ok(metric(&text, name))
    }
}

/// The value of one sample in Prometheus text (`name` with its labels exactly as written, e.g.
/// `wsm_connections{status="connected"}`); 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == sample)
        .map(|(_, value)| value.parse().expect("a numeric sample"))
        .unwrap_or(0.0)
}

impl Drop for WsmProcess {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly.
        // SAFETY: as in `signal`.
        unsafe {
            libc::kill(self.pid(), libc::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
