//! Code the benches share (`#[path = "support/mod.rs"] mod support;` in each): the environment
//! knobs, the `wsm` binary, a feed server on its own thread, `wsm serve` child processes, latency
//! statistics, and the result rows for `scripts/bench.sh` ([`rows`]). Each bench uses a different
//! part of it.
#![allow(dead_code)]

pub mod rows;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use feed_server::{FeedConfig, FeedHandle, FeedServer};
use tokio::runtime::Builder;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use wsm::api::proto::web_socket_manager_client::WebSocketManagerClient;

pub type Client = WebSocketManagerClient<Channel>;

pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `BENCH_ONLY` (a comma-separated list of figure names) is unset or names `name`.
pub fn wanted(name: &str) -> bool {
    std::env::var("BENCH_ONLY")
        .ok()
        .as_deref()
        .is_none_or(|list| list.split(',').any(|n| n.trim() == name))
}

/// `WSM_BIN`, else the binary cargo built with this bench, else `wsm` next to the bench's `deps`
/// directory (target/<profile>/wsm).
pub fn wsm_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("WSM_BIN") {
        return PathBuf::from(path);
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_wsm") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("wsm"))
        .expect("target/<profile>/wsm")
}

// ---------------------------------------------------------------------------------------------
// The feed server

/// A feed server on its own thread and single-threaded runtime; the handle is shared for its
/// counters.
pub struct Feed {
    pub base: String,
    pub handle: Arc<FeedHandle>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feed {
    pub fn start(config: FeedConfig) -> Feed {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("feed runtime");
            runtime.block_on(async {
                let feed = FeedServer::start(config).await.expect("start feed server");
                let feed = Arc::new(feed);
                handle_tx.send(Arc::clone(&feed)).expect("send handle");
                let _ = stop_rx.await;
                // Sessions of a killed server are gone already; the rest get the grace period.
                if let Ok(feed) = Arc::try_unwrap(feed) {
                    feed.shutdown().await;
                }
            });
        });
        let handle = handle_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("feed server handle");
        Feed {
            base: handle.url(""),
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// A silent connection's URL: no depth frames, echoes only.
    pub fn silent_url(&self) -> String {
        format!("{}/ws?streams=0", self.base)
    }

    /// A streaming connection's URL: depth frames at the feed's configured rate.
    pub fn streaming_url(&self) -> String {
        format!("{}/ws", self.base)
    }

    pub fn stop(mut self) {
        let handle = self.handle;
        drop(handle);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The wsm process

/// A `wsm serve` child process, killed when dropped.
pub struct WsmProcess {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The last lines it wrote on stderr (its log), for failure reports.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl WsmProcess {
    /// `wsm serve` on free loopback ports, loopback connects allowed, no connection limit, then
    /// `extra`. Returns once it has printed both addresses.
    pub fn spawn(bin: &PathBuf, extra: &[&str]) -> WsmProcess {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "-s",
                "0",
                "-g",
                "0",
                "--allow-private-networks",
                "--max-connections",
                "0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); build it (cargo build --release -p wsm --bin wsm) or \
                     set WSM_BIN",
                    bin.display()
                )
            });
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                if lines.len() == 20 {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for (port, prefix) in [
                    ("http", "http listening on "),
                    ("grpc", "grpc listening on "),
                ] {
                    if let Some(addr) = line.strip_prefix(prefix) {
                        let _ = addr_tx.send((port, addr.trim().parse::<SocketAddr>()));
                    }
                }
            }
        });
        let (mut grpc, mut http) = (None, None);
        while grpc.is_none() || http.is_none() {
            match addr_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(("grpc", Ok(addr))) => grpc = Some(addr),
                Ok((_, Ok(addr))) => http = Some(addr),
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "wsm serve did not report its addresses ({other:?}); its log:\n{}",
                        log.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
            }
        }
        WsmProcess {
            child,
            grpc: grpc.expect("gRPC address"),
            http: http.expect("HTTP address"),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (no shutdown work, like a crash), and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `VmRSS` and `VmHWM` (peak) from /proc/<pid>/status, in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
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
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
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

    pub fn log_tail(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn client(&self) -> Client {
        let channel = Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("endpoint")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect to wsm's gRPC port");
        WebSocketManagerClient::new(channel).max_decoding_message_size(usize::MAX)
    }

    /// One unlabelled sample from `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> Result<f64, String> {
        let text = reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .map_err(|e| format!("GET /metrics: {e}"))?
            .text()
            .await
            .map_err(|e| format!("GET /metrics body: {e}"))?;
        Ok(text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .find(|(sample, _)| *sample == name)
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0.0))
    }
}

impl Drop for WsmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Per-call times of one path in one run, sorted.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        Latencies(times)
    }

    pub fn quantile(&self, q: f64) -> f64 {
        let at = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[at].as_secs_f64() * 1e6
    }

    /// Median, p90, p99, max in µs.
    pub fn summary(&self) -> [f64; 4] {
        [
            self.quantile(0.5),
            self.quantile(0.9),
            self.quantile(0.99),
            self.quantile(1.0),
        ]
    }
}
