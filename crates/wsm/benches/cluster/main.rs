//! Several instances on one Redis (issue 6), measured with real `wsm serve` processes:
//!
//! 1. **Failover time.** Per run: a fresh `redis-server`, three instances A, B and C on it (Redis
//!    state and pub/sub, heartbeat 1 s, stale after 3 s, reconnect base 100 ms), and the feed
//!    server streaming 100 frames/s per connection. B and C start after random pauses of 0–250 ms,
//!    so their observers, which read the heartbeats every quarter heartbeat, look at random phases
//!    of A's heartbeat. Five connections are created through A, each publishing to its own topic.
//!    Once every topic holds 20 events and all three instances have run for two heartbeats, the
//!    bench sleeps a random 0–1000 ms, so the kill lands at a random phase of A's heartbeat, notes
//!    the wall-clock time and SIGKILLs A. A connection's failover time is the time in the Redis
//!    stream entry id of its first event with `epoch` ≥ 2 (published by the survivor that took it
//!    over) minus the kill time; both are this machine's wall clock. Per run: the first connection
//!    back and the last (all back). To split the time into its parts, each run also reads when A
//!    last wrote its heartbeat (its `lastSeenAt`) and when the survivors claimed the connections
//!    and finished their handshakes (the entry times of their `connecting` and `connected`
//!    lifecycle events). Every topic is then checked: epochs only go up, and within each epoch
//!    `seq` goes up by one from 1, so no frame was lost or reordered while an owner was alive.
//! 2. **Forwarding overhead.** Two instances A and B on one Redis (default heartbeat), and one
//!    silent connection created through A. A tonic client calls `SendRaw` (`text/plain`, 100 bytes)
//!    sequentially on A (direct: A owns the connection) and on B (forwarded: B finds A is the owner
//!    and passes the call on over gRPC), after a warm-up, in alternating blocks of 1000 calls so both
//!    paths see the same machine conditions. B's `wsm_forwarded_total` must count every call sent to
//!    B; A must have forwarded nothing and nobody may have taken the connection over.
//!
//! The instances are the built `wsm` binary, spawned as `wsm serve` on free loopback ports with
//! `--allow-private-networks` (the feed is on loopback) and `--log-level warn`. The feed server runs
//! in this process on its own thread and single-threaded runtime; the clients and the Redis reader
//! run on another single-threaded runtime.
//!
//! `scripts/bench_cluster.sh` (`cargo bench -p wsm --bench cluster`)
//!
//! Environment: `BENCH_RUNS` (failover runs, default 5), `BENCH_CALLS` (timed `SendRaw` calls per
//! path, default 20 000), `BENCH_WARMUP` (untimed calls per path first, default 2 000),
//! `BENCH_ONLY` (`failover` or `forward`), `WSM_BIN` (the `wsm` binary; default the one cargo built
//! for this bench), `BENCH_ROWS` (append the main figures as rows to this file for
//! `scripts/bench.sh`).
//!
//! Without `--bench` (`cargo test --all-targets`) it runs a smoke version: one failover run and 200
//! calls per path, about ten seconds. It exits with status 1 after the table if a connection did not
//! come back within 30 s, a frame was lost or reordered within an epoch, a call failed, or the calls
//! sent to B were not forwarded.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod failover;
mod forward;
mod streams;

use std::time::Duration;

use tokio::runtime::Builder;

use support::rows::{grouped, Rows};

use common::Settings;
use failover::{
    failover_figure, BACK_WITHIN, EVENTS_BEFORE_KILL, FAILOVER_CONNS, FEED_RATE, HEARTBEAT_S,
    RECONNECT_MS, SETTLE_BEFORE_KILL, STALE_S,
};
use forward::forward_figure;

/// Goals (issue 6).
const GOAL_FAILOVER: Duration = Duration::from_secs(5);
const GOAL_FORWARD_US: f64 = 500.0;
/// What the original C# service documents per forwarded call, for comparison.
const CSHARP_FORWARD_US: f64 = 2000.0;

// ---------------------------------------------------------------------------------------------

/// The median (the upper one of an even count) and the max; `None` if a value is missing.
fn median_max(values: &[Option<i64>]) -> Option<(i64, i64)> {
    let mut v = values.iter().copied().collect::<Option<Vec<i64>>>()?;
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some((v[v.len() / 2], v[v.len() - 1]))
}

fn secs(ms: i64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

fn main() {
    let settings = Settings::from_env();
    println!(
        "cluster: wsm at {}{}",
        settings.wsm_bin.display(),
        if settings.smoke {
            "; smoke run (debug build: the figures mean nothing)"
        } else {
            ""
        }
    );
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let mut problems = Vec::new();
    let failover = settings
        .failover
        .then(|| runtime.block_on(failover_figure(&settings, &mut problems)));
    let forward = settings
        .forward
        .then(|| runtime.block_on(forward_figure(&settings, &mut problems)))
        .flatten();
    drop(runtime);

    let pass = |ok: bool| match (settings.smoke, ok) {
        (true, _) => "",
        (false, true) => " ✅",
        (false, false) => " ❌",
    };
    let rows = Rows::from_env("scripts/bench_cluster.sh", settings.smoke);
    if let Some(runs) = failover.as_ref().filter(|runs| !runs.is_empty()) {
        println!();
        let head: Vec<String> = (1..=runs.len()).map(|r| format!("run {r}")).collect();
        println!("| figure | {} | median | max | goal |", head.join(" | "));
        println!("|---|{}---|---|---|", "---|".repeat(runs.len()));
        let row =
            |name: &str, values: Vec<Option<i64>>, format: &dyn Fn(i64) -> String, goal: &str| {
                let cells: Vec<String> = values
                    .iter()
                    .map(|v| v.map_or_else(|| "not back".to_owned(), format))
                    .collect();
                let (median, max) = median_max(&values)
                    .map_or(("—".to_owned(), "—".to_owned()), |(m, x)| {
                        (format(m), format(x))
                    });
                println!(
                    "| {name} | {} | {median} | {max} | {goal} |",
                    cells.join(" | ")
                );
            };
        let ms_cell = |v: i64| format!("{v} ms");
        row(
            "A's last heartbeat write before the kill",
            runs.iter().map(|r| r.heartbeat_age).collect(),
            &ms_cell,
            "—",
        );
        row(
            "first claim (`connecting` from B or C) after the kill",
            runs.iter().map(|r| r.first_claim()).collect(),
            &secs,
            "—",
        );
        row(
            "claim → handshake done (`connected`), slowest connection",
            runs.iter().map(|r| r.claim_to_connected()).collect(),
            &ms_cell,
            "—",
        );
        row(
            "handshake done → first frame published, slowest connection",
            runs.iter().map(|r| r.connected_to_back()).collect(),
            &ms_cell,
            "—",
        );
        row(
            "**first connection back** (its first frame of epoch ≥ 2, after the kill)",
            runs.iter().map(|r| r.first_back()).collect(),
            &secs,
            "—",
        );
        let all: Vec<Option<i64>> = runs.iter().map(|r| r.all_back()).collect();
        let all_ok =
            median_max(&all).is_some_and(|(_, max)| max <= GOAL_FAILOVER.as_millis() as i64);
        let back = all.iter().filter(|v| v.is_some()).count();
        rows.add(
            &format!(
                "Failover: all {FAILOVER_CONNS} connections of a SIGKILLed instance publishing \
                 again from B or C (heartbeat {HEARTBEAT_S} s, stale after {STALE_S} s): median \
                 (max) of {} run(s)",
                runs.len()
            ),
            &median_max(&all).map_or_else(
                || {
                    format!(
                        "a connection not back within {} s in {} of {} run(s)",
                        BACK_WITHIN.as_secs(),
                        runs.len() - back,
                        runs.len()
                    )
                },
                |(median, max)| format!("{} ({})", secs(median), secs(max)),
            ),
            "no runnable alternative; the C# service marks a peer stale after 30 s by default \
             (documented, not run)",
            "—",
            &format!("≤ {} s (max){}", GOAL_FAILOVER.as_secs(), pass(all_ok)),
        );
        row(
            &format!("**all {FAILOVER_CONNS} connections back**"),
            all,
            &secs,
            &format!("≤ {} s (max){}", GOAL_FAILOVER.as_secs(), pass(all_ok)),
        );
        row(
            "all back after A's last heartbeat write",
            runs.iter()
                .map(|r| Some(r.all_back()? + r.heartbeat_age?))
                .collect(),
            &secs,
            "—",
        );
        let cells: Vec<String> = runs
            .iter()
            .map(|r| format!("{} / {}", r.taken_by("bench-b"), r.taken_by("bench-c")))
            .collect();
        println!(
            "| taken over by B / C | {} | — | — | — |",
            cells.join(" | ")
        );
        let cells: Vec<String> = runs
            .iter()
            .map(|r| format!("{} of {}", r.lost, r.checked))
            .collect();
        let lost: u64 = runs.iter().map(|r| r.lost).sum();
        println!(
            "| frames lost within an epoch, of the events checked | {} | — | {lost} | 0{} |",
            cells.join(" | "),
            pass(lost == 0)
        );
    }
    if let Some(f) = &forward {
        println!();
        println!("| `SendRaw`, sequential, µs | median | p90 | p99 | max |");
        println!("|---|---|---|---|---|");
        for (name, s) in [
            ("direct: client → A (owner) → feed", f.direct),
            ("forwarded: client → B → A (owner) → feed", f.forwarded),
        ] {
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
                s[0], s[1], s[2], s[3]
            );
        }
        let overhead = f.forwarded[0] - f.direct[0];
        println!(
            "| forwarded ÷ direct | {:.2} × | {:.2} × | {:.2} × | — |",
            f.forwarded[0] / f.direct[0],
            f.forwarded[1] / f.direct[1],
            f.forwarded[2] / f.direct[2],
        );
        println!(
            "| **forwarding overhead** (forwarded − direct) | **{overhead:.0} µs** (goal ≤ {GOAL_FORWARD_US:.0} µs{}; the C# service: ~{CSHARP_FORWARD_US:.0} µs) | {:.0} | {:.0} | — |",
            pass(overhead <= GOAL_FORWARD_US),
            f.forwarded[1] - f.direct[1],
            f.forwarded[2] - f.direct[2],
        );
        println!(
            "| B's `wsm_forwarded_total` (A's) | {} ({}) | — | — | — |",
            f.forwarded_by_b, f.forwarded_by_a
        );
        rows.add(
            &format!(
                "`SendRaw` forwarded by a non-owner (client → B → A → feed), sequential, 100 \
                 bytes: median (p99) of {} calls",
                grouped(settings.calls as f64)
            ),
            &format!(
                "{} µs ({} µs); forwarding overhead {} µs",
                grouped(f.forwarded[0]),
                grouped(f.forwarded[2]),
                grouped(overhead)
            ),
            &format!(
                "direct call to the owner (client → A → feed), same run: {} µs ({} µs)",
                grouped(f.direct[0]),
                grouped(f.direct[2])
            ),
            &format!("{:.2}", f.forwarded[0] / f.direct[0]),
            &format!(
                "overhead ≤ {GOAL_FORWARD_US:.0} µs{} (the C# service documents ~{:.0} ms per \
                 forward, not run)",
                pass(overhead <= GOAL_FORWARD_US),
                CSHARP_FORWARD_US / 1000.0
            ),
        );
    }
    println!();
    if settings.failover {
        println!(
            "failover: {} run(s); heartbeat {HEARTBEAT_S} s, stale after {STALE_S} s, reconnect \
             base {RECONNECT_MS} ms; {FAILOVER_CONNS} connections at {FEED_RATE} frames/s on A, \
             killed once every topic held {EVENTS_BEFORE_KILL} events and the instances had run \
             {} s, plus a random 0–1000 ms",
            settings.runs,
            SETTLE_BEFORE_KILL.as_secs()
        );
    }
    if settings.forward {
        println!(
            "forward: {} timed calls per path after {} warm-up calls each, alternating blocks of {}",
            settings.calls, settings.warmup, settings.block
        );
    }
    println!("command: scripts/bench_cluster.sh (cargo bench -p wsm --bench cluster)");
    if !problems.is_empty() {
        eprintln!("\nFAILURES — these figures do not count:");
        for problem in &problems {
            eprintln!("  {problem}");
        }
        std::process::exit(1);
    }
}
