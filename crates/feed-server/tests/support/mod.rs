//! Helpers shared by the integration tests: a server on a free port, a real tokio-tungstenite
//! client, and bounded waits (the bounds only guard against hangs).
#![allow(dead_code)] // each test crate uses a different subset

pub mod tls;

use std::time::{Duration, Instant};

use feed_server::{FeedConfig, FeedHandle, FeedServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Any WebSocket client stream (plain, or TLS made by the test itself).
pub trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// Upper bound for anything that should happen promptly.
pub const LONG: Duration = Duration::from_secs(10);

pub async fn start(config: FeedConfig) -> FeedHandle {
    FeedServer::start(config).await.expect("feed server starts")
}

/// A server that sends nothing unless asked (`streams=0` by default).
pub async fn start_quiet() -> FeedHandle {
    start(FeedConfig {
        auto_stream: false,
        ..FeedConfig::default()
    })
    .await
}

pub async fn connect(url: &str) -> Client {
    timeout(LONG, connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect failed")
        .0
}

/// The next message (of any kind) from the server.
pub async fn next<S: Io>(client: &mut WebSocketStream<S>) -> Message {
    timeout(LONG, client.next())
        .await
        .expect("timed out waiting for a message")
        .expect("connection ended")
        .expect("connection failed")
}

pub async fn next_text<S: Io>(client: &mut WebSocketStream<S>) -> String {
    match next(client).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The next text message that is not a depth update (a reply), skipping frames.
pub async fn next_reply<S: Io>(client: &mut WebSocketStream<S>) -> String {
    loop {
        let text = next_text(client).await;
        if !text.contains("\"depthUpdate\"") {
            return text;
        }
    }
}

/// Whether any message arrives within `within` (which should be short).
pub async fn silent_for<S: Io>(client: &mut WebSocketStream<S>, within: Duration) -> bool {
    timeout(within, client.next()).await.is_err()
}

pub async fn send_text<S: Io>(client: &mut WebSocketStream<S>, text: &str) {
    timeout(LONG, client.send(Message::text(text)))
        .await
        .expect("send timed out")
        .expect("send failed");
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The depth update of a bare or combined frame.
pub fn update(frame: &str) -> Value {
    let mut value = json(frame);
    if value.get("data").is_some() {
        value["data"].take()
    } else {
        value
    }
}

/// The `u` sequence number of a frame.
pub fn seq(frame: &str) -> u64 {
    update(frame)["u"]
        .as_u64()
        .unwrap_or_else(|| panic!("no u in {frame}"))
}

/// Waits until the server has stopped writing frames (its client does not read and the socket
/// buffers are full); returns how many frames it wrote.
pub async fn wait_until_writes_block(feed: &FeedHandle) -> u64 {
    let mut last = 0;
    let mut steady = 0;
    let deadline = Instant::now() + LONG;
    while steady < 5 {
        assert!(
            Instant::now() < deadline,
            "the server never stopped writing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = feed.stats().frames_sent_total;
        if sent == last && sent > 0 {
            steady += 1;
        } else {
            steady = 0;
            last = sent;
        }
    }
    last
}

/// One HTTP/1.1 request to the control endpoint; returns the status and the JSON body.
pub async fn http(addr: &str, method: &str, target: &str) -> (u16, Value) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = timeout(LONG, exchange)
        .await
        .expect("control request hung")
        .expect("control request failed");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, json(body))
}
