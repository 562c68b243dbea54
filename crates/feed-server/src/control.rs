//! A tiny HTTP/1.1 control endpoint so shell scripts can use the fault controls:
//!
//! | request | effect | answer |
//! |---|---|---|
//! | `GET /stats` | | [`FeedStats`](crate::FeedStats) JSON (with the venue rules' counters) |
//! | `GET /subscriptions` | | `{"<connection id>":["stream", ...]}` |
//! | `GET /received` | | `[{"connection":1,"unix_ms":N,"keepalive":false,"text":"..."}, {..., "binary_hex":"..."}]` |
//! | `GET /health` | | `{"status":"ok"}` |
//! | `GET /connections` | | `{"connections":[1,3]}`: the open connections' ids, in connect order |
//! | `POST /drop` | drop every client socket, no close frame | `{"dropped":N}` |
//! | `POST /close?code=N` | close frame (default 1000) | `{"closed":N}` |
//! | `POST /stall?ms=N` | no reads, writes or pongs for N ms | `{"stalled":N,"ms":N}` |
//! | `POST /refuse?on=1` / `?on=0` | refuse new connections or stop refusing | `{"refusing":true}` |
//!
//! `/drop`, `/close` and `/stall` take an optional `connection=<id>` (the id in `/stats`,
//! `/received`, `/connections`): the order then goes to that one socket only, and the answer
//! counts 1, e.g. `{"closed":1,"connection":3}`. An id that is not open gets 404
//! `{"error":"no open connection 7","connections":[1,3]}`; a value that is not a number, 400.
//!
//! One request per connection (`Connection: close`); request bodies are ignored. In `/received`,
//! `unix_ms` is when the server read the message (ms since the Unix epoch, for pacing
//! measurements) and `keepalive` marks a venue keepalive (okx/bybit ping, htx pong).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::orders::SessionCommand;
use crate::registry::{ReceivedMessage, Registry};
use crate::session::Shared;
use crate::shutdown;

const MAX_HEAD_BYTES: usize = 8 * 1024;
/// A control request that takes longer than this (slow client, stuck command) is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest stall `POST /stall` orders (7 days): keeps `Instant` arithmetic far from overflow.
const MAX_STALL_MS: u64 = crate::venue::MAX_KNOB_MS;

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown::signalled(&mut stop) => break,
            Some(_) = requests.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    requests.spawn(async move {
                        let handled = tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &shared));
                        if let Ok(Err(error)) = handled.await {
                            tracing::debug!(%error, "control request failed");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    requests.abort_all();
}

async fn handle(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD_BYTES {
            return respond(
                &mut stream,
                431,
                &json!({"error": "request head too large"}),
            )
            .await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = route(method, path, query, shared).await;
    respond(&mut stream, status, &body).await
}

async fn route(method: &str, path: &str, query: &str, shared: &Shared) -> (u16, serde_json::Value) {
    let registry = &shared.registry;
    match (method, path) {
        ("GET", "/health") => (200, json!({"status": "ok"})),
        ("GET", "/stats") => match serde_json::to_value(shared.stats()) {
            Ok(stats) => (200, stats),
            Err(error) => (500, json!({"error": error.to_string()})),
        },
        ("GET", "/subscriptions") => (200, json!(registry.subscriptions())),
        ("GET", "/received") => (200, received_json(shared)),
        ("GET", "/connections") => (200, json!({"connections": registry.live_connections()})),
        ("POST", "/drop") => {
            order(registry, query, "dropped", json!({}), |done| {
                SessionCommand::Drop { done }
            })
            .await
        }
        ("POST", "/close") => match number(query, "code").unwrap_or(Ok(1000)) {
            Ok(code) if code <= u64::from(u16::MAX) => {
                let code = code as u16;
                order(registry, query, "closed", json!({}), |done| {
                    SessionCommand::Close { code, done }
                })
                .await
            }
            _ => (
                400,
                json!({"error": "code must be a close code (0..=65535)"}),
            ),
        },
        ("POST", "/stall") => match number(query, "ms") {
            Some(Ok(ms)) if ms <= MAX_STALL_MS => {
                let duration = Duration::from_millis(ms);
                order(registry, query, "stalled", json!({"ms": ms}), |done| {
                    SessionCommand::Stall { duration, done }
                })
                .await
            }
            _ => (
                400,
                json!({"error": format!("ms=<milliseconds, at most {MAX_STALL_MS}> is required")}),
            ),
        },
        ("POST", "/refuse") => {
            let on = !matches!(value(query, "on"), Some("0" | "false" | "off" | "no"));
            registry.set_refusing(on);
            (200, json!({"refusing": on}))
        }
        (
            _,
            "/health" | "/stats" | "/subscriptions" | "/received" | "/connections" | "/drop"
            | "/close" | "/stall" | "/refuse",
        ) => (405, json!({"error": "method not allowed"})),
        _ => (404, json!({"error": "not found"})),
    }
}

/// Gives every open session (or the one of `connection=<id>` in the query) the order `make`
/// makes; answers `{"<done_key>":N, ...extra}`.
async fn order(
    registry: &Registry,
    query: &str,
    done_key: &str,
    mut extra: serde_json::Value,
    make: impl Fn(oneshot::Sender<()>) -> SessionCommand,
) -> (u16, serde_json::Value) {
    let status = match number(query, "connection") {
        None => {
            extra[done_key] = json!(registry.command_all(make).await);
            200
        }
        Some(Err(_)) => {
            return (
                400,
                json!({"error": "connection must be a connection id (see GET /connections)"}),
            )
        }
        Some(Ok(id)) => {
            if !registry.command_one(id, make).await {
                return (
                    404,
                    json!({
                        "error": format!("no open connection {id}"),
                        "connections": registry.live_connections(),
                    }),
                );
            }
            extra[done_key] = json!(1);
            extra["connection"] = json!(id);
            200
        }
    };
    (status, extra)
}

fn received_json(shared: &Shared) -> serde_json::Value {
    let items: Vec<serde_json::Value> = shared
        .registry
        .received()
        .into_iter()
        .map(|r| {
            let mut item = json!({
                "connection": r.connection,
                "unix_ms": r.unix_ms,
                "keepalive": r.keepalive,
            });
            match r.message {
                ReceivedMessage::Text(text) => item["text"] = json!(text),
                ReceivedMessage::Binary(data) => {
                    let mut hex = String::with_capacity(data.len() * 2);
                    for byte in &data {
                        let _ = write!(hex, "{byte:02x}");
                    }
                    item["binary_hex"] = json!(hex);
                }
            }
            item
        })
        .collect();
    serde_json::Value::Array(items)
}

fn value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn number(query: &str, key: &str) -> Option<Result<u64, std::num::ParseIntError>> {
    value(query, key).map(str::parse)
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    body: &serde_json::Value,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
