//! okx and bybit: the client keepalive each wants, within its deadline.

use crate::common::*;

#[tokio::test]
async fn okx_closes_a_client_that_does_not_ping_with_4004() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/ws?venue=okx&deadline_ms=300&rate=20")).await;
    // Other messages do not count as keepalives, and are still answered.
    let list = |_| vec![Message::text(r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#)];
    let seen = drive(
        &mut client,
        CLOSE_BOUND,
        Some(Duration::from_millis(100)),
        false,
        list,
        no_answer,
    )
    .await;
    seen.assert_closed(4004, "no ping within 300 ms", Duration::from_millis(290));
    seen.assert_frames_in_sequence();
    assert!(
        seen.others().contains(&r#"{"result":[],"id":1}"#),
        "{seen:?}"
    );
    assert!(feed.wait_for_connections(0, LONG).await);
    assert_eq!(feed.stats().venue_closes.no_ping, 1);
}

#[tokio::test]
async fn okx_keeps_a_client_that_pings_and_answers_each_ping_with_pong() {
    let feed = start(FeedConfig::default()).await;
    // Pings every 100 ms against a 500 ms deadline, for 1.6 s: more than 3 deadlines.
    let mut client = open(&feed.url("/ws?venue=okx&deadline_ms=500&rate=20")).await;
    send_text(
        &mut client.ws,
        r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":7}"#,
    )
    .await;
    let ping = |_| vec![Message::text("ping")];
    let seen = drive(
        &mut client,
        Duration::from_millis(1600),
        Some(Duration::from_millis(100)),
        false,
        ping,
        no_answer,
    )
    .await;
    seen.assert_open();
    assert!(seen.assert_frames_in_sequence() >= 10);
    let others = seen.others();
    assert_eq!(others[0], r#"{"result":null,"id":7}"#);
    let pongs = others.iter().filter(|t| **t == "pong").count();
    assert!(pongs >= 8, "{pongs} pongs: {others:?}");
    assert_eq!(
        others.len(),
        pongs + 1,
        "a ping got another answer: {others:?}"
    );

    let stats = feed.stats();
    assert_eq!(stats.venue_closes.no_ping, 0);
    assert!(stats.venue_pings_answered >= 8, "{stats:?}");
    assert_eq!(stats.sessions[0].venue, Some("okx"));
    // Pings are recorded with their receive times, marked as keepalives, not as requests.
    assert_eq!(feed.subscriptions()[&1], ["ethusdt@depth"]);
    let pings: Vec<_> = feed
        .received()
        .into_iter()
        .filter(|r| r.keepalive)
        .collect();
    assert!(pings.len() >= 8);
    assert!(pings.iter().all(|r| r.message.as_text() == Some("ping")));
    for pair in pings.windows(2) {
        let gap = pair[1].received_at - pair[0].received_at;
        assert!(gap < Duration::from_millis(500), "pings {gap:?} apart");
        assert!(pair[1].unix_ms >= pair[0].unix_ms);
    }
}

#[tokio::test]
async fn bybit_closes_a_client_that_does_not_ping_with_4004() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/stream?venue=bybit&deadline_ms=250&rate=20")).await;
    // okx's keepalive is not bybit's.
    let wrong = |_| vec![Message::text("ping")];
    let seen = drive(
        &mut client,
        CLOSE_BOUND,
        Some(Duration::from_millis(100)),
        false,
        wrong,
        no_answer,
    )
    .await;
    seen.assert_closed(4004, "no ping within 250 ms", Duration::from_millis(240));
    seen.assert_frames_in_sequence();
    assert!(feed.wait_for_connections(0, LONG).await);
    let stats = feed.stats();
    assert_eq!(
        (stats.venue_closes.no_ping, stats.venue_pings_answered),
        (1, 0)
    );
}

#[tokio::test]
async fn bybit_keeps_a_client_that_sends_op_ping_and_echoes_its_req_id() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/stream?venue=bybit&deadline_ms=500&rate=20")).await;
    let ping = |n| {
        vec![Message::text(if n % 2 == 0 {
            format!(r#"{{"req_id":"r{n}","op":"ping"}}"#)
        } else {
            r#"{"op":"ping"}"#.to_owned()
        })]
    };
    let seen = drive(
        &mut client,
        Duration::from_millis(1600),
        Some(Duration::from_millis(100)),
        false,
        ping,
        no_answer,
    )
    .await;
    seen.assert_open();
    assert!(seen.assert_frames_in_sequence() >= 10);
    let others = seen.others();
    assert!(others.len() >= 8, "{others:?}");
    for (n, pong) in others.iter().enumerate() {
        let expected = if n % 2 == 0 {
            format!(r#"{{"op":"pong","success":true,"ret_msg":"pong","req_id":"r{n}"}}"#)
        } else {
            r#"{"op":"pong","success":true,"ret_msg":"pong"}"#.to_owned()
        };
        assert_eq!(*pong, expected);
    }
    assert!(feed.stats().venue_pings_answered >= 8);
}
