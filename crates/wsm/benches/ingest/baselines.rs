//! The baselines: the bare client, the naive `XADD` bridge and the Python bridge.

use std::path::Path as FsPath;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::common::{feed_url, flush, redis_conn, u_of, xlen, Run, SUBSCRIBE};

const NAIVE_STREAM: &str = "bench.naive";
const PYTHON_STREAM: &str = "bench.python";
/// The hand-written Python bridge.
const PYTHON_BRIDGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_bridge.py");
/// Bound against hangs of the Python bridge, which is about 100 times slower than the others.
const PYTHON_HANG: Duration = Duration::from_secs(900);

/// tokio-tungstenite's default read buffer, which the bare client uses.
pub(crate) const BARE_READ_BUFFER: usize = 128 << 10;
/// Most XADDs per naive-bridge round trip (SPEC section 7).
pub(crate) const NAIVE_PIPELINE: usize = 256;

// ---------------------------------------------------------------------------------------------
// 1. The bare client

pub(crate) async fn bare(base: &str, count: u64) -> Run {
    let (mut ws, _) = tokio_tungstenite::connect_async(feed_url(base, count))
        .await
        .expect("bare client connects");
    let expected = count + 1;
    let started = Instant::now();
    ws.send(Message::Text(Utf8Bytes::from_static(SUBSCRIBE)))
        .await
        .expect("send SUBSCRIBE");
    let mut frames = 0u64;
    let mut last = Utf8Bytes::from_static("");
    while frames < expected {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                frames += 1;
                last = text;
            }
            Some(Ok(_)) => {}
            other => panic!("bare client: the stream ended after {frames} frames: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let mut problems = Vec::new();
    if u_of(last.as_str()) != Some(count) {
        problems.push(format!(
            "bare: last frame's u is {:?}, expected {count}",
            u_of(last.as_str())
        ));
    }
    let _ = ws.close(None).await;
    Run {
        frames,
        elapsed,
        degraded: 0,
        problems,
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The naive bridge

pub(crate) async fn naive(base: &str, redis_url: &str, count: u64) -> Run {
    let expected = count + 1;
    let mut conn = redis_conn(redis_url).await;
    flush(&mut conn).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(feed_url(base, count))
        .await
        .expect("naive bridge connects");
    let mut pipe = redis::Pipeline::with_capacity(NAIVE_PIPELINE);
    let started = Instant::now();
    ws.send(Message::Text(Utf8Bytes::from_static(SUBSCRIBE)))
        .await
        .expect("send SUBSCRIBE");
    let mut frames = 0u64;
    while frames < expected {
        // Wait for one frame, then take whatever else is already there, up to a full pipeline.
        let mut next = ws.next().await;
        let mut batch = 0;
        loop {
            match next {
                Some(Ok(Message::Text(text))) => {
                    pipe.cmd("XADD")
                        .arg(NAIVE_STREAM)
                        .arg("*")
                        .arg("data")
                        .arg(text.as_bytes());
                    frames += 1;
                    batch += 1;
                }
                Some(Ok(_)) => {}
                other => panic!("naive bridge: the stream ended after {frames} frames: {other:?}"),
            }
            if batch == NAIVE_PIPELINE || frames == expected {
                break;
            }
            match ws.next().now_or_never() {
                Some(message) => next = message,
                None => break,
            }
        }
        if batch > 0 {
            pipe.exec_async(&mut conn).await.expect("XADD pipeline");
            pipe.clear();
        }
    }
    let elapsed = started.elapsed();
    let _ = ws.close(None).await;
    let mut problems = Vec::new();
    let stored = xlen(&mut conn, NAIVE_STREAM).await;
    if stored != expected {
        problems.push(format!("naive: XLEN {stored}, expected {expected}"));
    }
    flush(&mut conn).await;
    Run {
        frames: stored.min(expected),
        elapsed,
        degraded: 0,
        problems,
    }
}

// ---------------------------------------------------------------------------------------------
// 5. The Python bridge

/// What `python_bridge.py` prints.
#[derive(serde::Deserialize)]
struct PythonReport {
    frames: u64,
    seconds: f64,
    last_u: Option<u64>,
}

pub(crate) async fn python(python: &FsPath, base: &str, redis_url: &str, count: u64) -> Run {
    let expected = count + 1;
    let mut conn = redis_conn(redis_url).await;
    flush(&mut conn).await;
    let child = tokio::process::Command::new(python)
        .arg(PYTHON_BRIDGE)
        .arg(feed_url(base, count))
        .arg(redis_url)
        .arg(PYTHON_STREAM)
        .arg(expected.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let what = format!("python: {} {PYTHON_BRIDGE}", python.display());
    let out = match tokio::time::timeout(PYTHON_HANG, child).await {
        Err(_) => return Run::failed(format!("{what} did not finish within {PYTHON_HANG:?}")),
        Ok(Err(e)) => return Run::failed(format!("{what} could not start: {e}")),
        Ok(Ok(out)) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str::<PythonReport>(line).ok());
    let report = match (out.status.success(), report) {
        (true, Some(report)) => report,
        _ => {
            return Run::failed(format!(
                "{what} exited with {} and no report: {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let mut problems = Vec::new();
    if report.frames != expected {
        problems.push(format!(
            "python: counted {} frames, expected {expected}",
            report.frames
        ));
    }
    if report.last_u != Some(count) {
        problems.push(format!(
            "python: the last frame's u is {:?}, expected {count}",
            report.last_u
        ));
    }
    let stored = xlen(&mut conn, PYTHON_STREAM).await;
    if stored != report.frames {
        problems.push(format!(
            "python: XLEN {stored}, but it counted {} frames",
            report.frames
        ));
    }
    flush(&mut conn).await;
    Run {
        frames: stored.min(report.frames),
        elapsed: Duration::from_secs_f64(report.seconds.max(0.0)),
        degraded: 0,
        problems,
    }
}
