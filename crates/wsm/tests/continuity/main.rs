//! Continuity (SPEC 8), counted in the venue's own ids read back from the bus: a venue-like feed
//! (the feed server's broadcast mode: every socket gets the same globally numbered stream, at
//! 1,000 frames/s) and a service on the memory bus. Every change of socket must publish each
//! venue id once, in order, with `seq` gap-free and the same `epoch`; what cannot be avoided (the
//! only leg dropped) is bounded and announced exactly.
//!
//! - `rotation`: max_lifetime_ms, a venue notice, Rotate; sequenced and id-less; 5 runs each.
//! - `drops`: closes with 1001 and drops without a close frame, with one leg and with two; stalls.
//! - `hostile`: legs that disagree, ids that are not numbers, a venue reset, a 16 MiB frame.
//! - `redis`: rotations and a dropped leg over a real Redis, read back from the stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use feed_server::{FeedConfig, FeedHandle, FeedServer};
use serde_json::Value;
use wsm::backends::memory::{MemoryBus, MemoryStateStore, Subscription};
use wsm::security::NetworkPolicy;
use wsm::venue::{Matcher, SequenceRule, VenueOptions};
use wsm::{ConnectRequest, ServiceConfig, WebSocketService};

mod drops;
mod hostile;
mod redis;
mod rotation;
#[path = "../support/mod.rs"]
mod support;

use support::events::{open_publishing, HANG};

const TOPIC: &str = "continuity.frames";
const LIFECYCLE_TYPE: &str = "com.virtufin.websocketmanager.lifecycle.";
/// The venue's rate: 1,000 frames/s, as the figures.
const RATE: u32 = 1000;

/// Which identity the arbiter has to go by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// Depth updates with a global `u` per symbol `s`, and a `sequence` rule naming them.
    Sequenced,
    /// Frames with no id the service is told of: fingerprints (the feed's token stays readable
    /// to the test only).
    Fingerprint,
}

/// A broadcast feed of its own.
pub async fn venue() -> FeedHandle {
    FeedServer::start(FeedConfig {
        rate: RATE,
        broadcast: true,
        ..FeedConfig::default()
    })
    .await
    .expect("feed starts")
}

/// Waits (bounded) until the feed has `n` sockets open; their ids, in connect order.
pub async fn legs_open(feed: &FeedHandle, n: usize) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let live = feed.live_connections();
        if live.len() == n {
            return live;
        }
        assert!(tokio::time::Instant::now() < deadline, "{live:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn service(name: &str) -> (MemoryBus, WebSocketService) {
    let mut config = ServiceConfig {
        instance_id: name.into(),
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
    .expect("service starts");
    (bus, service)
}

/// The venue options of a run: the identity rule, plus `more`.
pub fn options(ids: Ids, more: VenueOptions) -> VenueOptions {
    VenueOptions {
        sequence: (ids == Ids::Sequenced).then(|| SequenceRule {
            value: "/u".into(),
            key: Some("/s".into()),
            prev: None,
        }),
        ..more
    }
}

pub fn notice() -> Matcher {
    Matcher {
        text: None,
        pointer: Some("/event/e".into()),
        value: Some(Value::from("serverShutdown")),
    }
}

/// One published frame: its venue id (None for frames without one, e.g. a notice), seq, epoch.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub id: Option<u64>,
    pub seq: u64,
    pub epoch: u64,
}

/// A connection under test: what it published and its lifecycle, collected as they come.
pub struct Run {
    pub id: String,
    pub service: WebSocketService,
    pub feed: FeedHandle,
    frames: Arc<Mutex<Vec<Seen>>>,
    events: Arc<Mutex<Vec<(String, String)>>>,
}

impl Run {
    pub async fn start(
        name: &str,
        feed: FeedHandle,
        ids: Ids,
        query: &str,
        venue: VenueOptions,
    ) -> Run {
        let (bus, service) = service(name).await;
        let form = match ids {
            Ids::Sequenced => "",
            Ids::Fingerprint => "&ids=0",
        };
        let req = ConnectRequest {
            url: feed.url(&format!("/ws?rate={RATE}{form}{query}")),
            auto_reconnect: true,
            venue: options(ids, venue),
            ..ConnectRequest::default()
        };
        let (id, frames, lifecycle) = open_publishing(&service, &bus, req, TOPIC).await;
        let run = Run {
            id,
            service,
            feed,
            frames: Arc::default(),
            events: Arc::default(),
        };
        collect_frames(frames, Arc::clone(&run.frames));
        collect_events(lifecycle, Arc::clone(&run.events));
        run
    }

    pub fn frames(&self) -> Vec<Seen> {
        self.frames.lock().unwrap().clone()
    }

    /// The lifecycle events so far: (kind, reason).
    pub fn events(&self) -> Vec<(String, String)> {
        self.events.lock().unwrap().clone()
    }

    pub fn count(&self, kind: &str) -> usize {
        self.events().iter().filter(|(k, _)| k == kind).count()
    }

    /// Waits (bounded) until `n` events of `kind` were seen.
    pub async fn wait_for(&self, kind: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + HANG;
        while self.count(kind) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} {kind} events: {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `n` more frames were published.
    pub async fn frames_after(&self, n: usize) {
        let start = self.frames.lock().unwrap().len();
        let deadline = tokio::time::Instant::now() + HANG;
        while self.frames.lock().unwrap().len() < start + n {
            assert!(tokio::time::Instant::now() < deadline, "no frames");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Disconnects, and waits until publishing has settled.
    pub async fn stop(&self) -> Vec<Seen> {
        self.service
            .disconnect(&self.id)
            .await
            .expect("disconnects");
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.frames.lock().unwrap().len();
            if now == last {
                return self.frames();
            }
            last = now;
        }
    }
}

fn collect_frames(mut rx: Subscription, into: Arc<Mutex<Vec<Seen>>>) {
    tokio::spawn(async move {
        while let Ok(bytes) = rx.recv().await {
            let Ok(event) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let text = event["data"].as_str().unwrap_or_default();
            into.lock().unwrap().push(Seen {
                id: feed_server::broadcast::frame_id(text),
                seq: event["seq"].as_u64().unwrap_or(0),
                epoch: event["epoch"].as_u64().unwrap_or(0),
            });
        }
    });
}

fn collect_events(mut rx: Subscription, into: Arc<Mutex<Vec<(String, String)>>>) {
    tokio::spawn(async move {
        while let Ok(bytes) = rx.recv().await {
            let Ok(event) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let kind = event["type"].as_str().unwrap_or_default();
            let reason = event["data"]["reason"].as_str().unwrap_or_default();
            into.lock().unwrap().push((
                kind.trim_start_matches(LIFECYCLE_TYPE).to_owned(),
                reason.to_owned(),
            ));
        }
    });
}

/// What a run's venue ids show.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub ids: usize,
    pub missing: Vec<u64>,
    pub duplicates: usize,
    pub reordered: usize,
}

pub fn count(frames: &[Seen]) -> Count {
    let ids: Vec<u64> = frames.iter().filter_map(|f| f.id).collect();
    let mut c = Count {
        ids: ids.len(),
        ..Count::default()
    };
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    c.duplicates = sorted.len() - {
        let mut d = sorted.clone();
        d.dedup();
        d.len()
    };
    c.reordered = ids.windows(2).filter(|w| w[1] < w[0]).count();
    sorted.dedup();
    for w in sorted.windows(2) {
        c.missing.extend(w[0] + 1..w[1]);
    }
    c
}

/// Every venue id once and in order, `seq` gap-free, one epoch.
pub fn assert_continuous(frames: &[Seen], at_least: usize, what: &str) {
    let c = count(frames);
    assert!(c.ids >= at_least, "{what}: only {} venue ids", c.ids);
    assert_eq!(
        (c.missing.len(), c.duplicates, c.reordered),
        (0, 0, 0),
        "{what}: missing {:?}",
        &c.missing[..c.missing.len().min(20)]
    );
    for w in frames.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "{what}: seq must be gap-free");
    }
    let epochs: std::collections::BTreeSet<u64> = frames.iter().map(|f| f.epoch).collect();
    assert_eq!(
        epochs.len(),
        1,
        "{what}: one epoch throughout, got {epochs:?}"
    );
}
