//! 10,000 idle connections through the server against a bare client process opening them.

use std::io::{BufRead, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::runtime::Builder;
use wsm::proto::{ListRequest, TagFilter};

use crate::support::{spawn_wsm, Feed, Latencies};

use super::common::{connect_all, Settings, HANG, IDLE_TAG};

/// How often the server re-saves every record it owns in figure 2 (record TTL ÷ 3; the TTL is
/// set to 30 s, its minimum, so a short idle window sees a refresh).
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct IdleFigure {
    pub(crate) conns: usize,
    pub(crate) established: Duration,
    /// Connect latency: median and p99 in ms.
    pub(crate) connect_ms: [f64; 2],
    pub(crate) rss_before: u64,
    pub(crate) rss_after: u64,
    pub(crate) peak: u64,
    pub(crate) connected: usize,
    pub(crate) listed: usize,
    pub(crate) feed_side: usize,
    /// CPU the server used while holding the connections idle, how long that was, how many
    /// record refreshes fell into it, and the RSS at its end.
    pub(crate) idle_cpu: Duration,
    pub(crate) idle_window: Duration,
    pub(crate) refreshes: f64,
    pub(crate) rss_idle: u64,
    /// The baseline: the bare client's time to open the same connections, or why it has none.
    pub(crate) bare: Result<Duration, String>,
}

pub(crate) async fn idle_figure(
    settings: &Settings,
    feed: &Feed,
    problems: &mut Vec<String>,
) -> Option<IdleFigure> {
    let ttl = REFRESH_EVERY.as_secs() * 3;
    let wsm = spawn_wsm(
        &settings.wsm_bin,
        &["--record-ttl-seconds", &ttl.to_string()],
    );
    let spawned = Instant::now();
    let client = wsm.unbounded_client().await;
    // One call first, so the before figure includes a served gRPC connection.
    if let Err(e) = client.clone().list(ListRequest::default()).await {
        problems.push(format!("List before: {e}"));
        return None;
    }
    let (rss_before, _) = wsm.memory();
    let url = feed.silent_url();
    let (established, latencies, failed) =
        connect_all(&client, &url, settings.conns, settings.inflight, problems).await?;
    let (rss_after, _) = wsm.memory();
    if failed > 0 {
        problems.push(format!(
            "{failed} of {} Connect calls failed; wsm's log ends:\n{}",
            settings.conns,
            wsm.logs()
        ));
    }
    let latencies = Latencies::new(latencies);
    let listed = client
        .clone()
        .list(ListRequest {
            filters: vec![TagFilter {
                key: IDLE_TAG.0.into(),
                value: IDLE_TAG.1.into(),
            }],
        })
        .await;
    let (listed, connected) = match listed {
        Ok(list) => {
            let list = list.into_inner().connections;
            let connected = list.iter().filter(|c| c.status == "connected").count();
            (list.len(), connected)
        }
        Err(e) => {
            problems.push(format!("List after: {e}"));
            (0, 0)
        }
    };
    if connected != settings.conns || listed != settings.conns {
        problems.push(format!(
            "List shows {listed} connections, {connected} of them connected; expected {} connected",
            settings.conns
        ));
    }
    // The feed registers a session as its handshake completes, which may trail the client's.
    feed.handle
        .wait_for_connections(settings.conns, Duration::from_secs(5))
        .await;
    let feed_side = feed.handle.connections();
    if feed_side != settings.conns {
        problems.push(format!(
            "the feed server has {feed_side} connections open; expected {}",
            settings.conns
        ));
    }
    // Idle: what holding the connections costs, including the owner's record refreshes.
    let cpu_before = wsm.cpu();
    let idle_from = spawned.elapsed();
    tokio::time::sleep(settings.idle_window).await;
    let idle_cpu = wsm.cpu().saturating_sub(cpu_before);
    let idle_to = spawned.elapsed();
    // The refresher runs every REFRESH_EVERY from the server's start.
    let refreshes = (idle_to.as_secs_f64() / REFRESH_EVERY.as_secs_f64()).floor()
        - (idle_from.as_secs_f64() / REFRESH_EVERY.as_secs_f64()).floor();
    let (rss_idle, peak) = wsm.memory();
    drop(wsm);
    let bare = bare_connects(settings, feed).await;
    if let Err(e) = &bare {
        problems.push(format!("baseline (bare client connects): {e}"));
    }
    Some(IdleFigure {
        conns: settings.conns,
        established,
        connect_ms: [
            latencies.quantile(0.5) / 1000.0,
            latencies.quantile(0.99) / 1000.0,
        ],
        rss_before,
        rss_after,
        peak,
        connected,
        listed,
        feed_side,
        idle_cpu,
        idle_window: idle_to - idle_from,
        refreshes,
        rss_idle,
        bare,
    })
}

/// The baseline of figure 2: a bare tokio-tungstenite client opening the same number of silent
/// connections to the same feed with the same number in flight, in a child process of its own
/// (`--bare-connect-child`). Returns the time until its last handshake completed.
async fn bare_connects(settings: &Settings, feed: &Feed) -> Result<Duration, String> {
    // The server's connections must be gone from the feed first: the feed's side of both sets
    // would not fit into this process's open-file limit together.
    if !feed
        .handle
        .wait_for_connections(0, Duration::from_secs(30))
        .await
    {
        return Err(format!(
            "the feed server still has {} connections open 30 s after wsm was killed",
            feed.handle.connections()
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("the bench's own path: {e}"))?;
    let mut child = tokio::process::Command::new(&exe)
        .arg(BARE_CHILD)
        .arg(feed.silent_url())
        .arg(settings.conns.to_string())
        .arg(settings.inflight.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {} {BARE_CHILD}: {e}", exe.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or("the bare client's stdout is not piped")?;
    let line = tokio::time::timeout(HANG, BufReader::new(stdout).lines().next_line())
        .await
        .map_err(|_| format!("the bare client did not report within {HANG:?}"))?
        .map_err(|e| format!("reading the bare client's report: {e}"))?
        .ok_or("the bare client exited without a report (its stderr says why)")?;
    // `opened <n> failed <n> nanos <n>`
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .step_by(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    let [opened, failed, nanos] = fields[..] else {
        return Err(format!("unreadable report from the bare client: {line}"));
    };
    if failed > 0 || opened != settings.conns as u64 {
        return Err(format!(
            "the bare client opened {opened} of {} connections ({failed} failed)",
            settings.conns
        ));
    }
    // All of them open at the same time, as the server's were.
    let all_open = feed
        .handle
        .wait_for_connections(settings.conns, Duration::from_secs(5))
        .await;
    let feed_side = feed.handle.connections();
    // Closing its stdin lets the child close its connections and exit.
    drop(child.stdin.take());
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        other => return Err(format!("the bare client did not exit cleanly: {other:?}")),
    }
    if !all_open {
        return Err(format!(
            "the feed server had {feed_side} of the bare client's {} connections open",
            settings.conns
        ));
    }
    Ok(Duration::from_nanos(nanos))
}

/// The argument that makes this binary the bare client of figure 2's baseline.
pub(crate) const BARE_CHILD: &str = "--bare-connect-child";

/// Child mode: `--bare-connect-child URL N INFLIGHT` opens N WebSocket connections to URL with
/// INFLIGHT handshakes in flight, prints `opened <n> failed <n> nanos <n>` once all are done, holds
/// them until stdin closes, and exits. The runtime is multi-threaded with one worker per core, as
/// `wsm serve`'s is.
pub(crate) fn bare_connect_child(args: &[String]) -> i32 {
    let [url, n, inflight] = args else {
        eprintln!("{BARE_CHILD}: want URL N INFLIGHT, got {args:?}");
        return 2;
    };
    let (Ok(n), Ok(inflight)) = (n.parse::<usize>(), inflight.parse::<usize>()) else {
        eprintln!("{BARE_CHILD}: N and INFLIGHT must be numbers, got {n:?} and {inflight:?}");
        return 2;
    };
    let runtime = match Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{BARE_CHILD}: cannot build a runtime: {e}");
            return 1;
        }
    };
    let (results, elapsed) = runtime.block_on(async {
        let started = Instant::now();
        let results: Vec<_> = futures_util::stream::iter(0..n)
            .map(|_| tokio_tungstenite::connect_async_with_config(url.as_str(), None, true))
            .buffer_unordered(inflight.max(1))
            .collect()
            .await;
        (results, started.elapsed())
    });
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    for result in results {
        match result {
            Ok((ws, _)) => open.push(ws),
            Err(e) => {
                if failed == 0 {
                    eprintln!("{BARE_CHILD}: a connect to {url} failed: {e}");
                }
                failed += 1;
            }
        }
    }
    println!(
        "opened {} failed {failed} nanos {}",
        open.len(),
        elapsed.as_nanos()
    );
    let _ = std::io::stdout().flush();
    // Hold the connections until the parent has counted them on the feed's side.
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    drop(open);
    drop(runtime);
    0
}
