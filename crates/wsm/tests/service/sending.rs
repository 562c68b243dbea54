//! Sending upstream: correlated responses, timeouts, and raw frames replayed after a reconnect.

use std::time::Duration;

use bytes::Bytes;
use feed_server::ReceivedMessage;
use serde_json::Value;
use wsm::model::{OutboundMessage, Status};
use wsm::ConnectRequest;

use super::common::{code, connect_req, env, next_event, HANG};

#[tokio::test]
async fn send_returns_the_correlated_response_and_times_out_as_deadline_exceeded() {
    let e = env(10).await;
    let record = e
        .service
        .connect(connect_req(e.feed.url("/ws")))
        .await
        .unwrap();
    let response = e
        .service
        .send(
            &record.id,
            Bytes::from_static(br#"{"q":1}"#),
            "application/json",
            5000,
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(v["payload"], serde_json::json!({"q":1}));
    let err = e
        .service
        .send(
            &record.id,
            Bytes::from_static(b"\"no-reply\""),
            "application/json",
            200,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (code(&err), err.to_string()),
        ("DEADLINE_EXCEEDED", "Request timeout".into())
    );
    let err = e
        .service
        .send(&record.id, Bytes::from_static(b"{}"), "", -1)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
}

#[tokio::test]
async fn send_raw_with_replay_is_persisted_and_replayed_after_a_reconnect() {
    let e = env(20).await;
    let record = e
        .service
        .connect(ConnectRequest {
            url: e.feed.url("/ws"),
            auto_reconnect: true,
            on_connect: vec![OutboundMessage {
                payload: Bytes::from_static(br#"{"hello":1}"#),
                content_type: "application/json".into(),
            }],
            ..ConnectRequest::default()
        })
        .await
        .unwrap();
    let subscribe = br#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":7}"#;
    e.service
        .send_raw(
            &record.id,
            Bytes::from_static(subscribe),
            "application/json",
            true,
        )
        .await
        .unwrap();
    let stored = e.service.store().get(&record.id).await.unwrap().unwrap();
    assert_eq!(stored.replay.len(), 1);

    let mut rx = e.bus.subscribe("t");
    e.service.start_publish(&record.id, "t").await.unwrap();
    assert_eq!(next_event(&mut rx).await["epoch"], 1);
    e.feed.drop_all().await;
    let after = loop {
        let event = next_event(&mut rx).await;
        if event["epoch"] == 2 {
            break event;
        }
    };
    assert!(after["seq"].as_u64().unwrap() > 1);
    let replayed: Vec<String> = e
        .feed
        .received_on(2)
        .into_iter()
        .filter_map(|m| match m {
            ReceivedMessage::Text(t) => Some(t),
            ReceivedMessage::Binary(_) => None,
        })
        .collect();
    assert_eq!(
        replayed[..2],
        [
            r#"{"hello":1}"#.to_owned(),
            String::from_utf8_lossy(subscribe).into_owned()
        ]
    );
    // The persisted record follows: epoch 2, connected again.
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let r = e
            .service
            .store()
            .repository()
            .load(&record.id)
            .await
            .unwrap()
            .unwrap()
            .0;
        if r.epoch == 2 && r.status == Status::Connected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "record not updated: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
