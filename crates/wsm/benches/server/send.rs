//! The send round trip: `Send` through the server against a bare client's own echo.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wsm::proto::{ConnectRequest, SendRequest};

use crate::support::{spawn_wsm, Client, Feed, Latencies};

use super::common::Settings;

/// Size of the `Send` payload, in bytes.
const PAYLOAD_SIZE: usize = 100;

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
pub(crate) struct SendFigure {
    pub(crate) grpc: Vec<[f64; 4]>,
    pub(crate) bare: Vec<[f64; 4]>,
}

pub(crate) async fn send_figure(
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
