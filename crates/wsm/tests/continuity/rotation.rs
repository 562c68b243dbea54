//! Planned changes of socket, make-before-break: each must lose nothing and keep the epoch, on a
//! sequenced feed and on an id-less one, 5 runs each.

use std::time::Duration;

use wsm::venue::VenueOptions;

use super::{assert_continuous, notice, venue, Ids, Run};

const RUNS: usize = 5;

/// `max_lifetime_ms` of 1 s: a run of 2.5 s rotates at least twice.
async fn lifetime(ids: Ids) {
    for run in 0..RUNS {
        let venue_options = VenueOptions {
            max_lifetime_ms: Some(1000),
            ..VenueOptions::default()
        };
        let r = Run::start("wsm-lifetime", venue().await, ids, "", venue_options).await;
        r.wait_for("rotated", 2).await;
        r.frames_after(100).await;
        let frames = r.stop().await;
        assert_continuous(&frames, 1000, &format!("lifetime {ids:?} run {run}"));
        for (kind, reason) in r.events() {
            if kind == "rotated" {
                assert!(reason.contains("overlap proven"), "{reason}");
            }
            assert_ne!(kind, "gap", "{reason}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_rotations_lose_nothing_sequenced() {
    lifetime(Ids::Sequenced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_rotations_lose_nothing_by_fingerprint() {
    lifetime(Ids::Fingerprint).await;
}

/// The venue's `serverShutdown` 1 s before it would close each socket (lifetime 1.5 s).
async fn notices(ids: Ids) {
    for run in 0..RUNS {
        let venue_options = VenueOptions {
            notice: Some(notice()),
            ..VenueOptions::default()
        };
        let query = "&lifetime_ms=1500&notice_ms=1000&close_code=1001";
        let r = Run::start("wsm-notice", venue().await, ids, query, venue_options).await;
        r.wait_for("rotated", 2).await;
        r.frames_after(100).await;
        let frames = r.stop().await;
        assert_continuous(&frames, 500, &format!("notice {ids:?} run {run}"));
        assert_eq!(
            r.feed.stats().lifetime_closes,
            0,
            "every old socket was closed by wsm before the venue's close"
        );
        assert_eq!(r.count("gap"), 0, "{:?}", r.events());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venue_notices_lose_nothing_sequenced() {
    notices(Ids::Sequenced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venue_notices_lose_nothing_by_fingerprint() {
    notices(Ids::Fingerprint).await;
}

/// An operator's Rotate, three times a run.
async fn operator(ids: Ids) {
    for run in 0..RUNS {
        let r = Run::start(
            "wsm-rotate",
            venue().await,
            ids,
            "",
            VenueOptions::default(),
        )
        .await;
        for _ in 0..3 {
            r.frames_after(200).await;
            let rotated = r.service.rotate(&r.id).await.expect("rotates");
            assert!(rotated.overlap, "{rotated:?}");
            assert!(rotated.duplicates > 0, "{rotated:?}");
            assert!(rotated.took < Duration::from_secs(5), "{rotated:?}");
        }
        r.frames_after(100).await;
        let frames = r.stop().await;
        assert_continuous(&frames, 600, &format!("Rotate {ids:?} run {run}"));
        assert_eq!(r.count("rotated"), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_loses_nothing_sequenced() {
    operator(Ids::Sequenced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_loses_nothing_by_fingerprint() {
    operator(Ids::Fingerprint).await;
}

/// Binance as it is: the shipped profile (5 messages/s, 300 ms apart), 10 subscriptions that a new
/// leg replays at that pace (about 3 s), and a `serverShutdown` notice on every socket 1 s after
/// it opened. The old leg closes only once the new one is fully subscribed and seen to overlap,
/// long before the venue's own close; every symbol's ids go on without a gap or a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_replay_of_ten_subscriptions_is_in_effect_before_the_old_leg_closes() {
    use std::collections::BTreeMap;
    use wsm::model::OutboundMessage;

    let feed = feed_server::FeedServer::start(feed_server::FeedConfig {
        rate: 100,
        broadcast: true,
        auto_stream: false,
        ..feed_server::FeedConfig::default()
    })
    .await
    .expect("feed starts");
    let (bus, service) = super::service("wsm-binance").await;
    let subscriptions: Vec<OutboundMessage> = (0..10)
        .map(|i| OutboundMessage {
            payload: format!(r#"{{"method":"SUBSCRIBE","params":["sym{i}usdt@depth"],"id":{i}}}"#)
                .into(),
            content_type: "application/json".into(),
        })
        .collect();
    let req = wsm::ConnectRequest {
        url: feed.url("/ws?venue=binance&lifetime_ms=8000&notice_ms=7000&close_code=1001"),
        auto_reconnect: true,
        profile: Some("binance-spot".into()),
        on_connect: subscriptions,
        ..wsm::ConnectRequest::default()
    };
    let (id, mut frames, mut lifecycle) =
        super::support::events::open_publishing(&service, &bus, req, super::TOPIC).await;
    // Read as they come, so the bus never waits for this test.
    let texts = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let into = std::sync::Arc::clone(&texts);
    tokio::spawn(async move {
        while let Ok(bytes) = frames.recv().await {
            let event: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let text = event["data"].as_str().unwrap_or_default().to_owned();
            into.lock().unwrap().push(text);
        }
    });
    let rotating = super::support::events::next_kind(&mut lifecycle, "rotating").await;
    assert!(rotating.contains("serverShutdown"), "{rotating}");
    let started = tokio::time::Instant::now();
    let rotated = super::support::events::next_kind(&mut lifecycle, "rotated").await;
    assert!(rotated.contains("overlap proven"), "{rotated}");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "the old leg closed before the new one's paced replay was through: {:?}",
        started.elapsed()
    );
    let sessions = feed.subscriptions();
    assert!(
        sessions.values().any(|subs| subs.len() == 10),
        "the new leg has all 10 in effect: {sessions:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    service.disconnect(&id).await.unwrap();
    let stats = feed.stats();
    assert_eq!(stats.venue_closes.rate_limit, 0, "never closed with 1008");
    assert_eq!(
        stats.venue_closes.lifetime, 0,
        "the venue never had to close a leg"
    );
    // Every symbol's ids, once and in order.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut by_symbol: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for text in texts.lock().unwrap().iter() {
        let frame: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        if let (Some(s), Some(u)) = (frame["s"].as_str(), frame["u"].as_u64()) {
            by_symbol.entry(s.to_owned()).or_default().push(u);
        }
    }
    assert_eq!(by_symbol.len(), 10, "{:?}", by_symbol.keys());
    for (symbol, ids) in by_symbol {
        assert!(ids.len() > 100, "{symbol}: {}", ids.len());
        for w in ids.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{symbol}: a gap or a repeat");
        }
    }
}

/// Once a rotation's new leg is surely past the old one's frames, the arbiter forgets them: a
/// connection that rotates daily does not keep its last window for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_the_arbiter_gives_its_memory_back() {
    let r = Run::start(
        "wsm-forget",
        venue().await,
        Ids::Sequenced,
        "",
        VenueOptions::default(),
    )
    .await;
    r.frames_after(200).await;
    let rotated = r.service.rotate(&r.id).await.expect("rotates");
    assert!(rotated.overlap, "{rotated:?}");
    r.frames_after(200).await;
    assert!(
        r.service.snapshot().arbiter_bytes > 0,
        "the new leg is still arbitrated right after the rotation"
    );
    let deadline = tokio::time::Instant::now() + super::HANG;
    while r.service.snapshot().arbiter_bytes > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the memory is kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let frames = r.stop().await;
    assert_continuous(&frames, 500, "a rotation, then the tail");
}
