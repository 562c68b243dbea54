//! Frames both ways: Subscribe and StopPublish for published frames, Send and SendRaw upstream.

use std::sync::atomic::Ordering;

use serde_json::Value;
use tonic::Streaming;
use wsm::proto::{
    ConnectRequest, OutboundMessage, PublishedEvent, SendRawRequest, SendRequest,
    StartPublishRequest, StopPublishRequest, SubscribeRequest,
};

use crate::support::server::{bounded, feed, Poll, Wsm, HANG};

use super::common::{connect, connect_request, listed, texts};

async fn next_seq(events: &mut Streaming<PublishedEvent>) -> u64 {
    let event = events.message().await.expect("the stream stays open");
    event.expect("an event").seq
}

#[tokio::test]
async fn subscribe_streams_published_frames_with_increasing_seq() {
    bounded(async {
        let feed = feed(100).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(&mut client, connect_request(feed.url("/ws"))).await;
        let mut events = client
            .subscribe(SubscribeRequest {
                topic: "market".into(),
            })
            .await
            .expect("Subscribe")
            .into_inner();
        client
            .start_publish(StartPublishRequest {
                id: id.clone(),
                topic: "market".into(),
            })
            .await
            .expect("StartPublish");
        assert_eq!(listed(&mut client, &id).await.topic, "market");
        for expected in 1..=10u64 {
            let event = events
                .message()
                .await
                .expect("the stream stays open")
                .expect("an event");
            assert_eq!(event.topic, "market");
            assert_eq!(event.connection_id, id);
            assert_eq!(event.seq, expected, "seq increases by one per frame");
            assert_eq!(event.epoch, 1);
            assert_eq!(event.id, "", "memory bus events have no stream entry id");
            let cloud: Value = serde_json::from_str(&event.cloud_event).expect("CloudEvent JSON");
            assert_eq!(cloud["websocketId"], id.as_str());
            assert_eq!(cloud["seq"], expected);
            assert_eq!(cloud["id"], format!("{id}:1:{expected}"));
            assert_eq!(cloud["websocketUrl"], feed.url("/ws"));
            let frame: Value =
                serde_json::from_str(cloud["data"].as_str().expect("the frame text"))
                    .expect("feed frames are JSON");
            assert_eq!(frame["e"], "depthUpdate");
        }
    })
    .await;
}

#[tokio::test]
async fn stop_publish_stops_publishing_and_clears_the_topic() {
    bounded(async {
        let feed = feed(200).await;
        let wsm = Wsm::start(&[]).await;
        let service = wsm.running.service.clone();
        let mut client = wsm.client().await;
        let id = connect(&mut client, connect_request(feed.url("/ws"))).await;
        let mut events = client
            .subscribe(SubscribeRequest {
                topic: "market".into(),
            })
            .await
            .expect("Subscribe")
            .into_inner();
        let start = || StartPublishRequest {
            id: id.clone(),
            topic: "market".into(),
        };
        client.start_publish(start()).await.expect("StartPublish");
        assert_eq!(next_seq(&mut events).await, 1);

        client
            .stop_publish(StopPublishRequest { id: id.clone() })
            .await
            .expect("StopPublish");
        assert_eq!(listed(&mut client, &id).await.topic, "");
        // The feed goes on sending; nothing more is published.
        let received = || service.snapshot().received_frames;
        let published = || service.metrics().published.load(Ordering::Relaxed);
        let wait_for_frames = async |n: u64| {
            let target = received() + n;
            let poll = Poll::new("frames from the feed");
            while received() < target {
                poll.tick().await;
            }
        };
        wait_for_frames(20).await;
        let stopped_at = published();
        wait_for_frames(40).await;
        assert_eq!(
            published(),
            stopped_at,
            "no frame published after StopPublish"
        );
        assert!(received() > stopped_at + 40);

        // Every frame published before the stop reached the stream; publishing resumes right after.
        for expected in 2..=stopped_at {
            assert_eq!(next_seq(&mut events).await, expected);
        }
        client.start_publish(start()).await.expect("StartPublish");
        assert_eq!(next_seq(&mut events).await, stopped_at + 1);
    })
    .await;
}

#[tokio::test]
async fn send_in_text_mode_returns_the_feeds_echo() {
    bounded(async {
        let feed = feed(50).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(&mut client, connect_request(feed.url("/ws"))).await;
        for content_type in ["application/json", ""] {
            let response = client
                .send(SendRequest {
                    id: id.clone(),
                    message: br#"{"q":[1,2]}"#.to_vec(),
                    timeout_ms: 5000,
                    content_type: content_type.into(),
                })
                .await
                .expect("Send")
                .into_inner();
            let reply: Value = serde_json::from_slice(&response.response).expect("a JSON reply");
            assert_eq!(reply["payload"], serde_json::json!({"q": [1, 2]}));
            assert!(reply["id"].is_string(), "{reply}");
        }
        // What the feed received: the request in the correlation envelope, as a text frame.
        let requests = texts(feed.received_on(1));
        assert_eq!(requests.len(), 2);
        let request: Value = serde_json::from_str(&requests[0]).unwrap();
        assert_eq!(request["payload"], serde_json::json!({"q": [1, 2]}));

        // Binary mode: the feed echoes the frame; the correlation prefix is not in the answer.
        let response = client
            .send(SendRequest {
                id,
                message: b"binary request".to_vec(),
                timeout_ms: 5000,
                content_type: "application/octet-stream".into(),
            })
            .await
            .expect("Send")
            .into_inner();
        assert_eq!(response.response, b"binary request");
    })
    .await;
}

#[tokio::test]
async fn send_raw_reaches_the_upstream_and_replays_after_a_reconnect() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&["--reconnect-base-ms", "50"]).await;
        let mut client = wsm.client().await;
        let id = connect(
            &mut client,
            ConnectRequest {
                auto_reconnect: true,
                on_connect: vec![OutboundMessage {
                    message: br#"{"hello":1}"#.to_vec(),
                    content_type: "application/json".into(),
                }],
                ..connect_request(feed.url("/ws"))
            },
        )
        .await;
        let subscribe = r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":7}"#;
        client
            .send_raw(SendRawRequest {
                id: id.clone(),
                message: subscribe.as_bytes().to_vec(),
                content_type: "application/json".into(),
                replay_on_reconnect: true,
            })
            .await
            .expect("SendRaw with replay");
        client
            .send_raw(SendRawRequest {
                id: id.clone(),
                message: b"once".to_vec(),
                content_type: "text/plain".into(),
                replay_on_reconnect: false,
            })
            .await
            .expect("SendRaw");
        assert!(
            feed.wait_for_received(HANG, |r| r.connection == 1
                && r.message.as_text() == Some("once"))
                .await
        );
        assert_eq!(
            texts(feed.received_on(1)),
            [r#"{"hello":1}"#, subscribe, "once"],
            "sent as given, in order, after on_connect"
        );

        feed.drop_all().await;
        assert!(feed.wait_for_accepted(2, HANG).await, "reconnected");
        assert!(
            feed.wait_for_received(HANG, |r| r.connection == 2
                && r.message.as_text() == Some(subscribe))
                .await,
            "replayed after the reconnect"
        );
        assert_eq!(
            texts(feed.received_on(2)),
            [r#"{"hello":1}"#, subscribe],
            "on_connect, then the replayed message; the other one is not replayed"
        );
        let poll = Poll::new("List to show the reconnected connection");
        loop {
            let c = listed(&mut client, &id).await;
            if c.epoch == 2 && c.status == "connected" {
                break;
            }
            poll.tick().await;
        }
    })
    .await;
}
