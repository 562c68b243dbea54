//! Client requests: SUBSCRIBE/UNSUBSCRIBE answers and tracking, the text and binary correlation
//! echo, withheld replies, echo delay, and the record of received messages.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use feed_server::{FeedConfig, ReceivedMessage};
use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn subscribe_and_unsubscribe_are_answered_with_their_id_and_tracked() {
    let feed = start(FeedConfig::default()).await;
    let mut client = connect(&feed.url("/stream?rate=20")).await;
    send_text(
        &mut client,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@depth","ethusdt@depth"],"id":41}"#,
    )
    .await;
    assert_eq!(next_reply(&mut client).await, r#"{"result":null,"id":41}"#);
    assert_eq!(
        feed.subscriptions(),
        BTreeMap::from([(
            1,
            vec!["btcusdt@depth".to_owned(), "ethusdt@depth".to_owned()]
        )])
    );

    send_text(
        &mut client,
        r#"{"method":"UNSUBSCRIBE","params":["btcusdt@depth"],"id":"42"}"#,
    )
    .await;
    assert_eq!(
        next_reply(&mut client).await,
        r#"{"result":null,"id":"42"}"#
    );
    assert_eq!(
        feed.subscriptions(),
        BTreeMap::from([(1, vec!["ethusdt@depth".to_owned()])])
    );

    send_text(&mut client, r#"{"method":"LIST_SUBSCRIPTIONS","id":43}"#).await;
    assert_eq!(
        next_reply(&mut client).await,
        r#"{"result":["ethusdt@depth"],"id":43}"#
    );
    assert_eq!(feed.stats().sessions[0].subscriptions, ["ethusdt@depth"]);
}

#[tokio::test]
async fn text_envelope_is_echoed_with_its_id_and_payload() {
    let feed = start_quiet().await;
    let mut client = connect(&feed.url("/ws")).await;
    let request =
        r#"{"id":"6f1c0b4e-8d4e-4c55-9a2b-0c1d2e3f4a5b","payload":{"op":"ping","n":[1,2]}}"#;
    send_text(&mut client, request).await;
    assert_eq!(next_text(&mut client).await, request);

    // Field order and spacing of the request do not matter; the payload text is kept as sent.
    send_text(&mut client, r#"{ "payload" : "hi", "id" : "b" }"#).await;
    assert_eq!(next_text(&mut client).await, r#"{"id":"b","payload":"hi"}"#);
}

#[tokio::test]
async fn binary_message_is_echoed_with_its_uuid_prefix() {
    let feed = start_quiet().await;
    let mut client = connect(&feed.url("/ws")).await;
    let mut request: Vec<u8> = (0u8..16).collect();
    request.extend_from_slice(b"\x00\x01binary payload\xff");
    client
        .send(Message::binary(request.clone()))
        .await
        .expect("send");
    match next(&mut client).await {
        Message::Binary(reply) => assert_eq!(reply.as_ref(), request.as_slice()),
        other => panic!("expected binary, got {other:?}"),
    }
}

#[tokio::test]
async fn no_reply_requests_are_recorded_but_not_answered() {
    let feed = start_quiet().await;
    let mut client = connect(&feed.url("/ws")).await;
    send_text(&mut client, r#"{"id":"quiet","payload":"no-reply"}"#).await;
    let mut binary = vec![9u8; 16];
    binary.extend_from_slice(b"no-reply");
    client.send(Message::binary(binary)).await.expect("send");
    send_text(&mut client, r#"{"id":"loud","payload":1}"#).await;
    // Replies keep request order, so the first reply proves the first two got none.
    assert_eq!(next_text(&mut client).await, r#"{"id":"loud","payload":1}"#);
    assert!(silent_for(&mut client, Duration::from_millis(200)).await);
    assert_eq!(feed.received_on(1).len(), 3);
}

#[tokio::test]
async fn echo_off_answers_no_correlated_request() {
    let feed = start(FeedConfig {
        echo: false,
        auto_stream: false,
        ..FeedConfig::default()
    })
    .await;
    let mut client = connect(&feed.url("/ws")).await;
    send_text(&mut client, r#"{"id":"x","payload":1}"#).await;
    client
        .send(Message::binary(vec![1u8; 20]))
        .await
        .expect("send");
    send_text(&mut client, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    assert_eq!(next_text(&mut client).await, r#"{"result":[],"id":1}"#);
    assert!(silent_for(&mut client, Duration::from_millis(200)).await);
}

#[tokio::test]
async fn echo_delay_holds_each_reply_back() {
    let feed = start_quiet().await;
    let mut client = connect(&feed.url("/ws?echo_delay_ms=300")).await;
    let started = Instant::now();
    send_text(&mut client, r#"{"id":"a","payload":1}"#).await;
    send_text(&mut client, r#"{"id":"b","payload":2}"#).await;
    assert_eq!(next_text(&mut client).await, r#"{"id":"a","payload":1}"#);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(next_text(&mut client).await, r#"{"id":"b","payload":2}"#);
}

#[tokio::test]
async fn received_records_every_message_in_order_per_connection() {
    let feed = start_quiet().await;
    let mut first = connect(&feed.url("/ws")).await;
    let mut second = connect(&feed.url("/ws")).await;
    send_text(&mut first, "one").await;
    send_text(&mut second, "uno").await;
    first
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    send_text(&mut first, "three").await;
    send_text(&mut second, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    next_text(&mut second).await; // its reply: everything before it was recorded
    assert!(
        feed.wait_for_received(LONG, |r| r.message.as_text() == Some("three"))
            .await
    );

    assert_eq!(
        feed.received_on(1),
        [
            ReceivedMessage::Text("one".into()),
            ReceivedMessage::Binary(vec![1, 2, 3]),
            ReceivedMessage::Text("three".into()),
        ]
    );
    assert_eq!(feed.received_on(2)[0], ReceivedMessage::Text("uno".into()));
    assert_eq!(feed.received().len(), 5);
    assert_eq!(feed.stats().received_total, 5);
    feed.clear_received();
    assert!(feed.received().is_empty());
}

#[tokio::test]
async fn received_shows_a_subscribe_replayed_on_a_new_connection() {
    let feed = start_quiet().await;
    let subscribe = r#"{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":1}"#;
    let mut client = connect(&feed.url("/stream")).await;
    send_text(&mut client, subscribe).await;
    assert_eq!(next_reply(&mut client).await, r#"{"result":null,"id":1}"#);
    assert_eq!(feed.drop_all().await, 1);

    // What a reconnecting client does: connect again and send the same SUBSCRIBE.
    let mut again = connect(&feed.url("/stream")).await;
    send_text(&mut again, subscribe).await;
    assert_eq!(next_reply(&mut again).await, r#"{"result":null,"id":1}"#);
    assert_eq!(feed.accepted_total(), 2);
    assert_eq!(
        feed.received_on(2),
        [ReceivedMessage::Text(subscribe.into())]
    );
    assert_eq!(
        feed.subscriptions(),
        BTreeMap::from([(2, vec!["btcusdt@depth".to_owned()])])
    );
}
