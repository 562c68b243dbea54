//! Shared by the figures: the settings, the feed, opening connections, and the statistics.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use feed_server::FeedConfig;
use futures_util::StreamExt;
use wsm::proto::ConnectRequest;

use crate::support::{env_or, wanted, wsm_bin, Client, Feed};

/// The tag every idle connection carries; `List` filters on it.
pub(crate) const IDLE_TAG: (&str, &str) = ("bench", "idle");

/// Bound against hangs only.
pub(crate) const HANG: Duration = Duration::from_secs(300);

pub(crate) struct Settings {
    pub(crate) smoke: bool,
    pub(crate) sends: usize,
    pub(crate) warmup: usize,
    pub(crate) runs: usize,
    pub(crate) conns: usize,
    /// Connections of figure 3, over each of ws:// and wss://.
    pub(crate) tls_conns: usize,
    pub(crate) inflight: usize,
    /// How long figure 2 watches the server hold its connections idle.
    pub(crate) idle_window: Duration,
    pub(crate) send: bool,
    pub(crate) idle: bool,
    pub(crate) tls: bool,
    pub(crate) wsm_bin: PathBuf,
}

impl Settings {
    pub(crate) fn from_env() -> Self {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let (sends, warmup, runs, conns, inflight, idle_seconds) = if smoke {
            (200, 20, 1, 50, 16, 0.5)
        } else {
            (
                env_or("BENCH_SENDS", 20_000usize).max(1),
                env_or("BENCH_WARMUP", 2_000usize),
                env_or("BENCH_RUNS", 3usize).max(1),
                env_or("BENCH_CONNS", 10_000usize).max(1),
                env_or("BENCH_INFLIGHT", 128usize).max(1),
                env_or("BENCH_IDLE_SECONDS", 12.0f64).max(0.0),
            )
        };
        let tls_conns = if smoke {
            20
        } else {
            env_or("BENCH_TLS_CONNS", 1_000usize).max(1)
        };
        Settings {
            smoke,
            sends,
            warmup,
            runs,
            conns,
            tls_conns,
            inflight,
            idle_window: Duration::from_secs_f64(idle_seconds),
            send: wanted("send"),
            idle: wanted("idle"),
            tls: wanted("tls"),
            wsm_bin: wsm_bin(),
        }
    }
}

/// Raises this process's soft open-file limit to the hard limit (children inherit it); returns
/// the limit in effect.
pub(crate) fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the kernel to fill in and read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// The feed server both figures connect to: nothing streams (connections opened with `streams=0`
/// only get echoes), and every request is recorded, so only a few are kept.
pub(crate) fn start_feed() -> Feed {
    Feed::start(FeedConfig {
        rate: 1,
        auto_stream: false,
        record_limit: 1024,
        ..FeedConfig::default()
    })
}

/// Opens `n` silent connections to `url` through `Connect`, `inflight` at a time, each tagged
/// [`IDLE_TAG`]: the time until the last answer, every call's latency, and how many failed (the
/// first failure goes into `problems`). `None` if they did not finish in time.
pub(crate) async fn connect_all(
    client: &Client,
    url: &str,
    n: usize,
    inflight: usize,
    problems: &mut Vec<String>,
) -> Option<(Duration, Vec<Duration>, usize)> {
    let started = Instant::now();
    let calls = futures_util::stream::iter(0..n)
        .map(|_| {
            let mut client = client.clone();
            let request = ConnectRequest {
                url: url.to_owned(),
                tags: [(IDLE_TAG.0.to_owned(), IDLE_TAG.1.to_owned())].into(),
                ..ConnectRequest::default()
            };
            async move {
                let sent = Instant::now();
                let result = client.connect(request).await;
                (sent.elapsed(), result)
            }
        })
        .buffer_unordered(inflight)
        .collect::<Vec<_>>();
    let Ok(results) = tokio::time::timeout(HANG, calls).await else {
        problems.push(format!("the Connect RPCs did not finish within {HANG:?}"));
        return None;
    };
    let established = started.elapsed();
    let mut latencies = Vec::with_capacity(results.len());
    let mut failed = 0;
    for (latency, result) in results {
        latencies.push(latency);
        if let Err(e) = result {
            if failed == 0 {
                problems.push(format!("Connect failed: {e}"));
            }
            failed += 1;
        }
    }
    Some((established, latencies, failed))
}

/// The median of each statistic over the runs.
pub(crate) fn medians(runs: &[[f64; 4]]) -> [f64; 4] {
    std::array::from_fn(|i| {
        let mut v: Vec<f64> = runs.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    })
}

pub(crate) fn spread(runs: &[[f64; 4]]) -> (f64, f64) {
    let medians = runs.iter().map(|r| r[0]);
    (
        medians.clone().fold(f64::INFINITY, f64::min),
        medians.fold(0.0, f64::max),
    )
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
