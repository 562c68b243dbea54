//! Shared by the upstream fault tests: the gate, talking to wsm, counting what is left behind.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Streaming;
use wsm::backends::memory::{MemoryBus, MemoryStateStore, Subscription};
use wsm::connection::BackoffPolicy;
use wsm::proto::web_socket_manager_client::WebSocketManagerClient;
use wsm::proto::{
    ConnectRequest, ListRequest, PublishedEvent, StartPublishRequest, SubscribeRequest,
    WebSocketConnection,
};
use wsm::security::NetworkPolicy;
use wsm::{ServiceConfig, WebSocketService};

use crate::support::server::{bounded, HANG};

type Client = WebSocketManagerClient<Channel>;

/// The tests that count this process's file descriptors run alone ([`alone`]); every other test
/// holds a shared guard for its whole run ([`shared`]), so its sockets are never counted by mistake.
static GATE: RwLock<()> = RwLock::new(());

/// Runs a test beside the other shared ones, on its own runtime.
pub(crate) fn shared(test: impl Future<Output = ()>) {
    let _gate = GATE.read().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(bounded(test));
}

/// Runs a test while no other test of this file runs. Its runtime is built after the gate is
/// taken and dropped before it is released: another test's runtime (its epoll and event fds),
/// sockets and tasks never overlap the counts.
pub(crate) fn alone(test: impl Future<Output = ()>) {
    let _gate = GATE.write().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(bounded(test));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

pub(crate) async fn connect(client: &mut Client, url: &str, auto_reconnect: bool) -> String {
    let response = client
        .connect(ConnectRequest {
            url: url.to_owned(),
            auto_reconnect,
            ..ConnectRequest::default()
        })
        .await
        .expect("Connect")
        .into_inner();
    assert_eq!(response.status, "connected");
    response.id
}

pub(crate) async fn subscribe(client: &mut Client, topic: &str) -> Streaming<PublishedEvent> {
    client
        .subscribe(SubscribeRequest {
            topic: topic.to_owned(),
        })
        .await
        .expect("Subscribe")
        .into_inner()
}

pub(crate) async fn start_publish(client: &mut Client, id: &str, topic: &str) {
    client
        .start_publish(StartPublishRequest {
            id: id.to_owned(),
            topic: topic.to_owned(),
        })
        .await
        .expect("StartPublish");
}

pub(crate) async fn listed(client: &mut Client) -> Vec<WebSocketConnection> {
    client
        .list(ListRequest::default())
        .await
        .expect("List")
        .into_inner()
        .connections
}

async fn next_event(events: &mut Streaming<PublishedEvent>) -> PublishedEvent {
    tokio::time::timeout(HANG, events.message())
        .await
        .expect("an event within the hang bound")
        .expect("the stream stays open")
        .expect("an event")
}

/// A published frame: its seq, epoch, and `n` for a `{"n":…}` text frame or its bytes otherwise.
#[derive(Debug, PartialEq)]
pub(crate) struct Published {
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
    pub(crate) body: Body,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Body {
    Numbered(u64),
    Binary(Vec<u8>),
}

pub(crate) fn published(event: &PublishedEvent) -> Published {
    use base64::Engine;
    let cloud: Value = serde_json::from_str(&event.cloud_event).expect("CloudEvent JSON");
    let body = match (&cloud["data"], &cloud["data_base64"]) {
        (Value::String(text), Value::Null) => {
            assert_eq!(cloud["contentType"], "text/plain", "{cloud}");
            let frame: Value = serde_json::from_str(text).unwrap_or_else(|e| {
                panic!("a published text frame is one the upstream sent ({e}): {text:?}")
            });
            Body::Numbered(frame["n"].as_u64().expect("a numbered frame"))
        }
        (Value::Null, Value::String(b64)) => {
            assert_eq!(cloud["contentType"], "application/octet-stream");
            Body::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64"),
            )
        }
        other => panic!("a frame event carries data or data_base64: {other:?}"),
    };
    Published {
        seq: event.seq,
        epoch: event.epoch,
        body,
    }
}

/// The next `count` frames published on `events`.
pub(crate) async fn frames(events: &mut Streaming<PublishedEvent>, count: usize) -> Vec<Published> {
    let mut frames = Vec::with_capacity(count);
    while frames.len() < count {
        let Ok(event) = tokio::time::timeout(HANG, events.message()).await else {
            panic!(
                "only {} of {count} frames were published within {HANG:?}; the last: {:?}",
                frames.len(),
                frames.last()
            );
        };
        let event = event.expect("the stream stays open").expect("an event");
        frames.push(published(&event));
    }
    frames
}

/// A lifecycle event, as published.
#[derive(Debug, Clone)]
pub(crate) struct Life {
    pub(crate) kind: String,
    pub(crate) reason: String,
    pub(crate) attempt: u64,
    pub(crate) epoch: u64,
}

pub(crate) fn life(json: &[u8]) -> (String, Life) {
    let cloud: Value = serde_json::from_slice(json).expect("lifecycle CloudEvent JSON");
    let kind = cloud["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("com.virtufin.websocketmanager.lifecycle."))
        .expect("a lifecycle type")
        .to_owned();
    let data = &cloud["data"];
    let id = data["connection_id"]
        .as_str()
        .expect("connection_id")
        .to_owned();
    let event = Life {
        kind,
        reason: data["reason"].as_str().expect("reason").to_owned(),
        attempt: data["attempt"].as_u64().expect("attempt"),
        epoch: data["epoch"].as_u64().expect("epoch"),
    };
    (id, event)
}

/// `id`'s lifecycle events from a Subscribe stream, up to and including the first of `kind`.
pub(crate) async fn lifecycle_until(
    events: &mut Streaming<PublishedEvent>,
    id: &str,
    kind: &str,
) -> Vec<Life> {
    let mut seen = Vec::new();
    loop {
        let (of, event) = life(next_event(events).await.cloud_event.as_bytes());
        if of != id {
            continue;
        }
        let done = event.kind == kind;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// The same, from the memory bus of an in-process service.
pub(crate) async fn bus_lifecycle_until(
    events: &mut Subscription,
    id: &str,
    kind: &str,
) -> Vec<Life> {
    let mut seen = Vec::new();
    loop {
        let json = tokio::time::timeout(HANG, events.recv())
            .await
            .expect("a lifecycle event within the hang bound")
            .expect("the subscriber keeps up");
        let (of, event) = life(&json);
        if of != id {
            continue;
        }
        let done = event.kind == kind;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

pub(crate) fn kinds(events: &[Life]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Alive tokio tasks of this test's runtime and open file descriptors of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resources {
    tasks: usize,
    fds: usize,
}

pub(crate) fn resources() -> Resources {
    Resources {
        tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        fds: std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .count(),
    }
}

/// Waits until both counts are back at (or below) `baseline`: a task or socket left behind keeps
/// one above it for good, while ones still finishing (a closing socket, a returning task) drop
/// out within moments. Returns what was counted last.
pub(crate) async fn back_to(baseline: Resources, what: &str) -> Resources {
    let deadline = Instant::now() + HANG;
    loop {
        let now = resources();
        if now.tasks <= baseline.tasks && now.fds <= baseline.fds {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {now:?} after the faults, baseline {baseline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A service in this process, on the memory backends, with its own connect timeout and backoff.
pub(crate) async fn local_service(
    connect_timeout: Duration,
    backoff: BackoffPolicy,
) -> (WebSocketService, MemoryBus) {
    let bus = MemoryBus::new();
    let mut config = ServiceConfig {
        instance_id: "faults-upstream".into(),
        ..ServiceConfig::default()
    };
    config.connection.network = NetworkPolicy::allow_private();
    config.connection.connect_timeout = connect_timeout;
    config.connection.backoff = backoff;
    let service = WebSocketService::start(
        config,
        Arc::new(MemoryStateStore::new()),
        Arc::new(bus.clone()),
    )
    .await
    .expect("the service starts");
    (service, bus)
}

pub(crate) fn request(url: &str, auto_reconnect: bool) -> wsm::ConnectRequest {
    wsm::ConnectRequest {
        url: url.to_owned(),
        auto_reconnect,
        ..wsm::ConnectRequest::default()
    }
}

/// A short backoff that gives up after `attempts`.
pub(crate) fn backoff(attempts: u32) -> BackoffPolicy {
    BackoffPolicy {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(100),
        max_attempts: attempts,
        jitter: 0.0,
    }
}
