//! One connection's ingest throughput, measured side by side with its baselines (SPEC section 7):
//!
//! 1. **bare client**: a bare tokio-tungstenite client that only counts frames;
//! 2. **wsm → memory bus**: `Connection` + `PublishQueue` + `spawn_publisher` into a `MemoryBus`, a
//!    subscriber taking every delivered event a batch at a time and checking that `seq` counts
//!    1, 2, 3, … (nothing lost, duplicated or reordered). It runs three ways: with the bare
//!    client's 128 KiB socket reads (the goal's like-for-like figure), with wsm's default 8 KiB
//!    reads (small so 10k idle connections stay cheap), and with a reader that takes each event as
//!    CloudEvent JSON (what `wsm tail` does);
//! 3. **wsm → Redis Streams**: the same into `RedisPublisher` on a real redis-server (XLEN must
//!    match, and a sample of entries must carry contiguous `seq`);
//! 4. **naive bridge**: the bare client doing `XADD` in pipelines of up to 256 per round trip;
//! 5. **Python bridge**: `benches/python_bridge.py`, what a user would write by hand with the
//!    `websockets` and `redis` packages: one awaited `XADD` per frame. It runs with the interpreter
//!    in `BENCH_PYTHON` (a venv with `benches/python_bridge.requirements.txt`; `scripts/bench.sh`
//!    makes one), against the same feed server and a redis-server of its own; XLEN must match the
//!    frames it counted and its last frame must be the feed's last. Without `BENCH_PYTHON` its row
//!    says "not run".
//!
//! Every path reads ~100-byte text frames from the local feed server at max rate on one connection,
//! for a fixed number of frames, three times; the median rate counts. The clock starts when the
//! SUBSCRIBE that starts the stream is sent (the connection is opened with `streams=0`, so nothing
//! arrives before the topic is set) and stops when the last frame is counted, delivered to the
//! memory subscriber, or acknowledged by Redis. The SUBSCRIBE reply is a frame too: `count + 1` are
//! expected everywhere.
//!
//! `cargo bench -p wsm --bench ingest`
//!
//! Without `--bench` (`cargo test --all-targets`) each path runs once with a few thousand frames.
//! Counts are chosen so each run lasts at least ~2 s and the whole bench under 2 minutes.
//! Environment: `BENCH_BARE_FRAMES` (default 10 000 000), `BENCH_FRAMES` (memory, default
//! 10 000 000; half for the JSON reader), `BENCH_REDIS_FRAMES` (Redis and naive bridge, default
//! 1 000 000), `BENCH_PYTHON_FRAMES` (Python bridge, default 100 000: about 10 s at its ~10k/s),
//! `BENCH_PYTHON` (the Python interpreter), `BENCH_RUNS` (default 3), `BENCH_ONLY` (comma list of
//! `bare,memory,memory-default,memory-json,redis,naive,python`, to profile one path),
//! `BENCH_READ_BUFFER` (wsm's socket read buffer in bytes on every wsm path, for experiments),
//! `BENCH_ROWS` (append the table's rows to this file for `scripts/bench.sh`).
//!
//! The feed server runs on its own thread and single-threaded runtime, like a separate process; the
//! measured side runs on a multi-threaded runtime with 2 workers (the machines have 2 cores). Other
//! work on the machine (builds, tests) skews the figures by 20-30 %: run it on a quiet machine.
//! A run that lost or duplicated anything does not count; the bench exits with status 1 after the
//! table when any run did.

#[path = "../support/mod.rs"]
mod support;

mod baselines;
mod common;
mod wsm_paths;

use feed_server::FeedConfig;
use tokio::runtime::{Builder, Runtime};
use wsm_testkit::RedisServer;

use support::rows::{grouped, Rows};

use baselines::{bare, naive, python, BARE_READ_BUFFER, NAIVE_PIPELINE};
use common::{Path, Run, Settings, FRAME_SIZE};
use wsm_paths::{memory, wsm_redis};

// ---------------------------------------------------------------------------------------------

fn measure(
    runtime: &Runtime,
    path: Path,
    settings: &Settings,
    base: &str,
    redis: Option<&RedisServer>,
) -> Vec<Run> {
    let count = settings.frames(path);
    let redis_url = redis.map(RedisServer::url).unwrap_or_default();
    (0..settings.runs)
        .map(|n| {
            let run = runtime.block_on(async {
                match path {
                    Path::Bare => bare(base, count).await,
                    Path::Memory => memory(base, count, false, Some(BARE_READ_BUFFER)).await,
                    Path::MemoryDefault => memory(base, count, false, None).await,
                    Path::MemoryJson => memory(base, count, true, None).await,
                    Path::Redis => wsm_redis(base, &redis_url, count).await,
                    Path::Naive => naive(base, &redis_url, count).await,
                    Path::Python => match &settings.python {
                        Some(interpreter) => python(interpreter, base, &redis_url, count).await,
                        None => Run::failed("python: BENCH_PYTHON is not set".into()),
                    },
                }
            });
            println!(
                "{:<38} run {}: {:>9} frames in {:>6.3} s = {:>9.0} frames/s{}{}",
                path.label(),
                n + 1,
                run.frames,
                run.elapsed.as_secs_f64(),
                run.rate(),
                if run.degraded > 0 {
                    format!(" ({} degraded: backpressure)", run.degraded)
                } else {
                    String::new()
                },
                if run.problems.is_empty() {
                    String::new()
                } else {
                    format!(" PROBLEMS: {}", run.problems.join("; "))
                }
            );
            run
        })
        .collect()
}

/// The median rate of the runs that lost nothing (of all runs if every one lost something), and how
/// many runs lost something.
fn median(runs: &[Run]) -> (f64, usize) {
    let failed = runs.iter().filter(|r| !r.problems.is_empty()).count();
    let mut rates: Vec<f64> = runs
        .iter()
        .filter(|r| r.problems.is_empty() || failed == runs.len())
        .map(Run::rate)
        .collect();
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], failed)
}

fn main() {
    let settings = Settings::from_env();
    let needs_redis = settings
        .paths
        .iter()
        .any(|p| matches!(p, Path::Redis | Path::Naive));
    let feed = support::Feed::start(FeedConfig {
        rate: 0,
        size: FRAME_SIZE,
        ..FeedConfig::default()
    });
    let base = feed.base.clone();
    let redis = needs_redis.then(RedisServer::start);
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("bench runtime");
    let [bare_n, memory_n, _, _, redis_n, _, python_n] = settings.frames;
    println!(
        "ingest: one connection, ~{FRAME_SIZE}-byte text frames at max rate; frames per run: \
         {bare_n} (bare), {memory_n} (memory), {redis_n} (redis, naive), {python_n} (python: {}); \
         {} run(s) each{}",
        settings
            .python
            .as_ref()
            .map_or("not run, BENCH_PYTHON is not set".to_owned(), |p| p
                .display()
                .to_string()),
        settings.runs,
        if settings.smoke {
            " — smoke run (debug build: the figures mean nothing)"
        } else {
            ""
        }
    );

    let mut rates: [Option<f64>; 7] = [None; 7];
    let mut problems = Vec::new();
    let mut lossy = Vec::new();
    for (n, path) in Path::ALL.into_iter().enumerate() {
        if !settings.paths.contains(&path) {
            continue;
        }
        // The Python bridge gets a redis-server of its own, started for it, so nothing the
        // other paths left behind (memory, fragmentation) weighs on it.
        let own_redis = (path == Path::Python).then(RedisServer::start);
        let runs = measure(
            &runtime,
            path,
            &settings,
            &base,
            own_redis.as_ref().or(redis.as_ref()),
        );
        drop(own_redis);
        problems.extend(runs.iter().flat_map(|r| r.problems.iter().cloned()));
        let (rate, failed) = median(&runs);
        if failed > 0 {
            lossy.push(format!(
                "{}: {failed} of {} runs lost events or failed{}",
                path.label(),
                runs.len(),
                if failed < runs.len() {
                    " (median of the others)"
                } else {
                    ""
                }
            ));
        }
        rates[n] = Some(rate);
    }
    drop(runtime);
    drop(redis);
    feed.stop();

    let [bare, memory, memory_default, memory_json, redis, naive, python] = rates;
    let rows = Rows::from_env("cargo bench -p wsm --bench ingest", settings.smoke);
    println!();
    println!("| figure | ours | baseline, same run | ratio | goal |");
    println!("|---|---:|---:|---:|---|");
    let row = |figure: &str, ours: &str, baseline: &str, ratio: &str, goal: &str| {
        println!("| {figure} | {ours} | {baseline} | {ratio} | {goal} |");
        rows.add(figure, ours, baseline, ratio, goal);
    };
    let pass = |ok: bool| match (settings.smoke, ok) {
        (true, _) => "",
        (false, true) => " ✅",
        (false, false) => " ❌",
    };
    let fps =
        |rate: Option<f64>| rate.map_or("not run".to_owned(), |r| format!("{}/s", grouped(r)));
    let ratio = |value: Option<f64>, base: Option<f64>| value.zip(base).map(|(v, b)| v / b);
    let ratio_text = |r: Option<f64>| r.map_or("—".to_owned(), |r| format!("{r:.2}"));
    let goal = |r: Option<f64>, at_least: f64| {
        format!("≥ {at_least} ×{}", r.map_or("", |r| pass(r >= at_least)))
    };
    let runs = settings.runs;
    let ingest = |what: &str, n: u64| {
        format!(
            "Ingest, one connection, ~{FRAME_SIZE}-byte frames: {what} ({} frames per run, median \
             of {runs})",
            grouped(n as f64)
        )
    };
    let bare_text = format!("bare tokio-tungstenite counting client: {}", fps(bare));
    let r = ratio(memory, bare);
    if memory.is_some() {
        row(
            &ingest(
                "wsm → memory bus, 128 KiB socket reads like the bare client",
                memory_n,
            ),
            &fps(memory),
            &bare_text,
            &ratio_text(r),
            &goal(r, 0.8),
        );
    }
    for (what, rate, n, why) in [
        (
            "wsm → memory bus, wsm's default 8 KiB reads",
            memory_default,
            memory_n,
            "— (small reads keep 10k idle connections cheap)",
        ),
        (
            "wsm → memory bus, 8 KiB reads, a reader taking CloudEvent JSON",
            memory_json,
            settings.frames(Path::MemoryJson),
            "— (the reader encodes)",
        ),
    ] {
        if rate.is_some() {
            row(
                &ingest(what, n),
                &fps(rate),
                &bare_text,
                &ratio_text(ratio(rate, bare)),
                why,
            );
        }
    }
    if redis.is_some() {
        let r = ratio(redis, naive);
        row(
            &ingest("wsm → Redis Streams", redis_n),
            &fps(redis),
            &format!(
                "naive Rust bridge (the bare client, XADD in pipelines ≤ {NAIVE_PIPELINE}): {}",
                fps(naive)
            ),
            &ratio_text(r),
            &goal(r, 0.75),
        );
        let r = ratio(redis, python);
        let absolute = redis.map_or("", |v| pass(v >= 100_000.0));
        row(
            &ingest("wsm → Redis Streams, against the Python bridge", redis_n),
            &fps(redis),
            &match python {
                Some(p) => format!(
                    "hand-written Python bridge (websockets + redis.asyncio, one XADD per \
                     frame; {} frames per run): {}/s",
                    grouped(python_n as f64),
                    grouped(p)
                ),
                None => "Python bridge: not run (set BENCH_PYTHON to a Python with \
                         benches/python_bridge.requirements.txt; scripts/bench.sh does)"
                    .to_owned(),
            },
            &r.map_or("—".to_owned(), |r| format!("{r:.1} ×")),
            &format!(
                "≥ 40 ×{}; ≥ 100,000/s{absolute}",
                r.map_or("", |r| pass(r >= 40.0))
            ),
        );
        // Both with wsm's default read buffer, when measured.
        let memory_8k = memory_default.or(memory);
        let r = ratio(redis, memory_8k);
        row(
            &ingest("wsm → Redis Streams, against wsm → memory bus", redis_n),
            &fps(redis),
            &format!("wsm → memory bus (8 KiB reads): {}", fps(memory_8k)),
            &ratio_text(r),
            &format!(
                "{} (the limit is redis-server's own XADD rate)",
                goal(r, 0.5)
            ),
        );
    } else if python.is_some() {
        row(
            &ingest("the hand-written Python bridge alone", python_n),
            "—",
            &fps(python),
            "—",
            "—",
        );
    }
    println!();
    println!("median of {runs} run(s); command: cargo bench -p wsm --bench ingest");
    for note in &lossy {
        println!("LOSS: {note}");
    }

    if !problems.is_empty() {
        eprintln!("\nLOSS OR FAILURE — these runs do not count:");
        for problem in &problems {
            eprintln!("  {problem}");
        }
        std::process::exit(1);
    }
}
