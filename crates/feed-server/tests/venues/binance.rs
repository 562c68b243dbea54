//! binance: 5 client messages per second, the lifetime and its notice.

use crate::common::*;

#[tokio::test]
async fn binance_closes_a_burst_of_six_messages_with_1008() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/ws?venue=binance&rate=20")).await;
    // Every kind counts: text, binary, WebSocket Ping and Pong.
    let burst = |n| match n {
        0 => vec![
            Message::text(r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#),
            Message::Ping("a".into()),
            Message::Pong("b".into()),
            Message::binary(vec![7u8; 20]),
            Message::text(r#"{"id":"x","payload":1}"#),
            Message::Ping("c".into()),
        ],
        _ => Vec::new(),
    };
    let seen = drive(
        &mut client,
        CLOSE_BOUND,
        Some(Duration::from_secs(60)),
        false,
        burst,
        no_answer,
    )
    .await;
    seen.assert_closed(1008, "too many requests", Duration::ZERO);
    assert!(feed.wait_for_connections(0, LONG).await);
    let stats = feed.stats();
    assert_eq!(stats.venue_closes.rate_limit, 1);
    assert_eq!(stats.max_client_msgs_per_sec, 6);
}

#[tokio::test]
async fn binance_keeps_a_client_at_four_messages_a_second_and_one_bursting_five() {
    let feed = start(FeedConfig::default()).await;
    let mut steady = open(&feed.url("/ws?venue=binance&rate=20")).await;
    let mut five = open(&feed.url("/ws?venue=binance&rate=20")).await;
    let every_250_ms = |n| {
        vec![if n % 2 == 0 {
            Message::Ping(Vec::new().into())
        } else {
            Message::text(r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#)
        }]
    };
    let burst_of_five = |n| match n {
        0 => (0..5).map(|_| Message::Ping(Vec::new().into())).collect(),
        _ => Vec::new(),
    };
    let (steady_seen, five_seen) = tokio::join!(
        drive(
            &mut steady,
            Duration::from_millis(3000),
            Some(Duration::from_millis(250)),
            false,
            every_250_ms,
            no_answer
        ),
        drive(
            &mut five,
            Duration::from_millis(1000),
            Some(Duration::from_secs(60)),
            false,
            burst_of_five,
            no_answer
        ),
    );
    steady_seen.assert_open();
    assert!(steady_seen.assert_frames_in_sequence() >= 40);
    assert!(
        steady_seen.others().len() >= 5,
        "SUBSCRIBE-style calls are still answered"
    );
    five_seen.assert_open();
    five_seen.assert_frames_in_sequence();
    let stats = feed.stats();
    assert_eq!(stats.venue_closes.rate_limit, 0);
    assert_eq!(stats.max_client_msgs_per_sec, 5, "{stats:?}");
    assert!(stats.sessions.iter().all(|s| s.venue == Some("binance")));
}

#[tokio::test]
async fn binance_lifetime_sends_its_notice_before_closing_with_the_code() {
    let feed = start(FeedConfig::default()).await;
    let mut client =
        open(&feed.url("/ws?venue=binance&lifetime_ms=700&notice_ms=300&close_code=1012&rate=20"))
            .await;
    let seen = drive(&mut client, CLOSE_BOUND, None, false, none, no_answer).await;
    let closed_at = seen.assert_closed(
        1012,
        "connection lifetime reached",
        Duration::from_millis(690),
    );
    let notices: Vec<_> = seen
        .texts
        .iter()
        .filter(|(_, t)| t.contains("serverShutdown"))
        .collect();
    assert_eq!(notices.len(), 1, "{:?}", seen.others());
    let (noticed_at, notice) = notices[0];
    let event = &json(notice)["event"];
    assert_eq!(event["e"], "serverShutdown");
    assert!(
        event["E"].as_u64().is_some_and(|ms| ms > 1_600_000_000_000),
        "{notice}"
    );
    assert!(
        *noticed_at >= Duration::from_millis(390),
        "notice at {noticed_at:?}"
    );
    assert!(
        *noticed_at < closed_at,
        "notice {noticed_at:?}, close {closed_at:?}"
    );
    seen.assert_frames_in_sequence();
    assert!(feed.wait_for_connections(0, LONG).await);
    let stats = feed.stats();
    assert_eq!(
        (stats.venue_closes.lifetime, stats.venue_notices_sent),
        (1, 1)
    );
}
