//! Code the benches share (`#[path = "support/mod.rs"] mod support;` in each, or
//! `#[path = "../support/mod.rs"]` from a bench folder's main.rs): the environment knobs, the
//! `wsm` binary, a feed server on its own thread, `wsm serve` child processes (the tests'
//! [`process`] module), latency statistics, and the result rows for `scripts/bench.sh` ([`rows`]).
//! Each bench uses a different part of it.
#![allow(dead_code)]

#[path = "../../tests/support/process.rs"]
pub mod process;
pub mod rows;

// Not every bench starts wsm.
#[allow(unused_imports)]
pub use process::{wsm_bin, Client, Spawn, WsmProcess};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use feed_server::{FeedConfig, FeedHandle, FeedServer};
use tokio::runtime::Builder;
use tokio::sync::oneshot;

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

/// Starts `wsm serve` as the benches run it: `bin`, no connection limit, wsm's own log level, and
/// the last 20 lines of its log kept for failure reports ([`WsmProcess::log_tail`]); then `extra`.
pub fn spawn_wsm(bin: &Path, extra: &[&str]) -> WsmProcess {
    WsmProcess::spawn_with(
        &[&["--max-connections", "0"][..], extra].concat(),
        &Spawn {
            bin: Some(bin.to_owned()),
            capture_logs: true,
            log_lines: Some(20),
            log_level: None,
            open_files: None,
        },
    )
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
