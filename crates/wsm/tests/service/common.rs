//! Shared by the service tests: the service on memory backends in front of the feed server.

use std::sync::Arc;
use std::time::Duration;

use feed_server::{FeedConfig, FeedHandle, FeedServer};
use serde_json::Value;
use wsm::backends::memory::{MemoryBus, MemoryStateStore, Subscription};
use wsm::backends::Publisher;
use wsm::connection::BackoffPolicy;
use wsm::security::NetworkPolicy;
use wsm::{ConnectRequest, ServiceConfig, WebSocketService};

/// The gRPC code name an error answers with (the API's one mapping).
pub(crate) fn code(err: &wsm::ServiceError) -> &'static str {
    wsm::api::status::code_name(wsm::api::status::grpc_code(err))
}

pub(crate) const HANG: Duration = Duration::from_secs(20);

pub(crate) struct Env {
    pub(crate) feed: FeedHandle,
    pub(crate) state: MemoryStateStore,
    pub(crate) bus: MemoryBus,
    pub(crate) service: WebSocketService,
}

pub(crate) fn config() -> ServiceConfig {
    let mut config = ServiceConfig {
        instance_id: "wsm-test-1".into(),
        ..ServiceConfig::default()
    };
    // The feed server listens on loopback.
    config.connection.network = NetworkPolicy::allow_private();
    config.connection.backoff = BackoffPolicy {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        max_attempts: 20,
        jitter: 0.1,
    };
    config
}

pub(crate) async fn env_with(
    rate: u32,
    config: ServiceConfig,
    bus: Arc<dyn Publisher>,
    mem_bus: MemoryBus,
) -> Env {
    let feed = FeedServer::start(FeedConfig {
        rate,
        ..FeedConfig::default()
    })
    .await
    .expect("feed starts");
    let state = MemoryStateStore::new();
    let service = WebSocketService::start(config, Arc::new(state.clone()), bus)
        .await
        .expect("service starts");
    Env {
        feed,
        state,
        bus: mem_bus,
        service,
    }
}

pub(crate) async fn env(rate: u32) -> Env {
    let bus = MemoryBus::new();
    env_with(rate, config(), Arc::new(bus.clone()), bus).await
}

pub(crate) fn connect_req(url: String) -> ConnectRequest {
    ConnectRequest {
        url,
        ..ConnectRequest::default()
    }
}

pub(crate) async fn next_event(rx: &mut Subscription) -> Value {
    let bytes = tokio::time::timeout(HANG, rx.recv())
        .await
        .expect("an event within the hang bound")
        .expect("no lag");
    serde_json::from_slice(&bytes).expect("events are JSON")
}
