//! `cargo bench -p controller --bench process`: the plugin's own cost per `Process` call, measured
//! through the real C ABI of the release `libcontroller.so`, against the tests' scripted host
//! (tests/support/host.rs), quiet, whose `gateway_call` answers at once with a canned (malloc'd) reply. Also: `dlopen` + first `Process` in a fresh
//! process, and the shipped library's size. Prints a Markdown table for BENCHMARKS.md.
//!
//! The baselines are the documented figures of the engine and of the NativeAOT original (they cannot
//! be run here): 50 µs per native call (the low end of the engine's 50–200 µs), < 10 ms startup, and
//! a 1–2 MB library.

#[path = "../tests/support/mod.rs"]
mod support;

// The rows for `scripts/bench.sh`: one definition, shared with the wsm benches.
#[path = "../crates/wsm/benches/support/rows.rs"]
mod rows;

use std::borrow::Cow;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rows::{grouped, Rows};
use support::{Canned, Event, Plugin, ScriptedHost};

const WARMUP: usize = 20_000;
/// Timed calls per process and command (`BENCH_CALLS`).
const SAMPLES: usize = 200_000;
/// `BENCH_PROFILE=create|list [BENCH_PROFILE_CALLS=n] <bench binary> --bench`: only that loop, for a
/// profiler; `scripts/process_instructions.sh` turns it into instructions per call with callgrind.
const PROFILE_CALLS: usize = 20_000;
const COLD_RUNS: usize = 30;
/// `host_sim` runs per command, and calls per run.
const C_RUNS: usize = 3;
const C_REPEAT: usize = 200_000;
const CORRELATION_ID: &str = "9f1c7d0e-6a1b-4f7e-a2c3-5d4e3f2a1b0c";
const CREATE_DATA: &str = r#"{"command":"create","url":"wss://stream.binance.com:9443/stream","auto_reconnect":true,"tags":{"venue":"binance"}}"#;
const LIST_DATA: &str = r#"{"command":"list"}"#;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const CONNECT_REPLY: &[u8] =
    br#"{"id":"5b0c2a7e-3c59-4a53-9a57-1f2f5e1c0a11","status":"connected"}"#;
const LIST_REPLY: &[u8] = br#"{"connections":[{"id":"5b0c2a7e-3c59-4a53-9a57-1f2f5e1c0a11","url":"wss://stream.binance.com:9443/stream","status":"connected","topic":"act.exchange.binance.orderbook.update","instance_id":"wsm-0","tags":{"venue":"binance"}},{"id":"0e8e5a8e-4d7f-4b0e-8f7e-2d7c1a9b3c44","url":"wss://stream.binance.com:9443/stream","status":"connected","topic":"","instance_id":"wsm-1","tags":{}}]}"#;

/// A quiet scripted host that answers every gateway call with `reply`.
fn host(reply: &'static [u8]) -> ScriptedHost {
    ScriptedHost::answering(move |_| Canned::Bytes(0, Cow::Borrowed(reply))).quiet()
}

/// The same command data as the C host sends (`CREATE_DATA`, `LIST_DATA`).
fn create_event() -> Vec<u8> {
    let data: serde_json::Value = serde_json::from_str(CREATE_DATA).expect("CREATE_DATA is JSON");
    Event::json(&data)
        .ext("correlationid", CORRELATION_ID)
        .encode()
}

fn list_event() -> Vec<u8> {
    let data: serde_json::Value = serde_json::from_str(LIST_DATA).expect("LIST_DATA is JSON");
    Event::json(&data)
        .ext("correlationid", CORRELATION_ID)
        .encode()
}

/// One `Process` call + `FreeResult`, as the engine does it.
fn call(plugin: &Plugin, host: &ScriptedHost, input: &[u8]) {
    let rc = plugin.process_with(
        host.table(),
        input.as_ptr(),
        input.len() as i32,
        |rc, out, _| {
            black_box(out);
            rc
        },
    );
    assert_eq!(rc, 0);
}

struct Stats {
    median: Duration,
    p99: Duration,
    mean: Duration,
    calls_per_sec: f64,
}

/// Rounds of `SAMPLES / ROUNDS` timed calls; the figures are the medians over rounds, so that one
/// slow stretch of this shared VM (steal, frequency changes) cannot decide the result.
const ROUNDS: usize = 5;

fn measure(plugin: &Plugin, host: &ScriptedHost, input: &[u8]) -> Stats {
    for _ in 0..WARMUP {
        call(plugin, host, input);
    }
    let per_round = (env_or("BENCH_CALLS", SAMPLES) / ROUNDS).max(1);
    let mut rounds: Vec<Stats> = (0..ROUNDS)
        .map(|_| {
            let mut samples = Vec::with_capacity(per_round);
            let start = Instant::now();
            for _ in 0..per_round {
                let t = Instant::now();
                call(plugin, host, input);
                samples.push(t.elapsed());
            }
            let total = start.elapsed();
            samples.sort_unstable();
            Stats {
                median: samples[per_round / 2],
                p99: samples[per_round * 99 / 100],
                mean: total / per_round as u32,
                calls_per_sec: per_round as f64 / total.as_secs_f64(),
            }
        })
        .collect();
    let mid = ROUNDS / 2;
    let pick = |rounds: &mut Vec<Stats>, key: fn(&Stats) -> f64| {
        rounds.sort_by(|a, b| key(a).total_cmp(&key(b)));
        key(&rounds[mid])
    };
    let median = pick(&mut rounds, |s| s.median.as_secs_f64());
    let p99 = pick(&mut rounds, |s| s.p99.as_secs_f64());
    let mean = pick(&mut rounds, |s| s.mean.as_secs_f64());
    let calls_per_sec = pick(&mut rounds, |s| s.calls_per_sec);
    Stats {
        median: Duration::from_secs_f64(median),
        p99: Duration::from_secs_f64(p99),
        mean: Duration::from_secs_f64(mean),
        calls_per_sec,
    }
}

/// Fresh processes for the per-call figures.
const PROCESSES: usize = 7;

/// Runs `measure` in `PROCESSES` fresh processes and takes the median of each figure: the same
/// binary measures up to 1.7x apart from one process to the next on this VM (code and heap layout,
/// core placement), and one process must not decide the result.
/// Per figure: the median-of-processes stats, and the (fastest, slowest) process median.
type Spread = (Stats, (Duration, Duration));

fn measure_in_processes(processes: usize) -> (Spread, Spread) {
    let exe = std::env::current_exe().expect("bench executable");
    let mut runs: Vec<[Vec<f64>; 2]> = Vec::new();
    for _ in 0..processes {
        let out = Command::new(&exe)
            .args(["--bench", "--measure-once"])
            .output()
            .expect("spawn measuring child");
        assert!(out.status.success(), "measuring child failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<Vec<f64>> = text
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .collect();
        assert_eq!(lines.len(), 2, "child prints two lines: {text}");
        runs.push([lines[0].clone(), lines[1].clone()]);
    }
    let stats = |which: usize| {
        let sorted = |field: usize| {
            let mut values: Vec<f64> = runs.iter().map(|r| r[which][field]).collect();
            values.sort_by(f64::total_cmp);
            values
        };
        let figure = |field: usize| sorted(field)[processes / 2];
        let medians = sorted(0);
        (
            Stats {
                median: Duration::from_nanos(figure(0) as u64),
                p99: Duration::from_nanos(figure(1) as u64),
                mean: Duration::from_nanos(figure(2) as u64),
                calls_per_sec: figure(3),
            },
            (
                Duration::from_nanos(medians[0] as u64),
                Duration::from_nanos(medians[processes - 1] as u64),
            ),
        )
    };
    (stats(0), stats(1))
}

/// Child mode: `dlopen` + first `Process` (create) in this fresh process; prints nanoseconds.
fn cold_once() {
    let input = create_event();
    let host = host(CONNECT_REPLY);
    let start = Instant::now();
    let plugin = Plugin::load();
    call(&plugin, &host, &input);
    println!("{}", start.elapsed().as_nanos());
}

fn cold_start(cold_runs: usize) -> (Duration, Duration) {
    let exe = std::env::current_exe().expect("bench executable");
    let mut runs: Vec<Duration> = (0..cold_runs)
        .map(|_| {
            let out = Command::new(&exe)
                .arg("--cold-once")
                .output()
                .expect("spawn cold-start child");
            assert!(out.status.success(), "cold-start child failed: {out:?}");
            let nanos: u64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("child prints nanoseconds");
            Duration::from_nanos(nanos)
        })
        .collect();
    runs.sort_unstable();
    (runs[cold_runs / 2], runs[cold_runs - 1])
}

fn stripped_size() -> u64 {
    let lib = support::lib_path();
    let copy = std::env::temp_dir().join(format!("libcontroller-bench-{}.so", std::process::id()));
    std::fs::copy(&lib, &copy).expect("copy library");
    // The release profile already strips; `strip --strip-all` confirms nothing more comes off.
    let _ = Command::new("strip").arg("--strip-all").arg(&copy).status();
    let size = std::fs::metadata(&copy).expect("stat library").len();
    let _ = std::fs::remove_file(&copy);
    size
}

/// One command's figures from C: per `host_sim` run, the median and p99 per call in µs.
type CRuns = Vec<(f64, f64)>;

/// Runs the C host harness `runs` times on one command against the same library, with a script
/// gateway answering every `Connect` and `List` with the canned replies the Rust host uses.
fn from_c(host_sim: &Path, data: &str, repeat: usize, runs: usize) -> Result<CRuns, String> {
    let script = std::env::temp_dir().join(format!("process-bench-{}.script", std::process::id()));
    let text = format!(
        "Connect 0 {}\nList 0 {}\n",
        String::from_utf8_lossy(CONNECT_REPLY),
        String::from_utf8_lossy(LIST_REPLY)
    );
    std::fs::write(&script, text)
        .map_err(|e| format!("writing the gateway script {}: {e}", script.display()))?;
    let lib = support::lib_path();
    let command = format!("@correlationid={CORRELATION_ID} {data}");
    let result = (0..runs)
        .map(|_| {
            let out = Command::new(host_sim)
                .arg("--lib")
                .arg(&lib)
                .arg("--gateway")
                .arg(format!("script:{}", script.display()))
                // A reply to a call the script does not answer is a reply too: only successful
                // ones measure the same path as the Rust host.
                .args(["--expect", r#""success":true"#])
                .args(["--bench", "--repeat", &repeat.to_string(), &command])
                .output()
                .map_err(|e| format!("running {}: {e}", host_sim.display()))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                // One line per bad call: the last few say what went wrong, and the summary.
                let stderr = String::from_utf8_lossy(&out.stderr);
                let lines: Vec<&str> = stderr.lines().collect();
                return Err(format!(
                    "{} exited with {}; its stderr ends:\n{}",
                    host_sim.display(),
                    out.status,
                    lines[lines.len().saturating_sub(4)..].join("\n")
                ));
            }
            // `bench: N calls, 1 thread(s), S s, R calls/s, median X us, p99 Y us`
            let after = |key: &str| -> Option<f64> {
                let rest = &stdout[stdout.find(key)? + key.len()..];
                rest.split_whitespace().next()?.parse().ok()
            };
            after("median ")
                .zip(after("p99 "))
                .ok_or_else(|| format!("no median/p99 in host_sim's output: {stdout}"))
        })
        .collect();
    let _ = std::fs::remove_file(&script);
    result
}

fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    if std::env::args().any(|a| a == "--cold-once") {
        cold_once();
        return;
    }
    let plugin = Plugin::load();
    // `cargo test --all-targets` runs this binary without `--bench`: a quick smoke run of the same
    // paths, not a measurement.
    if !std::env::args().any(|a| a == "--bench") {
        for (reply, input) in [(CONNECT_REPLY, create_event()), (LIST_REPLY, list_event())] {
            let host = host(reply);
            for _ in 0..100 {
                call(&plugin, &host, &input);
            }
        }
        println!("process bench: smoke run ok (use `cargo bench` to measure)");
        return;
    }
    if let Some(which) = std::env::var_os("BENCH_PROFILE") {
        let (host, input) = if which == "list" {
            (host(LIST_REPLY), list_event())
        } else {
            (host(CONNECT_REPLY), create_event())
        };
        let calls = std::env::var("BENCH_PROFILE_CALLS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(PROFILE_CALLS);
        for _ in 0..calls {
            call(&plugin, &host, &input);
        }
        return;
    }
    if std::env::args().any(|a| a == "--measure-once") {
        // Child mode: one process's figures, as `create list` lines of median p99 mean calls/s.
        for stats in [
            measure(&plugin, &host(CONNECT_REPLY), &create_event()),
            measure(&plugin, &host(LIST_REPLY), &list_event()),
        ] {
            println!(
                "{} {} {} {}",
                stats.median.as_nanos(),
                stats.p99.as_nanos(),
                stats.mean.as_nanos(),
                stats.calls_per_sec
            );
        }
        return;
    }
    let processes = env_or("BENCH_PROCESSES", PROCESSES).max(1);
    let cold_runs = env_or("BENCH_COLD_RUNS", COLD_RUNS).max(1);
    let calls = env_or("BENCH_CALLS", SAMPLES);
    let (create, list) = measure_in_processes(processes);
    let (cold_median, cold_max) = cold_start(cold_runs);
    let size = stripped_size();
    let c_repeat = env_or("BENCH_C_REPEAT", C_REPEAT).max(1);
    let c_runs = env_or("BENCH_C_RUNS", C_RUNS).max(1);
    let host_sim = std::env::var_os("HOST_SIM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let c_figures = host_sim
        .as_ref()
        .map(|bin| [CREATE_DATA, LIST_DATA].map(|data| from_c(bin, data, c_repeat, c_runs)));

    const ENGINE_CALL_US: f64 = 50.0;
    const AOT_STARTUP_MS: f64 = 10.0;
    const AOT_SIZE_MB: f64 = 1.0;
    const GOAL_CALL_US: f64 = 5.0;
    const GOAL_STARTUP_MS: f64 = 1.0;
    const GOAL_SIZE_MB: f64 = 1.5;
    const ENGINE: &str = "50 µs per native call: the engine's 50–200 µs (documented, not run)";
    let pass = |ok: bool| if ok { "✅" } else { "❌" };
    let rows = Rows::from_env("cargo bench -p controller --bench process", false);
    // The C rows need the harness binary to be reproduced.
    let c_rows = Rows::from_env(
        "HOST_SIM=<host_sim> cargo bench -p controller --bench process",
        false,
    );
    println!("| figure | ours | baseline | ratio ours/baseline | goal |");
    println!("|---|---|---|---|---|");
    let print = |figure: &str, ours: &str, baseline: &str, ratio: &str, goal: &str| {
        println!("| {figure} | {ours} | {baseline} | {ratio} | {goal} |");
    };
    let row = |figure: &str, ours: &str, baseline: &str, ratio: &str, goal: &str| {
        print(figure, ours, baseline, ratio, goal);
        rows.add(figure, ours, baseline, ratio, goal);
    };
    let c_row = |figure: &str, ours: &str, baseline: &str, ratio: &str, goal: &str| {
        print(figure, ours, baseline, ratio, goal);
        c_rows.add(figure, ours, baseline, ratio, goal);
    };
    for (name, (s, (fastest, slowest))) in [("create", &create), ("list", &list)] {
        row(
            &format!(
                "`Process` {name}, Rust host: median per call (p99; mean; calls/s), median of \
                 {processes} processes × {ROUNDS} rounds of {} calls; [fastest – slowest process]",
                grouped((calls / ROUNDS) as f64)
            ),
            &format!(
                "{:.2} µs ({:.2} µs; {:.2} µs; {}/s) [{:.2} – {:.2} µs]",
                us(s.median),
                us(s.p99),
                us(s.mean),
                grouped(s.calls_per_sec),
                us(*fastest),
                us(*slowest),
            ),
            ENGINE,
            &format!("{:.3}", us(s.median) / ENGINE_CALL_US),
            &format!("≤ {GOAL_CALL_US} µs {}", pass(us(s.median) <= GOAL_CALL_US)),
        );
    }
    let mut failed = Vec::new();
    for (n, (name, (rust, _))) in [("create", &create), ("list", &list)]
        .into_iter()
        .enumerate()
    {
        let figure = format!(
            "`Process` {name}, C host (`host_sim --bench`): median per call (p99), median of \
             {c_runs} run(s) × {} calls [each run's median]",
            grouped(c_repeat as f64)
        );
        let rust = format!("Rust host, same run: {:.2} µs", us(rust.median));
        match c_figures.as_ref().map(|figures| &figures[n]) {
            None => c_row(
                &figure,
                &format!(
                    "not run: set HOST_SIM to a built tests/harness host_sim (scripts/bench.sh \
                     does); {rust}"
                ),
                ENGINE,
                "—",
                &format!("≤ {GOAL_CALL_US} µs"),
            ),
            Some(Err(e)) => {
                failed.push(format!("{name} from C: {e}"));
                c_row(&figure, "failed (see the bench's output)", ENGINE, "—", "—");
            }
            Some(Ok(runs)) => {
                let median = median_of(runs.iter().map(|r| r.0).collect());
                let p99 = median_of(runs.iter().map(|r| r.1).collect());
                let each: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.0)).collect();
                c_row(
                    &figure,
                    &format!(
                        "{median:.2} µs (p99 {p99:.2} µs) [{} µs]; {rust}",
                        each.join(" / ")
                    ),
                    ENGINE,
                    &format!("{:.3}", median / ENGINE_CALL_US),
                    &format!("≤ {GOAL_CALL_US} µs {}", pass(median <= GOAL_CALL_US)),
                );
            }
        }
    }
    let cold_ms = cold_median.as_secs_f64() * 1e3;
    row(
        &format!("`dlopen` + first `Process`, median (max) of {cold_runs} fresh processes"),
        &format!("{cold_ms:.3} ms ({:.3} ms)", cold_max.as_secs_f64() * 1e3),
        "< 10 ms NativeAOT startup (documented, not run)",
        &format!("{:.3}", cold_ms / AOT_STARTUP_MS),
        &format!(
            "≤ {GOAL_STARTUP_MS} ms {}",
            pass(cold_ms <= GOAL_STARTUP_MS)
        ),
    );
    let mb = size as f64 / (1024.0 * 1024.0);
    row(
        "stripped `libcontroller.so`",
        &format!("{} bytes ({mb:.2} MiB)", grouped(size as f64)),
        "1–2 MB NativeAOT library (documented, not run)",
        &format!("{:.2} (against 1 MB)", mb / AOT_SIZE_MB),
        &format!("≤ {GOAL_SIZE_MB} MB {}", pass(mb <= GOAL_SIZE_MB)),
    );
    if !failed.is_empty() {
        eprintln!("\nFAILURES — these figures do not count:");
        for problem in &failed {
            eprintln!("  {problem}");
        }
        std::process::exit(1);
    }
}
