//! The server (issue 5), measured through its gRPC API with its baselines:
//!
//! 1. **Send round trip.** One connection to the local feed server's correlation echo; a tonic
//!    client calls `Send` (text mode, `application/json`, a 100-byte JSON payload) sequentially,
//!    after a warm-up, and each call is timed. The baseline, measured in the same run against the
//!    same feed server: a bare tokio-tungstenite client that writes the correlation envelope
//!    `{"id":"<uuid>","payload":...}` itself and reads the echo. The ratio is what the gRPC hop and
//!    wsm add to a round trip the client could make directly.
//! 2. **10,000 idle connections.** `Connect` RPCs to the feed server (with `streams=0`, so the
//!    connections stay silent) with a bounded number in flight; the time until the last one is
//!    answered, the server's RSS before and after, and, at the end, `List` must show every one
//!    `connected`. Then the server holds them idle for a while and its CPU time is read: that
//!    server runs with `--record-ttl-seconds 30`, so its refresh of every record (every TTL ÷ 3)
//!    falls into the window. The baseline, measured in the same run against the same feed server
//!    once the server is gone: a bare tokio-tungstenite client opening the same connections with
//!    the same number in flight, in a process of its own like the server (this binary again, in
//!    its `--bare-connect-child` mode, on a multi-threaded runtime like `wsm serve`'s), timed
//!    until its last handshake is done. The ratio is what the gRPC calls and wsm's bookkeeping
//!    (records, indexes, tasks) add to opening the sockets.
//! 3. **1,000 TLS connections** (`BENCH_TLS_CONNS`): `Connect` to a `wss://` feed (rustls, a CA
//!    made at start and trusted with `--ca-file`, the certificate naming 127.0.0.1 as the URLs do),
//!    against the same number to a `ws://` feed, each
//!    through a fresh server in the same run: the time until all are answered, and the RSS growth
//!    per connection. The ratio is what TLS costs.
//!
//! The server is the built `wsm` binary, spawned as `wsm serve` (memory state and bus, free ports,
//! `--allow-private-networks` since the feed is on loopback, `--max-connections 0`). A process of
//! its own is what a client talks to in production, it keeps the server's runtime apart from the
//! client's and the feed's, and its RSS can be read from `/proc/<pid>/status`. Each figure gets a
//! fresh process. The feed server runs in this process on its own thread and single-threaded
//! runtime; the clients (gRPC and bare) run on another single-threaded runtime.
//!
//! `scripts/bench_server.sh` (raises `ulimit -n`, then `cargo bench -p wsm --bench server`)
//!
//! Both this process (the feed side) and the server hold one socket per connection, so 10,000
//! connections need an open-file limit above 10,000; the bench raises its soft limit to the hard
//! one (the server inherits it) and says so when that is not enough.
//!
//! Environment: `BENCH_SENDS` (timed calls per run, default 20 000), `BENCH_WARMUP` (untimed calls
//! first, default 2 000), `BENCH_RUNS` (runs of figure 1, each timing both paths; default 3),
//! `BENCH_CONNS` (default 10 000), `BENCH_INFLIGHT` (Connect RPCs in flight, default 128),
//! `BENCH_IDLE_SECONDS` (the idle window, default 12), `BENCH_ONLY` (`send`, `idle` or `tls`), `WSM_BIN`
//! (the `wsm` binary; default the one cargo built for this bench), `BENCH_ROWS` (append the main
//! figures as rows to this file for `scripts/bench.sh`).
//!
//! Without `--bench` (`cargo test --all-targets`) it runs a smoke version: 200 calls, 50
//! connections, a second or two. A run with failed calls, wrong echoes or connections that are not
//! `connected` exits with status 1 after the table.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use feed_server::FeedConfig;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::runtime::Builder;
use tokio_tungstenite::tungstenite::Message;
use wsm::proto::{ConnectRequest, ListRequest, SendRequest, TagFilter};

#[path = "support/mod.rs"]
mod support;

use support::rows::{grouped, Rows};
use support::{env_or, spawn_wsm, wanted, wsm_bin, Client, Feed, Latencies};

/// Size of the `Send` payload, in bytes.
const PAYLOAD_SIZE: usize = 100;
/// The tag every idle connection carries; `List` filters on it.
const IDLE_TAG: (&str, &str) = ("bench", "idle");
/// Goals (issue 5).
const GOAL_SEND_MEDIAN_US: f64 = 250.0;
const GOAL_ESTABLISH: Duration = Duration::from_secs(10);
const GOAL_RSS: u64 = 1 << 30;
/// How often the server re-saves every record it owns in figure 2 (record TTL ÷ 3; the TTL is
/// set to 30 s, its minimum, so a short idle window sees a refresh).
const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// Bound against hangs only.
const HANG: Duration = Duration::from_secs(300);

struct Settings {
    smoke: bool,
    sends: usize,
    warmup: usize,
    runs: usize,
    conns: usize,
    /// Connections of figure 3, over each of ws:// and wss://.
    tls_conns: usize,
    inflight: usize,
    /// How long figure 2 watches the server hold its connections idle.
    idle_window: Duration,
    send: bool,
    idle: bool,
    tls: bool,
    wsm_bin: PathBuf,
}

impl Settings {
    fn from_env() -> Self {
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
fn raise_fd_limit() -> u64 {
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

// ---------------------------------------------------------------------------------------------
// The feed server

/// The feed server both figures connect to: nothing streams (connections opened with `streams=0`
/// only get echoes), and every request is recorded, so only a few are kept.
fn start_feed() -> Feed {
    Feed::start(FeedConfig {
        rate: 1,
        auto_stream: false,
        record_limit: 1024,
        ..FeedConfig::default()
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Send round trip

/// A JSON object of exactly `PAYLOAD_SIZE` bytes.
fn payload() -> String {
    let head = r#"{"method":"depth","params":{"symbol":"BTCUSDT","limit":20},"pad":""#;
    let pad = PAYLOAD_SIZE - head.len() - 2;
    let text = format!("{head}{}\"}}", "x".repeat(pad));
    assert_eq!(text.len(), PAYLOAD_SIZE);
    text
}

/// Whether `response` is the echo of `payload` with a 36-character id: `{"id":"…","payload":…}`.
fn is_echo(response: &[u8], payload: &str) -> bool {
    let head = br#"{"id":""#;
    let tail = format!("\",\"payload\":{payload}}}");
    response.len() == head.len() + 36 + tail.len()
        && response.starts_with(head)
        && response.ends_with(tail.as_bytes())
}

async fn grpc_calls(
    client: &mut Client,
    id: &str,
    payload: &str,
    n: usize,
) -> Result<Vec<Duration>, String> {
    let mut times = Vec::with_capacity(n);
    for call in 0..n {
        let started = Instant::now();
        let request = SendRequest {
            id: id.to_owned(),
            message: payload.as_bytes().to_vec(),
            timeout_ms: 0,
            content_type: "application/json".into(),
        };
        let response = client
            .send(request)
            .await
            .map_err(|e| format!("Send {call}: {e}"))?;
        times.push(started.elapsed());
        let response = response.into_inner().response;
        if !is_echo(&response, payload) {
            return Err(format!(
                "Send {call}: not the echo: {}",
                String::from_utf8_lossy(&response)
            ));
        }
    }
    Ok(times)
}

type Bare =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn bare_calls(ws: &mut Bare, payload: &str, n: usize) -> Result<Vec<Duration>, String> {
    let mut times = Vec::with_capacity(n);
    let mut buffer = uuid::Uuid::encode_buffer();
    for call in 0..n {
        let started = Instant::now();
        let id = uuid::Uuid::new_v4();
        let id = id.hyphenated().encode_lower(&mut buffer);
        let envelope = format!("{{\"id\":\"{id}\",\"payload\":{payload}}}");
        ws.send(Message::Text(envelope.into()))
            .await
            .map_err(|e| format!("bare send {call}: {e}"))?;
        let reply = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => break text,
                Some(Ok(_)) => continue,
                other => return Err(format!("bare call {call}: the stream ended: {other:?}")),
            }
        };
        times.push(started.elapsed());
        if !is_echo(reply.as_bytes(), payload) || &reply.as_str()[7..43] != id {
            return Err(format!("bare call {call}: not the echo: {reply}"));
        }
    }
    Ok(times)
}

/// Figure 1: per run, both paths' [median, p90, p99, max] in µs.
struct SendFigure {
    grpc: Vec<[f64; 4]>,
    bare: Vec<[f64; 4]>,
}

async fn send_figure(
    settings: &Settings,
    feed: &Feed,
    problems: &mut Vec<String>,
) -> Option<SendFigure> {
    let wsm = spawn_wsm(&settings.wsm_bin, &[]);
    let mut client = wsm.unbounded_client().await;
    let connected = client
        .connect(ConnectRequest {
            url: feed.silent_url(),
            ..ConnectRequest::default()
        })
        .await;
    let id = match connected {
        Ok(response) => response.into_inner().id,
        Err(e) => {
            problems.push(format!("Connect for Send: {e}\n{}", wsm.logs()));
            return None;
        }
    };
    let (mut bare, _) = tokio_tungstenite::connect_async_with_config(feed.silent_url(), None, true)
        .await
        .expect("bare client connects");
    let payload = payload();
    let mut figure = SendFigure {
        grpc: Vec::new(),
        bare: Vec::new(),
    };
    let warm = async {
        grpc_calls(&mut client, &id, &payload, settings.warmup).await?;
        bare_calls(&mut bare, &payload, settings.warmup).await
    };
    if let Err(e) = warm.await {
        problems.push(format!("warm-up: {e}"));
        return None;
    }
    for run in 0..settings.runs {
        // Alternate the order, so a drift in the machine's speed does not favour one path.
        let (grpc, bare_times) = if run % 2 == 0 {
            let grpc = grpc_calls(&mut client, &id, &payload, settings.sends).await;
            (grpc, bare_calls(&mut bare, &payload, settings.sends).await)
        } else {
            let bare_times = bare_calls(&mut bare, &payload, settings.sends).await;
            (
                grpc_calls(&mut client, &id, &payload, settings.sends).await,
                bare_times,
            )
        };
        let (grpc, bare_times) = match (grpc, bare_times) {
            (Ok(g), Ok(b)) => (Latencies::new(g), Latencies::new(b)),
            (g, b) => {
                problems.extend(g.err());
                problems.extend(b.err());
                problems.push(wsm.logs());
                return None;
            }
        };
        let (g, b) = (grpc.summary(), bare_times.summary());
        println!(
            "send run {}: {} calls each; gRPC → wsm → feed median {:.1} µs (p90 {:.1}, p99 {:.1}, \
             max {:.0}); bare client median {:.1} µs (p90 {:.1}, p99 {:.1}, max {:.0})",
            run + 1,
            settings.sends,
            g[0],
            g[1],
            g[2],
            g[3],
            b[0],
            b[1],
            b[2],
            b[3]
        );
        figure.grpc.push(g);
        figure.bare.push(b);
    }
    let _ = bare.close(None).await;
    Some(figure)
}

// ---------------------------------------------------------------------------------------------
// 2. Idle connections

struct IdleFigure {
    conns: usize,
    established: Duration,
    /// Connect latency: median and p99 in ms.
    connect_ms: [f64; 2],
    rss_before: u64,
    rss_after: u64,
    peak: u64,
    connected: usize,
    listed: usize,
    feed_side: usize,
    /// CPU the server used while holding the connections idle, how long that was, how many
    /// record refreshes fell into it, and the RSS at its end.
    idle_cpu: Duration,
    idle_window: Duration,
    refreshes: f64,
    rss_idle: u64,
    /// The baseline: the bare client's time to open the same connections, or why it has none.
    bare: Result<Duration, String>,
}

async fn idle_figure(
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

/// Opens `n` silent connections to `url` through `Connect`, `inflight` at a time, each tagged
/// [`IDLE_TAG`]: the time until the last answer, every call's latency, and how many failed (the
/// first failure goes into `problems`). `None` if they did not finish in time.
async fn connect_all(
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

// ---------------------------------------------------------------------------------------------
// 3. TLS connections

/// One side of figure 3: `n` connections opened through a fresh `wsm serve`.
struct Opened {
    established: Duration,
    /// RSS growth from before the first Connect to after the last.
    grown: u64,
    connected: usize,
}

/// Opens `n` silent connections to `url` through a fresh server started with `extra`.
async fn open_through_fresh_server(
    settings: &Settings,
    extra: &[&str],
    url: &str,
    n: usize,
    problems: &mut Vec<String>,
) -> Option<Opened> {
    let wsm = spawn_wsm(&settings.wsm_bin, extra);
    let client = wsm.unbounded_client().await;
    if let Err(e) = client.clone().list(ListRequest::default()).await {
        problems.push(format!("List before: {e}"));
        return None;
    }
    let (rss_before, _) = wsm.memory();
    let (established, _, failed) =
        connect_all(&client, url, n, settings.inflight, problems).await?;
    let (rss_after, _) = wsm.memory();
    if failed > 0 {
        problems.push(format!(
            "{failed} of {n} Connect calls to {url} failed; wsm's log ends:\n{}",
            wsm.logs()
        ));
    }
    let listed = client
        .clone()
        .list(ListRequest::default())
        .await
        .map(|l| l.into_inner().connections)
        .unwrap_or_default();
    let connected = listed.iter().filter(|c| c.status == "connected").count();
    if connected != n {
        problems.push(format!(
            "{connected} of {n} connections to {url} are connected"
        ));
    }
    Some(Opened {
        established,
        grown: rss_after.saturating_sub(rss_before),
        connected,
    })
}

/// Figure 3: the same number of connections over `wss://` (a TLS feed, its certificate from a
/// CA made now and trusted with `--ca-file`) and over `ws://`, each through a fresh server.
async fn tls_figure(settings: &Settings, problems: &mut Vec<String>) -> Option<(Opened, Opened)> {
    let ca = wsm_testkit::tls::TestCa::new("bench CA");
    // The IP as well: the URLs name 127.0.0.1, so no dial pays for a name lookup.
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().expect("a directory for the CA file");
    let ca_file = ca.write_ca_file(dir.path());
    let ca_file = ca_file.to_str().expect("a UTF-8 path");
    let tls = feed_server::tls::server_config(
        leaf.cert_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        feed_server::tls::TlsVersions::All,
        None,
    )
    .expect("the feed's TLS configuration");
    let plain = Feed::start(FeedConfig {
        rate: 1,
        auto_stream: false,
        record_limit: 16,
        ..FeedConfig::default()
    });
    let secure = Feed::start(FeedConfig {
        rate: 1,
        auto_stream: false,
        record_limit: 16,
        tls: Some(tls),
        ..FeedConfig::default()
    });
    let n = settings.tls_conns;
    let extra = ["--ca-file", ca_file];
    let ws_url = plain.handle.url("/ws?streams=0");
    let wss_url = secure.handle.url("/ws?streams=0");
    let ws = open_through_fresh_server(settings, &extra, &ws_url, n, problems).await;
    let wss = open_through_fresh_server(settings, &extra, &wss_url, n, problems).await;
    plain.stop();
    secure.stop();
    Some((ws?, wss?))
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
const BARE_CHILD: &str = "--bare-connect-child";

/// Child mode: `--bare-connect-child URL N INFLIGHT` opens N WebSocket connections to URL with
/// INFLIGHT handshakes in flight, prints `opened <n> failed <n> nanos <n>` once all are done, holds
/// them until stdin closes, and exits. The runtime is multi-threaded with one worker per core, as
/// `wsm serve`'s is.
fn bare_connect_child(args: &[String]) -> i32 {
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

// ---------------------------------------------------------------------------------------------

/// The median of each statistic over the runs.
fn medians(runs: &[[f64; 4]]) -> [f64; 4] {
    std::array::from_fn(|i| {
        let mut v: Vec<f64> = runs.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    })
}

fn spread(runs: &[[f64; 4]]) -> (f64, f64) {
    let medians = runs.iter().map(|r| r[0]);
    (
        medians.clone().fold(f64::INFINITY, f64::min),
        medians.fold(0.0, f64::max),
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == BARE_CHILD) {
        std::process::exit(bare_connect_child(&args[at + 1..]));
    }
    let settings = Settings::from_env();
    let fd_limit = raise_fd_limit();
    let needed = settings.conns as u64 + 256;
    println!(
        "server: wsm at {}; open-file limit {fd_limit}{}{}",
        settings.wsm_bin.display(),
        if settings.idle && fd_limit < needed {
            format!(" — too low for {} connections (needs about {needed}): raise the hard limit (scripts/bench_server.sh does)", settings.conns)
        } else {
            String::new()
        },
        if settings.smoke {
            "; smoke run (debug build: the figures mean nothing)"
        } else {
            ""
        }
    );
    let feed = start_feed();
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let mut problems = Vec::new();
    let send = settings
        .send
        .then(|| runtime.block_on(send_figure(&settings, &feed, &mut problems)))
        .flatten();
    let idle = settings
        .idle
        .then(|| runtime.block_on(idle_figure(&settings, &feed, &mut problems)))
        .flatten();
    let tls = settings
        .tls
        .then(|| runtime.block_on(tls_figure(&settings, &mut problems)))
        .flatten();
    drop(runtime);
    feed.stop();

    let pass = |ok: bool| match (settings.smoke, ok) {
        (true, _) => "",
        (false, true) => " ✅",
        (false, false) => " ❌",
    };
    let rows = Rows::from_env("scripts/bench_server.sh", settings.smoke);
    println!();
    println!("| figure | value | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    if let Some(send) = &send {
        let g = medians(&send.grpc);
        let b = medians(&send.bare);
        let (g_lo, g_hi) = spread(&send.grpc);
        let (b_lo, b_hi) = spread(&send.bare);
        println!(
            "| `Send` round trip, gRPC → wsm → feed echo, sequential: median (p90, p99, max) µs; \
             [fastest – slowest run's median] | {:.0} ({:.0}, {:.0}, {:.0}) [{g_lo:.0} – {g_hi:.0}] \
             | bare tokio-tungstenite client, same echo: {:.0} ({:.0}, {:.0}, {:.0}) [{b_lo:.0} – {b_hi:.0}] \
             | {:.2} × (median) | median ≤ {GOAL_SEND_MEDIAN_US} µs{} |",
            g[0],
            g[1],
            g[2],
            g[3],
            b[0],
            b[1],
            b[2],
            b[3],
            g[0] / b[0],
            pass(g[0] <= GOAL_SEND_MEDIAN_US),
        );
        rows.add(
            &format!(
                "`Send` round trip, gRPC → wsm → feed echo, sequential, 100-byte JSON: median \
                 (p99) of {} run(s) × {} calls",
                settings.runs,
                grouped(settings.sends as f64)
            ),
            &format!("{} µs ({} µs)", grouped(g[0]), grouped(g[2])),
            &format!(
                "bare tokio-tungstenite client, same echo: {} µs ({} µs)",
                grouped(b[0]),
                grouped(b[2])
            ),
            &format!("{:.2}", g[0] / b[0]),
            &format!(
                "median ≤ {GOAL_SEND_MEDIAN_US} µs{}",
                pass(g[0] <= GOAL_SEND_MEDIAN_US)
            ),
        );
    }
    if let Some(idle) = &idle {
        let rate = idle.conns as f64 / idle.established.as_secs_f64();
        let (bare, ratio) = match &idle.bare {
            Ok(bare) => (
                format!(
                    "bare tokio-tungstenite client, same connections and concurrency: {:.2} s",
                    bare.as_secs_f64()
                ),
                format!("{:.2}", idle.established.as_secs_f64() / bare.as_secs_f64()),
            ),
            Err(_) => (
                "bare client: failed (the bench's output says why)".to_owned(),
                "—".to_owned(),
            ),
        };
        let goal = format!(
            "≤ {} s{}",
            GOAL_ESTABLISH.as_secs(),
            pass(idle.established <= GOAL_ESTABLISH)
        );
        println!(
            "| {} idle connections: all `Connect` calls answered ({} in flight); Connect median \
             (p99) | {:.2} s = {rate:.0}/s; {:.1} ms ({:.1} ms) | {bare} | {ratio} | {goal} |",
            idle.conns,
            settings.inflight,
            idle.established.as_secs_f64(),
            idle.connect_ms[0],
            idle.connect_ms[1],
        );
        rows.add(
            &format!(
                "{} idle connections opened through `Connect` ({} in flight): time until all \
                 are answered",
                grouped(idle.conns as f64),
                settings.inflight
            ),
            &format!(
                "{:.2} s ({}/s)",
                idle.established.as_secs_f64(),
                grouped(rate)
            ),
            &bare,
            &ratio,
            &goal,
        );
        let grown = idle.rss_after.saturating_sub(idle.rss_before);
        println!(
            "| wsm RSS before → after the last Connect (peak, to the end) | {:.1} MiB → {:.1} MiB ({:.1} MiB) | — | — | ≤ 1 GiB{} |",
            mib(idle.rss_before),
            mib(idle.rss_after),
            mib(idle.peak),
            pass(idle.peak <= GOAL_RSS),
        );
        rows.add(
            &format!(
                "wsm RSS with {} idle connections: before → after the last Connect (peak)",
                grouped(idle.conns as f64)
            ),
            &format!(
                "{:.1} → {:.1} MiB ({:.1} MiB)",
                mib(idle.rss_before),
                mib(idle.rss_after),
                mib(idle.peak)
            ),
            "— (no runnable alternative)",
            "—",
            &format!("peak ≤ 1 GiB{}", pass(idle.peak <= GOAL_RSS)),
        );
        println!(
            "| RSS per connection ((after − before) ÷ {}) | {:.0} bytes ({:.1} KiB) | — | — | — |",
            idle.conns,
            grown as f64 / idle.conns as f64,
            grown as f64 / idle.conns as f64 / 1024.0,
        );
        println!(
            "| wsm CPU while holding them idle: {:.1} s, {} refresh(es) of every record (TTL {} s) \
             | {:.2} s CPU = {:.1} % of one core; RSS then {:.1} MiB | — | — | — |",
            idle.idle_window.as_secs_f64(),
            idle.refreshes,
            REFRESH_EVERY.as_secs() * 3,
            idle.idle_cpu.as_secs_f64(),
            100.0 * idle.idle_cpu.as_secs_f64() / idle.idle_window.as_secs_f64(),
            mib(idle.rss_idle),
        );
        println!(
            "| `List` at the end | {} listed, {} `connected`; feed side: {} open | — | — | all {}{} |",
            idle.listed,
            idle.connected,
            idle.feed_side,
            idle.conns,
            pass(idle.connected == idle.conns && idle.listed == idle.conns),
        );
    }
    if let Some((ws, wss)) = &tls {
        let per = |o: &Opened| o.grown as f64 / settings.tls_conns as f64 / 1024.0;
        let ratio = wss.established.as_secs_f64() / ws.established.as_secs_f64();
        println!(
            "| {} connections through `Connect` over wss:// (TLS 1.3, test CA): time; RSS per \
             connection | {:.2} s; {:.1} KiB | the same over ws://: {:.2} s; {:.1} KiB | {ratio:.2} × \
             (time), {:.2} × (memory) | — |",
            settings.tls_conns,
            wss.established.as_secs_f64(),
            per(wss),
            ws.established.as_secs_f64(),
            per(ws),
            per(wss) / per(ws).max(f64::MIN_POSITIVE),
        );
        rows.add(
            &format!(
                "{} connections opened through `Connect` over wss:// ({} in flight): time; RSS \
                 growth per connection",
                grouped(settings.tls_conns as f64),
                settings.inflight
            ),
            &format!(
                "{:.2} s; {:.1} KiB",
                wss.established.as_secs_f64(),
                per(wss)
            ),
            &format!(
                "the same over ws://, same run: {:.2} s; {:.1} KiB",
                ws.established.as_secs_f64(),
                per(ws)
            ),
            &format!("{ratio:.2} (time)"),
            &format!("— ({} and {} connected)", wss.connected, ws.connected),
        );
    }
    println!();
    if settings.send {
        println!(
            "figure 1: median of {} run(s) × {} calls per path, after {} warm-up calls",
            settings.runs, settings.sends, settings.warmup
        );
    }
    if settings.idle {
        println!(
            "figure 2: {} connections, {} Connect calls in flight, {:.0} s idle",
            settings.conns,
            settings.inflight,
            settings.idle_window.as_secs_f64()
        );
    }
    println!("command: scripts/bench_server.sh (cargo bench -p wsm --bench server)");
    if !problems.is_empty() {
        eprintln!("\nFAILURES — these figures do not count:");
        for problem in &problems {
            eprintln!("  {problem}");
        }
        std::process::exit(1);
    }
}
