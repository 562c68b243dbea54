//! The forwarding overhead: `SendRaw` on the owner against `SendRaw` forwarded by a peer.

use std::time::{Duration, Instant};

use feed_server::FeedConfig;
use wsm::proto::{ConnectRequest, SendRawRequest};
use wsm_testkit::RedisServer;

use crate::support::{Client, Feed, Latencies, WsmProcess};

use super::common::{instance, Settings};

/// Size of the `SendRaw` payload, in bytes.
const PAYLOAD_SIZE: usize = 100;

pub(crate) struct ForwardFigure {
    /// [median, p90, p99, max] in µs.
    pub(crate) direct: [f64; 4],
    pub(crate) forwarded: [f64; 4],
    /// `wsm_forwarded_total` on B and on A after the run.
    pub(crate) forwarded_by_b: f64,
    pub(crate) forwarded_by_a: f64,
}

/// A `text/plain` payload of exactly `PAYLOAD_SIZE` bytes.
fn payload() -> Vec<u8> {
    let text = format!("{:-<PAYLOAD_SIZE$}", "SendRaw forwarding bench ");
    assert_eq!(text.len(), PAYLOAD_SIZE);
    text.into_bytes()
}

async fn send_raw_calls(
    client: &mut Client,
    id: &str,
    payload: &[u8],
    n: usize,
    times: &mut Vec<Duration>,
) -> Result<(), String> {
    for call in 0..n {
        let request = SendRawRequest {
            id: id.to_owned(),
            message: payload.to_vec(),
            content_type: "text/plain".into(),
            replay_on_reconnect: false,
        };
        let started = Instant::now();
        client
            .send_raw(request)
            .await
            .map_err(|e| format!("SendRaw {call}: {e}"))?;
        times.push(started.elapsed());
    }
    Ok(())
}

pub(crate) async fn forward_figure(
    settings: &Settings,
    problems: &mut Vec<String>,
) -> Option<ForwardFigure> {
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = Feed::start(FeedConfig {
        rate: 1,
        auto_stream: false,
        record_limit: 1024,
        ..FeedConfig::default()
    });
    let a = instance(settings, &url, "bench-a", &[]);
    let b = instance(settings, &url, "bench-b", &[]);
    let result = forward_on(settings, &feed, &a, &b).await;
    let result = result.map_err(|e| {
        format!(
            "{e}\nA's log ends:\n{}\nB's log ends:\n{}",
            a.logs(),
            b.logs()
        )
    });
    drop((a, b));
    feed.stop();
    drop(redis);
    match result {
        Ok(figure) => {
            let expected = (settings.warmup + settings.calls) as f64;
            if figure.forwarded_by_b < expected {
                problems.push(format!(
                    "B forwarded {} calls; {expected} were sent to it",
                    figure.forwarded_by_b
                ));
            }
            if figure.forwarded_by_a != 0.0 {
                problems.push(format!(
                    "A, the owner, forwarded {} calls",
                    figure.forwarded_by_a
                ));
            }
            Some(figure)
        }
        Err(e) => {
            problems.push(format!("forwarding: {e}"));
            None
        }
    }
}

async fn forward_on(
    settings: &Settings,
    feed: &Feed,
    a: &WsmProcess,
    b: &WsmProcess,
) -> Result<ForwardFigure, String> {
    let mut direct = a.unbounded_client().await;
    let mut via_b = b.unbounded_client().await;
    let id = direct
        .connect(ConnectRequest {
            url: feed.silent_url(),
            ..ConnectRequest::default()
        })
        .await
        .map_err(|e| format!("Connect through A: {e}"))?
        .into_inner()
        .id;
    let payload = payload();
    let mut ignored = Vec::new();
    send_raw_calls(&mut direct, &id, &payload, settings.warmup, &mut ignored).await?;
    send_raw_calls(&mut via_b, &id, &payload, settings.warmup, &mut ignored).await?;
    let mut direct_times = Vec::with_capacity(settings.calls);
    let mut forwarded_times = Vec::with_capacity(settings.calls);
    let mut left = settings.calls;
    let mut block = 0;
    while left > 0 {
        let n = left.min(settings.block);
        // Alternate which path goes first, so a drift in the machine's speed favours neither.
        if block % 2 == 0 {
            send_raw_calls(&mut direct, &id, &payload, n, &mut direct_times).await?;
            send_raw_calls(&mut via_b, &id, &payload, n, &mut forwarded_times).await?;
        } else {
            send_raw_calls(&mut via_b, &id, &payload, n, &mut forwarded_times).await?;
            send_raw_calls(&mut direct, &id, &payload, n, &mut direct_times).await?;
        }
        left -= n;
        block += 1;
    }
    let takeovers =
        a.try_metric("wsm_takeovers_total").await? + b.try_metric("wsm_takeovers_total").await?;
    if takeovers != 0.0 {
        return Err(format!(
            "{takeovers} takeovers: the connection moved during the run"
        ));
    }
    let figure = ForwardFigure {
        direct: Latencies::new(direct_times).summary(),
        forwarded: Latencies::new(forwarded_times).summary(),
        forwarded_by_b: b.try_metric("wsm_forwarded_total").await?,
        forwarded_by_a: a.try_metric("wsm_forwarded_total").await?,
    };
    let (d, f) = (figure.direct, figure.forwarded);
    println!(
        "forward: {} calls per path in blocks of {}; direct (A) median {:.1} µs (p90 {:.1}, p99 \
         {:.1}, max {:.0}); forwarded (B → A) median {:.1} µs (p90 {:.1}, p99 {:.1}, max {:.0}); \
         B's wsm_forwarded_total {}",
        settings.calls,
        settings.block,
        d[0],
        d[1],
        d[2],
        d[3],
        f[0],
        f[1],
        f[2],
        f[3],
        figure.forwarded_by_b
    );
    Ok(figure)
}
