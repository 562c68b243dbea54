//! Shared by the ingest paths: the settings, the feed, reading `seq`, and Redis helpers.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::env_or;

/// Starts the stream of a connection opened with `streams=0`; its reply is one more text frame.
pub(crate) const SUBSCRIBE: &str =
    r#"{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}"#;

pub(crate) const TOPIC: &str = "bench.ingest";

pub(crate) const FRAME_SIZE: usize = 100;

/// Bound against hangs only.
pub(crate) const HANG: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Path {
    Bare,
    Memory,
    MemoryDefault,
    MemoryJson,
    Redis,
    Naive,
    Python,
}

impl Path {
    pub(crate) const ALL: [Path; 7] = [
        Path::Bare,
        Path::Memory,
        Path::MemoryDefault,
        Path::MemoryJson,
        Path::Redis,
        Path::Naive,
        Path::Python,
    ];

    fn name(self) -> &'static str {
        match self {
            Path::Bare => "bare",
            Path::Memory => "memory",
            Path::MemoryDefault => "memory-default",
            Path::MemoryJson => "memory-json",
            Path::Redis => "redis",
            Path::Naive => "naive",
            Path::Python => "python",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Path::Bare => "bare tokio-tungstenite client",
            Path::Memory => "wsm → memory bus (128 KiB reads)",
            Path::MemoryDefault => "wsm → memory bus (8 KiB reads)",
            Path::MemoryJson => "wsm → memory bus, JSON reader",
            Path::Redis => "wsm → Redis Streams",
            Path::Naive => "naive bridge (XADD, pipelines ≤ 256)",
            Path::Python => "Python bridge (one XADD per frame)",
        }
    }
}

pub(crate) struct Settings {
    pub(crate) smoke: bool,
    /// Frames per run, by path (`Path::ALL` order).
    pub(crate) frames: [u64; 7],
    pub(crate) runs: usize,
    pub(crate) paths: Vec<Path>,
    /// The interpreter for the Python bridge; without it that path does not run.
    pub(crate) python: Option<PathBuf>,
}

impl Settings {
    pub(crate) fn from_env() -> Self {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let paths = match std::env::var("BENCH_ONLY") {
            Ok(list) => Path::ALL
                .into_iter()
                .filter(|p| list.split(',').any(|n| n.trim() == p.name()))
                .collect(),
            Err(_) => Path::ALL.to_vec(),
        };
        let python = std::env::var_os("BENCH_PYTHON")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let paths = paths
            .into_iter()
            .filter(|p| *p != Path::Python || python.is_some())
            .collect();
        if smoke {
            return Settings {
                smoke,
                frames: [3000; 7],
                runs: 1,
                paths,
                python,
            };
        }
        let redis = env_or("BENCH_REDIS_FRAMES", 1_000_000);
        Settings {
            smoke,
            frames: [
                env_or("BENCH_BARE_FRAMES", 10_000_000),
                env_or("BENCH_FRAMES", 10_000_000),
                env_or("BENCH_FRAMES", 10_000_000),
                env_or("BENCH_FRAMES", 10_000_000) / 2,
                redis,
                redis,
                env_or("BENCH_PYTHON_FRAMES", 100_000),
            ],
            runs: env_or("BENCH_RUNS", 3usize).max(1),
            paths,
            python,
        }
    }

    pub(crate) fn frames(&self, path: Path) -> u64 {
        self.frames[Path::ALL.iter().position(|p| *p == path).unwrap_or(0)]
    }
}

/// One timed run.
pub(crate) struct Run {
    /// Frames counted, delivered or stored (the SUBSCRIBE reply included).
    pub(crate) frames: u64,
    pub(crate) elapsed: Duration,
    /// Backpressure episodes reported by the connection (not a loss).
    pub(crate) degraded: u64,
    /// Anything lost, duplicated, out of order or failed: the run does not count.
    pub(crate) problems: Vec<String>,
}

impl Run {
    pub(crate) fn rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.frames as f64 / self.elapsed.as_secs_f64()
    }

    /// A run that produced no figure.
    pub(crate) fn failed(problem: String) -> Run {
        Run {
            frames: 0,
            elapsed: Duration::ZERO,
            degraded: 0,
            problems: vec![problem],
        }
    }
}

pub(crate) fn feed_url(base: &str, count: u64) -> String {
    format!("{base}/ws?rate=0&size={FRAME_SIZE}&count={count}&streams=0")
}

/// The `seq` extension of a CloudEvent or Dapr envelope (top level; the frame text inside `data`
/// is a JSON string, so its quotes are escaped and cannot match).
pub(crate) fn seq_of(event: &[u8]) -> Option<u64> {
    let key = b"\"seq\":";
    let at = event.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = event[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&event[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// The feed's per-connection frame counter `u` of a depth update.
pub(crate) fn u_of(frame: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(frame)
        .ok()?
        .get("u")?
        .as_u64()
}

pub(crate) async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis-server")
}

pub(crate) async fn flush(conn: &mut redis::aio::MultiplexedConnection) {
    redis::cmd("FLUSHALL")
        .exec_async(conn)
        .await
        .expect("FLUSHALL");
}

pub(crate) async fn xlen(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(conn)
        .await
        .expect("XLEN")
}
