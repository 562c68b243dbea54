//! htx: gzip frames, server pings, closed after two unanswered.

use crate::common::*;

#[tokio::test]
async fn htx_sends_gzip_frames_and_pings_and_keeps_a_client_that_pongs() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/ws?venue=htx&ping_every_ms=200&rate=50")).await;
    send_text(&mut client.ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#).await;
    // Pongs alternate between text and gzip binary; both count.
    let pong = |text: &str, n: u64| {
        let value = json(text).get("ping")?.as_u64()?;
        let pong = format!(r#"{{"pong":{value}}}"#);
        Some(if n % 2 == 0 {
            Message::text(pong)
        } else {
            Message::binary(gzip(&pong))
        })
    };
    let seen = drive(
        &mut client,
        Duration::from_millis(1500),
        None,
        true,
        none,
        pong,
    )
    .await;
    seen.assert_open();
    assert_eq!(seen.raw_texts, 0, "htx sent a text frame");
    assert!(seen.assert_frames_in_sequence() >= 20);
    let others = seen.others();
    assert_eq!(
        others[0], r#"{"result":[],"id":2}"#,
        "the reply is gzip too"
    );
    let pings: Vec<u64> = others[1..]
        .iter()
        .map(|t| {
            json(t)["ping"]
                .as_u64()
                .unwrap_or_else(|| panic!("not a ping: {t}"))
        })
        .collect();
    assert!(pings.len() >= 5, "{pings:?}");
    assert!(pings.windows(2).all(|w| w[0] < w[1]), "{pings:?}");

    let stats = feed.stats();
    assert_eq!(stats.venue_closes.pings_unanswered, 0);
    assert!(
        stats.venue_pings_sent >= 5 && stats.venue_pongs_received >= 5,
        "{stats:?}"
    );
    assert!(feed.received().iter().filter(|r| r.keepalive).count() >= 5);
}

#[tokio::test]
async fn htx_frames_at_max_rate_are_gzip_and_gap_free() {
    let feed = start(FeedConfig::default()).await;
    // Frames of 2000 bytes fill a batch with 65: 200 of them take several turns of the session.
    let n = 200;
    let mut client =
        connect(&feed.url(&format!("/stream?venue=htx&rate=0&size=2000&count={n}"))).await;
    for expected in 1..=n {
        let frame = match next(&mut client).await {
            Message::Binary(data) => gunzip(&data),
            other => panic!("expected a gzip binary frame, got {other:?}"),
        };
        assert_eq!(frame.len(), 2000, "{frame}");
        assert_eq!(seq(&frame), expected);
    }
    assert_eq!(feed.stats().frames_sent_total, n);
}

#[tokio::test]
async fn htx_closes_after_two_unanswered_pings_with_4002() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/ws?venue=htx&ping_every_ms=200&rate=20")).await;
    // A pong with the wrong number is no answer.
    let wrong = |text: &str, _| {
        let value = json(text).get("ping")?.as_u64()?;
        Some(Message::text(format!(r#"{{"pong":{}}}"#, value + 1)))
    };
    let seen = drive(&mut client, CLOSE_BOUND, None, true, none, wrong).await;
    // Pings at 200 and 400 ms go unanswered; the close comes when the third is due.
    seen.assert_closed(4002, "2 pings unanswered", Duration::from_millis(550));
    let pings = seen
        .others()
        .iter()
        .filter(|t| t.contains("\"ping\""))
        .count();
    assert_eq!(pings, 2, "{:?}", seen.others());
    seen.assert_frames_in_sequence();
    assert!(feed.wait_for_connections(0, LONG).await);
    let stats = feed.stats();
    assert_eq!(
        (stats.venue_closes.pings_unanswered, stats.venue_pings_sent),
        (1, 2)
    );
    assert_eq!(stats.venue_pongs_received, 2);
}
