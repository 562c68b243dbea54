//! Shared by both figures: the settings and spawning an instance.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{env_or, spawn_wsm, wanted, wsm_bin, WsmProcess};

/// Bound against hangs only.
pub(crate) const HANG: Duration = Duration::from_secs(60);

pub(crate) struct Settings {
    pub(crate) smoke: bool,
    pub(crate) runs: usize,
    pub(crate) calls: usize,
    pub(crate) warmup: usize,
    /// Calls per path in a row before the other path's turn.
    pub(crate) block: usize,
    pub(crate) failover: bool,
    pub(crate) forward: bool,
    pub(crate) wsm_bin: PathBuf,
}

impl Settings {
    pub(crate) fn from_env() -> Self {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let (runs, calls, warmup, block) = if smoke {
            (1, 200, 20, 100)
        } else {
            (
                env_or("BENCH_RUNS", 5usize).max(1),
                env_or("BENCH_CALLS", 20_000usize).max(1),
                env_or("BENCH_WARMUP", 2_000usize),
                1000,
            )
        };
        Settings {
            smoke,
            runs,
            calls,
            warmup,
            block,
            failover: wanted("failover"),
            forward: wanted("forward"),
            wsm_bin: wsm_bin(),
        }
    }
}

/// An instance on the Redis at `redis` (state and pub/sub) named `id`, then `extra`.
pub(crate) fn instance(settings: &Settings, redis: &str, id: &str, extra: &[&str]) -> WsmProcess {
    let base = [
        "--state",
        "redis",
        "--pubsub",
        "redis",
        "--redis-url",
        redis,
        "--instance-id",
        id,
        "--log-level",
        "warn",
    ];
    spawn_wsm(&settings.wsm_bin, &[&base[..], extra].concat())
}

pub(crate) fn ms(value: Option<i64>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v} ms"))
}
