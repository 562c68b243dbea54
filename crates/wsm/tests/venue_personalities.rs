//! The shipped profiles against the feed server's venue personalities (SPEC 9, "The test venue,
//! again"), both sides of each rule: without the profile the venue closes the connection (so the
//! rule is really enforced), with it the connection stays up for at least 3 × the venue's deadline
//! and what wsm publishes is gap-free in the venue's ids. Deadlines are scaled down through the
//! feed's URL query and the profile's timings with them; what a rule sends and matches is the
//! shipped profile's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use feed_server::{FeedConfig, FeedHandle, FeedServer};
use serde_json::Value;
use wsm::backends::memory::{MemoryBus, MemoryStateStore, Subscription};
use wsm::connection::BackoffPolicy;
use wsm::security::NetworkPolicy;
use wsm::venue::{Profiles, VenueOptions};
use wsm::{ConnectRequest, ServiceConfig, WebSocketService};

mod support;
use support::events::{kinds_so_far, next_kind, open_publishing};

const TOPIC: &str = "venue.frames";

struct Env {
    feed: FeedHandle,
    bus: MemoryBus,
    service: WebSocketService,
}

async fn env() -> Env {
    let feed = FeedServer::start(FeedConfig {
        rate: 50,
        ..FeedConfig::default()
    })
    .await
    .expect("feed starts");
    let mut config = ServiceConfig {
        instance_id: "wsm-venues-1".into(),
        ..ServiceConfig::default()
    };
    config.connection.network = NetworkPolicy::allow_private();
    config.connection.backoff = BackoffPolicy {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(300),
        max_attempts: 100,
        jitter: 0.1,
    };
    let bus = MemoryBus::new();
    let service = WebSocketService::start(
        config,
        Arc::new(MemoryStateStore::new()),
        Arc::new(bus.clone()),
    )
    .await
    .expect("service starts");
    Env { feed, bus, service }
}

/// The shipped profile's options with `scale` applied (the timings of a scaled-down venue).
fn shipped(name: &str, scale: impl FnOnce(&mut VenueOptions)) -> VenueOptions {
    let mut options = Profiles::shipped()
        .get(name)
        .expect("a shipped profile")
        .options
        .clone();
    scale(&mut options);
    options
}

impl Env {
    async fn open(
        &self,
        query: &str,
        profile: Option<&str>,
        venue: VenueOptions,
        on_connect: Vec<wsm::model::OutboundMessage>,
    ) -> (String, Subscription, Subscription) {
        let req = ConnectRequest {
            url: self.feed.url(&format!("/ws?{query}")),
            auto_reconnect: true,
            profile: profile.map(str::to_owned),
            venue,
            on_connect,
            ..ConnectRequest::default()
        };
        open_publishing(&self.service, &self.bus, req, TOPIC).await
    }
}

/// The venue ids (`u`) of the depth updates published so far; each frame must be readable JSON.
fn venue_ids(rx: &mut Subscription) -> Vec<u64> {
    let mut ids = Vec::new();
    while let Ok(bytes) = rx.try_recv() {
        let event: Value = serde_json::from_slice(&bytes).unwrap();
        let text = event["data"].as_str().expect("published as text");
        let frame: Value = serde_json::from_str(text).expect("readable JSON");
        if frame["e"] == "depthUpdate" {
            ids.push(frame["u"].as_u64().expect("u is a number"));
        }
    }
    ids
}

fn assert_gap_free(ids: &[u64], at_least: usize) {
    assert!(ids.len() >= at_least, "only {} frames", ids.len());
    for pair in ids.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a gap or a repeat in the venue's ids");
    }
}

/// Whether the feed's one session has all 50 subscriptions in effect (waiting up to 40 s).
async fn all_subscribed(feed: &FeedHandle) -> bool {
    let all_in = || {
        feed.subscriptions()
            .values()
            .next()
            .is_some_and(|subs| subs.len() == 50)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !all_in() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    all_in()
}

/// Without the profile: closed by the venue with `close` in the reason of the reconnect.
async fn closed_without_profile(query: &str, close: &str) {
    let e = env().await;
    let (id, _frames, mut lifecycle) = e.open(query, None, VenueOptions::default(), vec![]).await;
    let reason = next_kind(&mut lifecycle, "reconnecting").await;
    assert!(reason.contains(close), "{query}: {reason}");
    e.service.disconnect(&id).await.unwrap();
}

/// With the profile: up for `hold` on one socket, every frame published, in order.
async fn kept_with_profile(query: &str, profile: &str, venue: VenueOptions, hold: Duration) {
    let e = env().await;
    let (id, mut frames, mut lifecycle) = e.open(query, Some(profile), venue, vec![]).await;
    tokio::time::sleep(hold).await;
    let kinds = kinds_so_far(&mut lifecycle);
    assert_eq!(
        kinds,
        ["connecting", "connected"],
        "{profile}: never dropped"
    );
    assert_eq!(
        e.feed.accepted_total(),
        1,
        "{profile}: one socket throughout"
    );
    // 50 frames/s for `hold`.
    let expected = (hold.as_millis() / 20) as usize / 2;
    assert_gap_free(&venue_ids(&mut frames), expected);
    e.service.disconnect(&id).await.unwrap();
}

#[tokio::test]
async fn okx_closes_without_a_text_ping_and_keeps_the_okx_profile() {
    closed_without_profile("venue=okx&deadline_ms=400", "4004").await;
    let venue = shipped("okx", |o| {
        let k = o.keepalive.as_mut().unwrap();
        k.interval_ms = 150;
        k.timeout_ms = Some(300);
        // Frames arrive all the time here; the venue wants pings regardless.
        k.idle_only = false;
    });
    kept_with_profile(
        "venue=okx&deadline_ms=400",
        "okx",
        venue,
        Duration::from_millis(1300),
    )
    .await;
}

#[tokio::test]
async fn bybit_closes_without_op_ping_and_keeps_the_bybit_profile() {
    closed_without_profile("venue=bybit&deadline_ms=400", "4004").await;
    let venue = shipped("bybit", |o| {
        let k = o.keepalive.as_mut().unwrap();
        k.interval_ms = 150;
        k.timeout_ms = Some(300);
    });
    kept_with_profile(
        "venue=bybit&deadline_ms=400",
        "bybit",
        venue,
        Duration::from_millis(1300),
    )
    .await;
}

#[tokio::test]
async fn htx_closes_after_two_unanswered_pings_and_the_htx_profile_publishes_readable_json() {
    closed_without_profile("venue=htx&ping_every_ms=150", "4002").await;
    // The shipped htx profile as it is: its pings are answered whenever they come.
    kept_with_profile(
        "venue=htx&ping_every_ms=150",
        "htx",
        VenueOptions::default(),
        Duration::from_millis(1500),
    )
    .await;
}

#[tokio::test]
async fn binance_closes_a_burst_with_1008_and_the_profile_replays_50_subscriptions_paced() {
    let subscriptions: Vec<wsm::model::OutboundMessage> = (0..50)
        .map(|i| wsm::model::OutboundMessage {
            payload: Bytes::from(format!(
                r#"{{"method":"SUBSCRIBE","params":["sym{i}usdt@depth"],"id":{i}}}"#
            )),
            content_type: "application/json".into(),
        })
        .collect();
    // Without pacing, the 50 on_connect messages go out back to back.
    let e = env().await;
    let (id, _f, mut lifecycle) = e
        .open(
            "venue=binance",
            None,
            VenueOptions::default(),
            subscriptions.clone(),
        )
        .await;
    let reason = next_kind(&mut lifecycle, "reconnecting").await;
    assert!(reason.contains("1008"), "{reason}");
    e.service.disconnect(&id).await.unwrap();

    // With the profile: 50 at 300 ms apart, after the first connect and again after a reconnect.
    let e = env().await;
    let (id, _f, mut lifecycle) = e
        .open(
            "venue=binance",
            Some("binance-spot"),
            VenueOptions::default(),
            subscriptions,
        )
        .await;
    assert!(
        all_subscribed(&e.feed).await,
        "{:?}",
        e.feed.subscriptions()
    );
    e.feed.drop_all().await;
    next_kind(&mut lifecycle, "reconnecting").await;
    next_kind(&mut lifecycle, "connected").await;
    assert!(
        all_subscribed(&e.feed).await,
        "the replay: {:?}",
        e.feed.subscriptions()
    );
    let stats = e.feed.stats();
    assert_eq!(stats.venue_closes.rate_limit, 0, "never closed with 1008");
    assert!(
        stats.max_client_msgs_per_sec <= 5,
        "{}",
        stats.max_client_msgs_per_sec
    );
    let kinds = kinds_so_far(&mut lifecycle);
    assert!(!kinds.contains(&"reconnecting".to_owned()), "{kinds:?}");
    e.service.disconnect(&id).await.unwrap();
}

#[tokio::test]
async fn binance_lifetime_without_the_profile_is_a_drop_and_with_it_a_rotation_on_the_notice() {
    let query = "venue=binance&lifetime_ms=1200&notice_ms=600&close_code=1001";
    closed_without_profile(query, "1001").await;

    // Like Binance, every socket gets the same globally numbered stream.
    let query = format!("{query}&broadcast=1&rate=200");
    let e = env().await;
    let (id, mut frames, mut lifecycle) = e
        .open(
            &query,
            Some("binance-spot"),
            VenueOptions::default(),
            vec![],
        )
        .await;
    let reason = next_kind(&mut lifecycle, "rotating").await;
    assert!(reason.contains("serverShutdown"), "{reason}");
    let rotated = next_kind(&mut lifecycle, "rotated").await;
    assert!(rotated.contains("overlap proven"), "{rotated}");
    // Rotated make-before-break on the notice, before the venue's close: no reconnect.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kinds = kinds_so_far(&mut lifecycle);
    assert!(!kinds.contains(&"reconnecting".to_owned()), "{kinds:?}");
    assert_eq!(
        e.feed.stats().venue_closes.lifetime,
        0,
        "the venue never had to close it"
    );
    let ids = venue_ids(&mut frames);
    assert!(!ids.is_empty());
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "every venue id once, in order, across the rotation: {ids:?}"
    );
    e.service.disconnect(&id).await.unwrap();
}
