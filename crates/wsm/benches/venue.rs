//! The cost and accuracy of the venue protocols (SPEC 9), each against its baseline in the same run:
//!
//! 1. **decompressed ingest**: one connection with `decompress: gzip` reading HTX-like frames
//!    (a ~300-byte JSON market-by-price update, gzip-compressed) into the memory bus, against the
//!    same frames uncompressed on a connection with no venue option. The upstream is a raw sender
//!    on its own thread: it writes pre-encoded WebSocket frames in large batches, so the upstream
//!    is never what limits either path. Every published frame is checked: its `seq` counts 1, 2,
//!    3, … and the last one's payload is the uncompressed JSON. Median of 3 runs.
//! 2. **pacing accuracy**: 100 messages queued at once (SendRaw) with `outbound_rate` 5 per
//!    second, 200 ms apart, on a connection to the feed server; the gaps between their arrival
//!    times as the feed server records them (p0, p50, p100). The minimum must not be below the
//!    spacing, and no 1-second window may hold more than 5.
//!
//! `cargo bench -p wsm --bench venue` (about 40 s). Without `--bench` (`cargo test
//! --all-targets`) it runs once with small counts. Environment: `BENCH_FRAMES` (frames per ingest
//! run, default 2 000 000), `BENCH_PACED` (messages, default 100), `BENCH_ONLY`
//! (`decompress,pacing`), `BENCH_ROWS` (rows for `scripts/bench.sh`).

#[path = "support/mod.rs"]
mod support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use feed_server::FeedConfig;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::runtime::Builder;
use tokio::sync::broadcast;
use wsm::backends::memory::{BusEventRef, MemoryBus, MemoryStateStore};
use wsm::security::NetworkPolicy;
use wsm::venue::VenueOptions;
use wsm::{ConnectRequest, ServiceConfig, WebSocketService};

use support::rows::{grouped, Rows};
use support::{env_or, wanted, Feed};

const TOPIC: &str = "bench.venue";
const HANG: Duration = Duration::from_secs(120);

/// An HTX market-by-price update of about 300 bytes.
fn htx_frame() -> Vec<u8> {
    let frame = serde_json::json!({
        "ch": "market.btcusdt.mbp.150",
        "ts": 1_764_000_000_000u64,
        "tick": {
            "seqNum": 100_000_123u64,
            "prevSeqNum": 100_000_122u64,
            "bids": [[50_000.12, 1.234], [49_999.5, 0.5], [49_998.0, 2.0]],
            "asks": [[50_001.0, 0.75], [50_002.25, 1.5], [50_003.5, 3.25]],
        }
    })
    .to_string();
    let mut bytes = frame.into_bytes();
    // Pad inside the JSON to ~300 bytes, as a real update with more levels would be.
    bytes.pop();
    bytes.extend_from_slice(b",\"pad\":\"");
    while bytes.len() < 290 {
        bytes.push(b'x');
    }
    bytes.extend_from_slice(b"\"}");
    bytes
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// One unmasked server frame: FIN + opcode, the length, the payload.
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A raw sender on its own thread: after the handshake it waits for the client's first message,
/// then writes `count` copies of `frame` in batches and keeps the socket open.
fn raw_upstream(frame: Vec<u8>, count: u64) -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            // The client's go: a text message sent once it publishes.
            let _ = ws.next().await;
            let batch: Vec<u8> = frame.repeat(256);
            let tcp = ws.get_mut();
            let mut left = count;
            while left >= 256 {
                if tcp.write_all(&batch).await.is_err() {
                    return;
                }
                left -= 256;
            }
            for _ in 0..left {
                let _ = tcp.write_all(&frame).await;
            }
            let _ = tcp.flush().await;
            // Held open until the client closes.
            let _ = ws.next().await;
        });
    });
    addr_rx.recv().unwrap()
}

async fn service() -> (WebSocketService, MemoryBus) {
    let mut config = ServiceConfig {
        instance_id: "bench-venue".into(),
        ..ServiceConfig::default()
    };
    config.connection.network = NetworkPolicy::allow_private();
    let bus = MemoryBus::new();
    let service = WebSocketService::start(
        config,
        Arc::new(MemoryStateStore::new()),
        Arc::new(bus.clone()),
    )
    .await
    .expect("service");
    (service, bus)
}

/// Frames/s of one ingest run, or the reason it does not count.
async fn ingest(compressed: bool, count: u64, plain: &[u8]) -> Result<f64, String> {
    let frame = if compressed {
        ws_frame(0x2, &gzip(plain))
    } else {
        ws_frame(0x1, plain)
    };
    let addr = raw_upstream(frame, count);
    let (service, bus) = service().await;
    let venue: VenueOptions = if compressed {
        serde_json::from_str(r#"{"decompress":"gzip"}"#).unwrap()
    } else {
        VenueOptions::default()
    };
    let record = service
        .connect(ConnectRequest {
            url: format!("ws://{addr}/"),
            venue,
            ..ConnectRequest::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut events = bus.subscribe(TOPIC);
    service
        .start_publish(&record.id, TOPIC)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    service
        .send_raw(&record.id, Bytes::from_static(b"go"), "text/plain", false)
        .await
        .map_err(|e| e.to_string())?;
    let (mut seen, mut last_seq, mut last_payload) = (0u64, 0u64, Bytes::new());
    let drained = tokio::time::timeout(HANG, async {
        while seen < count {
            match events.recv_batch().await {
                Ok(batch) => {
                    for event in batch.iter() {
                        if let BusEventRef::Frame(_, frame) = event {
                            if frame.seq != last_seq + 1 {
                                return Err(format!("seq {} after {last_seq}", frame.seq));
                            }
                            last_seq = frame.seq;
                            last_payload = frame.payload.clone();
                        }
                        seen += 1;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Err(format!("the subscriber lagged by {n}"))
                }
                Err(broadcast::error::RecvError::Closed) => return Err("bus closed".into()),
            }
        }
        Ok(())
    })
    .await;
    let elapsed = started.elapsed();
    drained.map_err(|_| "timed out".to_owned())??;
    if last_payload.as_ref() != plain {
        return Err("the last frame is not the uncompressed JSON".into());
    }
    service.disconnect(&record.id).await.ok();
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// µs per frame of inflating `compressed` alone, with one reused decoder as a leg does: what the
/// decompressed path pays on top of the uncompressed one.
fn inflate_alone(compressed: &[u8], plain: &[u8], rounds: u32) -> f64 {
    use std::io::Read;
    let input = Bytes::copy_from_slice(compressed);
    let mut decoder = flate2::bufread::GzDecoder::new(std::io::Cursor::new(Bytes::new()));
    let started = Instant::now();
    for _ in 0..rounds {
        decoder.reset(std::io::Cursor::new(input.clone()));
        let mut out = Vec::with_capacity(1024);
        decoder.read_to_end(&mut out).expect("inflates");
        assert_eq!(out, plain);
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Gaps between paced arrivals at the feed server, in ms (sorted), and the most in any 1 s.
async fn pacing(feed: &Feed, messages: usize) -> Result<(Vec<f64>, usize), String> {
    let (service, _bus) = service().await;
    let venue: VenueOptions = serde_json::from_str(
        r#"{"outbound_rate":{"messages":5,"per_ms":1000,"spacing_ms":200,"max_wait_ms":120000}}"#,
    )
    .unwrap();
    let record = service
        .connect(ConnectRequest {
            url: format!("{}/ws?streams=0", feed.base),
            venue,
            ..ConnectRequest::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let sends = (0..messages).map(|i| {
        let (service, id) = (service.clone(), record.id.clone());
        async move {
            service
                .send_raw(
                    &id,
                    Bytes::from(format!("{{\"paced\":{i}}}")),
                    "application/json",
                    false,
                )
                .await
        }
    });
    for result in futures_util::future::join_all(sends).await {
        result.map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + HANG;
    let arrivals = loop {
        let got: Vec<Instant> = feed
            .handle
            .received()
            .into_iter()
            .filter(|r| r.message.as_text().is_some_and(|t| t.contains("\"paced\"")))
            .map(|r| r.received_at)
            .collect();
        if got.len() >= messages || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if arrivals.len() != messages {
        return Err(format!("{} of {messages} arrived", arrivals.len()));
    }
    let mut gaps: Vec<f64> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let per_second = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|t| **t - arrivals[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    service.disconnect(&record.id).await.ok();
    Ok((gaps, per_second))
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rows = Rows::from_env("cargo bench -p wsm --bench venue", smoke);
    let frames: u64 = env_or("BENCH_FRAMES", if smoke { 20_000 } else { 2_000_000 });
    let paced: usize = env_or("BENCH_PACED", if smoke { 8 } else { 100 });
    let runs = if smoke { 1 } else { 3 };
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut failed = false;
    if wanted("decompress") {
        let plain = htx_frame();
        println!(
            "frame: {} bytes of JSON, {} gzip-compressed",
            plain.len(),
            gzip(&plain).len()
        );
        let mut rates = [Vec::new(), Vec::new()];
        for run in 0..runs {
            // Alternating, so drift on the machine hits both alike.
            for (i, compressed) in [false, true].into_iter().enumerate() {
                match runtime.block_on(ingest(compressed, frames, &plain)) {
                    Ok(rate) => {
                        println!(
                            "{:<28} run {}: {:>9.0} frames/s",
                            if compressed {
                                "gzip, decompress: gzip"
                            } else {
                                "uncompressed, no option"
                            },
                            run + 1,
                            rate
                        );
                        rates[i].push(rate);
                    }
                    Err(e) => {
                        println!("run failed: {e}");
                        failed = true;
                    }
                }
            }
        }
        if !rates[0].is_empty() && !rates[1].is_empty() {
            let (plain_rate, gzip_rate) = (median(rates[0].clone()), median(rates[1].clone()));
            let ratio = gzip_rate / plain_rate;
            println!("decompressed ingest: {gzip_rate:.0}/s vs {plain_rate:.0}/s uncompressed = {ratio:.2}");
            let inflate_us =
                inflate_alone(&gzip(&plain), &plain, if smoke { 1_000 } else { 200_000 });
            let pipeline_us = 1e6 / plain_rate;
            println!(
                "inflate alone: {inflate_us:.2} µs per frame; the whole uncompressed pipeline: {pipeline_us:.2} µs per frame"
            );
            rows.add(
                "inflate alone, one ~300 B gzip frame (flate2 on zlib-rs, decoder reused)",
                &format!("{inflate_us:.2} µs/frame"),
                &format!("the whole uncompressed ingest pipeline {pipeline_us:.2} µs/frame"),
                &format!("{:.1}", inflate_us / pipeline_us),
                "— (explains the row above)",
            );
            rows.add(
                "decompressed ingest, ~300 B gzip frames → memory bus",
                &format!("{}/s", grouped(gzip_rate)),
                &format!("same frames uncompressed {}/s", grouped(plain_rate)),
                &format!("{ratio:.2}"),
                &format!("≥ 0.5 {}", if ratio >= 0.5 { "✅" } else { "❌" }),
            );
        }
    }
    if wanted("pacing") {
        let feed = Feed::start(FeedConfig {
            rate: 0,
            ..FeedConfig::default()
        });
        match runtime.block_on(pacing(&feed, paced)) {
            Ok((gaps, per_second)) => {
                let (p0, p50, p100) = (gaps[0], gaps[gaps.len() / 2], gaps[gaps.len() - 1]);
                println!(
                    "pacing, {paced} messages at 5/s, 200 ms apart: gaps p0 {p0:.1} ms, p50 {p50:.1} ms, p100 {p100:.1} ms; at most {per_second} in any 1 s"
                );
                let ok = p0 >= 200.0 && per_second <= 5;
                failed |= !ok;
                rows.add(
                    &format!("pacing accuracy, {paced} queued messages at 5/s, 200 ms apart"),
                    &format!(
                        "gaps p0/p50/p100 {p0:.1}/{p50:.1}/{p100:.1} ms, ≤ {per_second} per 1 s"
                    ),
                    "the configured 200 ms spacing",
                    &format!("{:.3}", p0 / 200.0),
                    &format!("p0 ≥ spacing {}", if ok { "✅" } else { "❌" }),
                );
            }
            Err(e) => {
                println!("pacing failed: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
