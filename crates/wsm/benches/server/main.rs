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

#[path = "../support/mod.rs"]
mod support;

mod common;
mod idle;
mod send;
mod tls;

use std::time::Duration;

use tokio::runtime::Builder;

use support::rows::{grouped, Rows};

use common::{medians, mib, raise_fd_limit, spread, start_feed, Settings};
use idle::{bare_connect_child, idle_figure, BARE_CHILD, REFRESH_EVERY};
use send::send_figure;
use tls::{tls_figure, Opened};

/// Goals (issue 5).
const GOAL_SEND_MEDIAN_US: f64 = 250.0;
const GOAL_ESTABLISH: Duration = Duration::from_secs(10);
const GOAL_RSS: u64 = 1 << 30;

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
