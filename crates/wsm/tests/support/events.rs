//! Reading what a service published on the memory bus: a connection opened and publishing, its
//! next event, the next lifecycle event of a kind, the lifecycle kinds seen so far.

use std::time::Duration;

use serde_json::Value;
use wsm::backends::memory::{MemoryBus, Subscription};
use wsm::{ConnectRequest, WebSocketService};

/// How long a test waits for an event before it fails (against hangs, not a timing).
pub const HANG: Duration = Duration::from_secs(30);
pub const LIFECYCLE: &str = "websocketmanager.lifecycle";
const LIFECYCLE_TYPE: &str = "com.virtufin.websocketmanager.lifecycle.";

/// Connects with `req` and publishes to `topic`: the id, the topic's and the lifecycle's streams
/// (subscribed before the connect, so nothing is missed).
pub async fn open_publishing(
    service: &WebSocketService,
    bus: &MemoryBus,
    req: ConnectRequest,
    topic: &str,
) -> (String, Subscription, Subscription) {
    let frames = bus.subscribe(topic);
    let lifecycle = bus.subscribe(LIFECYCLE);
    let record = service.connect(req).await.expect("connects");
    service
        .start_publish(&record.id, topic)
        .await
        .expect("publishes");
    (record.id, frames, lifecycle)
}

pub async fn next(rx: &mut Subscription) -> Value {
    let bytes = tokio::time::timeout(HANG, rx.recv())
        .await
        .expect("an event within the hang bound")
        .expect("no lag");
    serde_json::from_slice(&bytes).expect("events are JSON")
}

/// The reason of the next lifecycle event of `kind`, skipping others.
pub async fn next_kind(rx: &mut Subscription, kind: &str) -> String {
    loop {
        let event = next(rx).await;
        if event["type"] == format!("{LIFECYCLE_TYPE}{kind}") {
            return event["data"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
    }
}

/// Every lifecycle event kind received so far, without waiting.
pub fn kinds_so_far(rx: &mut Subscription) -> Vec<String> {
    let mut kinds = Vec::new();
    while let Ok(bytes) = rx.try_recv() {
        let event: Value = serde_json::from_slice(&bytes).expect("events are JSON");
        let kind = event["type"].as_str().unwrap_or_default();
        kinds.push(kind.trim_start_matches(LIFECYCLE_TYPE).to_owned());
    }
    kinds
}
