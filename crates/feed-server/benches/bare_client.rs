//! Baseline throughput (SPEC section 7, "bare client"): a bare tokio-tungstenite client that only
//! counts the ~100-byte depth frames the feed server sends at max rate. A second run reads the
//! same stream as raw TCP bytes, to show what the server alone can send (when that is well above
//! the client's figure, the client is what is being measured).
//!
//! `cargo bench -p feed-server --bench bare_client`
//!
//! Environment: `BENCH_SECONDS` (per run, default 3), `BENCH_SIZE` (frame bytes, default 100),
//! `FEED_URL` (measure against a running `feed-server`, e.g. `ws://127.0.0.1:9000`, instead of
//! one started here). The in-process server runs on its own thread and single-threaded runtime,
//! like a separate process, so server and client each get a core.

use std::time::{Duration, Instant};

use feed_server::{FeedConfig, FeedServer};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::runtime::Builder;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts a feed server on its own thread; returns its base URL and how to stop it.
fn start_server() -> (String, oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async {
            let feed = FeedServer::start(FeedConfig::default())
                .await
                .expect("start feed server");
            url_tx.send(feed.url("")).expect("send url");
            let _ = stop_rx.await;
            feed.shutdown().await;
        });
    });
    let url = url_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server url");
    (url, stop_tx, thread)
}

struct Run {
    frames: u64,
    bytes: u64,
    elapsed: Duration,
    /// `u` of the last frame and how many frames arrived in all (warm-up included): equal
    /// when nothing was lost.
    last_seq: Option<(u64, u64)>,
}

/// The bare client: count text frames for `limit` after a short warm-up.
async fn bare_client(url: &str, limit: Duration) -> Run {
    let (mut client, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect to the feed server");
    let mut frames = 0u64;
    let mut bytes = 0u64;
    let mut warm_up_frames = 0u64;
    let mut started = Instant::now();
    let mut warming = true;
    loop {
        match client.next().await {
            Some(Ok(Message::Text(text))) => {
                frames += 1;
                bytes += text.len() as u64;
                if frames % 4096 == 0 {
                    if warming && started.elapsed() >= Duration::from_millis(300) {
                        // Timing starts after the warm-up; `u` keeps counting from the start.
                        warming = false;
                        warm_up_frames = frames;
                        started = Instant::now();
                        bytes = 0;
                        frames = 0;
                    } else if !warming && started.elapsed() >= limit {
                        let elapsed = started.elapsed();
                        let last_seq = serde_json::from_str::<serde_json::Value>(text.as_str())
                            .ok()
                            .and_then(|v| v["u"].as_u64())
                            .map(|u| (u, warm_up_frames + frames));
                        return Run {
                            frames,
                            bytes,
                            elapsed,
                            last_seq,
                        };
                    }
                }
            }
            Some(Ok(_)) => {}
            other => panic!("stream ended: {other:?}"),
        }
    }
}

/// The server alone: after the handshake, read and discard raw bytes.
async fn raw_reader(url: &str, limit: Duration, frame_len: u64) -> Run {
    let (client, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect to the feed server");
    let MaybeTlsStream::Plain(mut tcp) = client.into_inner() else {
        panic!("expected a plain TCP stream");
    };
    let mut buffer = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < limit {
        bytes += tcp.read(&mut buffer).await.expect("read") as u64;
    }
    Run {
        frames: bytes / frame_len,
        bytes,
        elapsed: started.elapsed(),
        last_seq: None,
    }
}

fn report(name: &str, size: usize, run: &Run) {
    let secs = run.elapsed.as_secs_f64();
    println!(
        "{name}: {} frames of ~{size} B in {secs:.2} s = {:.3} M frames/s ({:.1} MB/s)",
        run.frames,
        run.frames as f64 / secs / 1e6,
        run.bytes as f64 / secs / 1e6
    );
}

fn main() {
    let limit = Duration::from_secs_f64(env_or("BENCH_SECONDS", 3.0));
    let size: usize = env_or("BENCH_SIZE", 100);
    let (base, server) = match std::env::var("FEED_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let (url, stop, thread) = start_server();
            (url, Some((stop, thread)))
        }
    };
    let url = format!("{base}/ws?rate=0&size={size}");
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");

    let client = runtime.block_on(bare_client(&url, limit));
    report("bare client", size, &client);
    match client.last_seq {
        Some((u, total)) if u == total => println!("sequence: u = {u} = frames received, no gaps"),
        other => println!("sequence: GAPS (last u, frames received) = {other:?}"),
    }
    // Frame header: 2 bytes below 126 payload bytes, 4 below 64 KiB.
    let header = if size < 126 { 2 } else { 4 };
    let raw = runtime.block_on(raw_reader(&url, limit, (size + header) as u64));
    report("server alone (raw TCP reader)", size, &raw);

    if let Some((stop, thread)) = server {
        let _ = stop.send(());
        let _ = thread.join();
    }
}
