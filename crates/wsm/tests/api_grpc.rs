//! `virtufin.WebSocketManager` over real gRPC: an in-process `wsm serve` (memory backends) in front of
//! the local feed server, every RPC and every error code the API promises.

mod support;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::Ordering;

use feed_server::{FeedConfig, ReceivedMessage};
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Response, Status, Streaming};
use wsm::proto::web_socket_manager_client::WebSocketManagerClient;
use wsm::proto::{
    ConnectRequest, DisconnectRequest, GetTagRequest, GetTagsRequest, ListRequest, OutboundMessage,
    PublishedEvent, SendRawRequest, SendRequest, SetTagRequest, SetTagsRequest,
    StartPublishRequest, StopPublishRequest, SubscribeRequest, TagFilter, WebSocketConnection,
};

use support::server::{bounded, dead_port, feed, feed_with, Poll, Wsm, HANG};
use support::upstream::Upstream;

type Client = WebSocketManagerClient<Channel>;

const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

fn connect_request(url: String) -> ConnectRequest {
    ConnectRequest {
        url,
        ..ConnectRequest::default()
    }
}

fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Connects and checks the answer; the connection's id.
async fn connect(client: &mut Client, request: ConnectRequest) -> String {
    let response = client.connect(request).await.expect("Connect").into_inner();
    assert_eq!(response.status, "connected");
    assert!(!response.id.is_empty());
    response.id
}

async fn list(client: &mut Client, filters: &[(&str, &str)]) -> Vec<WebSocketConnection> {
    let filters = filters
        .iter()
        .map(|(key, value)| TagFilter {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    client
        .list(ListRequest { filters })
        .await
        .expect("List")
        .into_inner()
        .connections
}

async fn listed(client: &mut Client, id: &str) -> WebSocketConnection {
    list(client, &[])
        .await
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("{id} is listed"))
}

/// The call failed with `code` and exactly `message`.
fn assert_error<T: Debug>(result: Result<Response<T>, Status>, code: Code, message: &str) {
    let status = result.expect_err("the call fails");
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "{status:?}"
    );
}

/// The call failed with `code` and a message containing `part`.
fn assert_error_containing<T: Debug>(result: Result<Response<T>, Status>, code: Code, part: &str) {
    let status = result.expect_err("the call fails");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(part),
        "{:?} should mention {part:?}",
        status.message()
    );
}

async fn next_seq(events: &mut Streaming<PublishedEvent>) -> u64 {
    let event = events.message().await.expect("the stream stays open");
    event.expect("an event").seq
}

fn texts(messages: Vec<ReceivedMessage>) -> Vec<String> {
    messages
        .into_iter()
        .filter_map(|m| m.as_text().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn connect_sends_headers_subprotocols_and_on_connect_and_keeps_the_tags() {
    bounded(async {
        let upstream = Upstream::start().await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(
            &mut client,
            ConnectRequest {
                url: upstream.url(),
                auto_reconnect: false,
                tags: tags(&[("desk", "fx"), ("region", "eu")]),
                headers: tags(&[("X-Client", "api-test"), ("X-Trace", "t-1")]),
                subprotocols: vec!["feed.v2".into(), "feed.v1".into()],
                on_connect: vec![
                    OutboundMessage {
                        message: br#"{"op":"login"}"#.to_vec(),
                        content_type: "application/json".into(),
                    },
                    OutboundMessage {
                        message: br#"{"op":"subscribe"}"#.to_vec(),
                        content_type: "application/json".into(),
                    },
                ],
                ping_interval_ms: 5000,
            },
        )
        .await;

        let poll = Poll::new("the on_connect messages at the upstream");
        let session = loop {
            if let Some(s) = upstream.sessions().into_iter().next() {
                if s.texts.len() >= 2 {
                    break s;
                }
            }
            poll.tick().await;
        };
        assert_eq!(session.header("x-client"), Some("api-test"));
        assert_eq!(session.header("x-trace"), Some("t-1"));
        assert_eq!(
            session.header("sec-websocket-protocol"),
            Some("feed.v2, feed.v1"),
            "the subprotocols are offered in order"
        );
        assert_eq!(
            session.texts,
            [r#"{"op":"login"}"#, r#"{"op":"subscribe"}"#]
        );

        let listed = listed(&mut client, &id).await;
        assert_eq!(listed.url, upstream.url());
        assert_eq!(listed.status, "connected");
        assert_eq!(listed.tags, tags(&[("desk", "fx"), ("region", "eu")]));
        assert_eq!(listed.instance_id, "wsm-api-test");
        assert_eq!(listed.topic, "");
        assert_eq!(listed.epoch, 1);
        assert!(listed.created_at.ends_with('Z'), "{}", listed.created_at);
    })
    .await;
}

#[tokio::test]
async fn list_shows_every_connection_and_filters_by_tags() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        assert!(list(&mut client, &[]).await.is_empty());
        let prod = connect(
            &mut client,
            ConnectRequest {
                tags: tags(&[("env", "prod"), ("team", "fx")]),
                ..connect_request(feed.url("/ws"))
            },
        )
        .await;
        let dev = connect(
            &mut client,
            ConnectRequest {
                tags: tags(&[("env", "dev"), ("team", "fx")]),
                ..connect_request(feed.url("/ws"))
            },
        )
        .await;
        let untagged = connect(&mut client, connect_request(feed.url("/ws"))).await;

        let ids = |connections: Vec<WebSocketConnection>| {
            let mut ids: Vec<String> = connections.into_iter().map(|c| c.id).collect();
            ids.sort();
            ids
        };
        let mut all = vec![prod.clone(), dev.clone(), untagged];
        all.sort();
        assert_eq!(ids(list(&mut client, &[]).await), all);
        assert_eq!(
            ids(list(&mut client, &[("env", "prod")]).await),
            vec![prod.clone()]
        );
        let mut fx = vec![prod.clone(), dev.clone()];
        fx.sort();
        assert_eq!(ids(list(&mut client, &[("team", "fx")]).await), fx);
        assert_eq!(
            ids(list(&mut client, &[("team", "fx"), ("env", "dev")]).await),
            [dev],
            "all filters must match"
        );
        assert!(list(&mut client, &[("env", "staging")]).await.is_empty());
        assert!(list(&mut client, &[("env", "prod"), ("env", "dev")])
            .await
            .is_empty());
    })
    .await;
}

#[tokio::test]
async fn list_never_shows_handshake_header_values() {
    bounded(async {
        let upstream = Upstream::start().await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        connect(
            &mut client,
            ConnectRequest {
                headers: tags(&[("Authorization", "secret-token")]),
                ..connect_request(upstream.url())
            },
        )
        .await;
        // The header was used...
        let poll = Poll::new("the upstream to record the handshake");
        let session = loop {
            if let Some(session) = upstream.sessions().into_iter().next() {
                break session;
            }
            poll.tick().await;
        };
        assert_eq!(session.header("authorization"), Some("secret-token"));
        // ...and is not shown.
        let response = client
            .list(ListRequest::default())
            .await
            .expect("List")
            .into_inner();
        assert_eq!(response.connections.len(), 1);
        let text = format!("{response:?}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("authorization"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn disconnect_closes_the_socket_and_removes_the_connection() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(&mut client, connect_request(feed.url("/ws"))).await;
        assert!(feed.wait_for_connections(1, HANG).await);
        client
            .disconnect(DisconnectRequest { id: id.clone() })
            .await
            .expect("Disconnect");
        assert!(
            feed.wait_for_connections(0, HANG).await,
            "the upstream socket is closed"
        );
        assert!(list(&mut client, &[]).await.is_empty());
        assert_error(
            client.get_tags(GetTagsRequest { id: id.clone() }).await,
            Code::NotFound,
            "Connection not found",
        );
        assert_error(
            client.disconnect(DisconnectRequest { id }).await,
            Code::NotFound,
            "Connection not found",
        );
    })
    .await;
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

#[tokio::test]
async fn tags_are_set_and_read_one_at_a_time_and_all_at_once() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(
            &mut client,
            ConnectRequest {
                tags: tags(&[("initial", "1")]),
                ..connect_request(feed.url("/ws"))
            },
        )
        .await;
        client
            .set_tag(SetTagRequest {
                id: id.clone(),
                key: "desk".into(),
                value: "fx".into(),
            })
            .await
            .expect("SetTag");
        let get_tag = |key: &str| GetTagRequest {
            id: id.clone(),
            key: key.into(),
        };
        let value = client.get_tag(get_tag("desk")).await.expect("GetTag");
        assert_eq!(value.into_inner().value, "fx");
        let absent = client.get_tag(get_tag("absent")).await.expect("GetTag");
        assert_eq!(absent.into_inner().value, "", "an absent tag reads empty");
        let all = client
            .get_tags(GetTagsRequest { id: id.clone() })
            .await
            .expect("GetTags")
            .into_inner();
        assert_eq!(all.tags, tags(&[("initial", "1"), ("desk", "fx")]));

        let replacement = tags(&[("a", "1"), ("b", "2")]);
        client
            .set_tags(SetTagsRequest {
                id: id.clone(),
                tags: replacement.clone(),
            })
            .await
            .expect("SetTags");
        let all = client
            .get_tags(GetTagsRequest { id: id.clone() })
            .await
            .expect("GetTags")
            .into_inner();
        assert_eq!(all.tags, replacement, "SetTags replaces every tag");
        assert_eq!(listed(&mut client, &id).await.tags, replacement);
        let by_tag = list(&mut client, &[("b", "2")]).await;
        assert_eq!(by_tag.len(), 1);
        assert_eq!(by_tag[0].id, id);
    })
    .await;
}

#[tokio::test]
async fn invalid_arguments_are_invalid_argument() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let url = feed.url("/ws");

        assert_error(
            client.connect(connect_request(String::new())).await,
            Code::InvalidArgument,
            "URL is required",
        );
        assert_error_containing(
            client
                .connect(connect_request(format!("http://{}/ws", feed.addr())))
                .await,
            Code::InvalidArgument,
            "ws:// or wss://",
        );
        let many: HashMap<String, String> =
            (0..51).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_error(
            client
                .connect(ConnectRequest {
                    tags: many.clone(),
                    ..connect_request(url.clone())
                })
                .await,
            Code::InvalidArgument,
            "at most 50 tags per connection, got 51",
        );
        let long_key = "k".repeat(129);
        let long_value = "v".repeat(1025);
        assert_error_containing(
            client
                .connect(ConnectRequest {
                    tags: tags(&[(&long_key, "v")]),
                    ..connect_request(url.clone())
                })
                .await,
            Code::InvalidArgument,
            "128",
        );
        assert_error_containing(
            client
                .connect(ConnectRequest {
                    tags: tags(&[("k", &long_value)]),
                    ..connect_request(url.clone())
                })
                .await,
            Code::InvalidArgument,
            "1024",
        );
        assert_error_containing(
            client
                .connect(ConnectRequest {
                    ping_interval_ms: -1,
                    ..connect_request(url.clone())
                })
                .await,
            Code::InvalidArgument,
            "ping_interval_ms",
        );
        assert!(
            list(&mut client, &[]).await.is_empty(),
            "refused Connects leave nothing"
        );
        assert_eq!(feed.accepted_total(), 0, "and dial nothing");

        // At the limits exactly: accepted.
        let mut limit: HashMap<String, String> =
            (0..49).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        limit.insert("k".repeat(128), "v".repeat(1024));
        let id = connect(
            &mut client,
            ConnectRequest {
                tags: limit.clone(),
                ..connect_request(url.clone())
            },
        )
        .await;

        assert_error(
            client
                .start_publish(StartPublishRequest {
                    id: id.clone(),
                    topic: String::new(),
                })
                .await,
            Code::InvalidArgument,
            "Topic is required",
        );
        assert_error(
            client
                .subscribe(SubscribeRequest { topic: " ".into() })
                .await,
            Code::InvalidArgument,
            "Topic is required",
        );
        assert_error_containing(
            client
                .send(SendRequest {
                    id: id.clone(),
                    message: b"{}".to_vec(),
                    timeout_ms: -1,
                    content_type: String::new(),
                })
                .await,
            Code::InvalidArgument,
            "timeout_ms must not be negative",
        );
        assert_error(
            client
                .set_tag(SetTagRequest {
                    id: id.clone(),
                    key: "one-too-many".into(),
                    value: "v".into(),
                })
                .await,
            Code::InvalidArgument,
            "at most 50 tags per connection, got 51",
        );
        let unchanged = client
            .get_tags(GetTagsRequest { id })
            .await
            .expect("GetTags")
            .into_inner();
        assert_eq!(unchanged.tags, limit, "refused changes change nothing");

        // Tag limits on a connection with few tags.
        let id = connect(&mut client, connect_request(url.clone())).await;
        assert_error_containing(
            client
                .set_tag(SetTagRequest {
                    id: id.clone(),
                    key: long_key.clone(),
                    value: "v".into(),
                })
                .await,
            Code::InvalidArgument,
            "128",
        );
        assert_error_containing(
            client
                .set_tag(SetTagRequest {
                    id: id.clone(),
                    key: "k".into(),
                    value: long_value.clone(),
                })
                .await,
            Code::InvalidArgument,
            "1024",
        );
        assert_error(
            client
                .set_tags(SetTagsRequest {
                    id: id.clone(),
                    tags: many,
                })
                .await,
            Code::InvalidArgument,
            "at most 50 tags per connection, got 51",
        );
        let unchanged = client
            .get_tags(GetTagsRequest { id })
            .await
            .expect("GetTags")
            .into_inner();
        assert!(unchanged.tags.is_empty(), "refused changes change nothing");
    })
    .await;
}

#[tokio::test]
async fn unknown_ids_are_not_found_for_every_id_taking_rpc() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = || UNKNOWN_ID.to_owned();
        let not_found = "Connection not found";
        assert_error(
            client.disconnect(DisconnectRequest { id: id() }).await,
            Code::NotFound,
            not_found,
        );
        assert_error(
            client
                .start_publish(StartPublishRequest {
                    id: id(),
                    topic: "t".into(),
                })
                .await,
            Code::NotFound,
            not_found,
        );
        assert_error(
            client.stop_publish(StopPublishRequest { id: id() }).await,
            Code::NotFound,
            not_found,
        );
        assert_error(
            client
                .send(SendRequest {
                    id: id(),
                    message: b"{}".to_vec(),
                    ..SendRequest::default()
                })
                .await,
            Code::NotFound,
            not_found,
        );
        assert_error(
            client
                .send_raw(SendRawRequest {
                    id: id(),
                    message: b"{}".to_vec(),
                    ..SendRawRequest::default()
                })
                .await,
            Code::NotFound,
            not_found,
        );
        assert_error(
            client
                .set_tag(SetTagRequest {
                    id: id(),
                    key: "k".into(),
                    value: "v".into(),
                })
                .await,
            Code::NotFound,
            not_found,
        );
        assert_error(
            client
                .get_tag(GetTagRequest {
                    id: id(),
                    key: "k".into(),
                })
                .await,
            Code::NotFound,
            not_found,
        );
        assert_error(
            client
                .set_tags(SetTagsRequest {
                    id: id(),
                    tags: tags(&[("k", "v")]),
                })
                .await,
            Code::NotFound,
            not_found,
        );
        assert_error(
            client.get_tags(GetTagsRequest { id: id() }).await,
            Code::NotFound,
            not_found,
        );
    })
    .await;
}

#[tokio::test]
async fn send_after_the_upstream_dropped_is_failed_precondition() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(
            &mut client,
            ConnectRequest {
                auto_reconnect: false,
                ..connect_request(feed.url("/ws"))
            },
        )
        .await;
        assert_eq!(feed.drop_all().await, 1);
        let poll = Poll::new("List to show the connection no longer connected");
        let status = loop {
            let status = listed(&mut client, &id).await.status;
            if status != "connected" {
                break status;
            }
            poll.tick().await;
        };
        assert_eq!(
            status, "disconnected",
            "no reconnect without auto_reconnect"
        );
        let not_connected = "WebSocket is not connected";
        assert_error(
            client
                .send(SendRequest {
                    id: id.clone(),
                    message: br#"{"q":1}"#.to_vec(),
                    timeout_ms: 1000,
                    content_type: "application/json".into(),
                })
                .await,
            Code::FailedPrecondition,
            not_connected,
        );
        assert_error(
            client
                .send_raw(SendRawRequest {
                    id: id.clone(),
                    message: b"{}".to_vec(),
                    ..SendRawRequest::default()
                })
                .await,
            Code::FailedPrecondition,
            not_connected,
        );
        assert_error(
            client
                .start_publish(StartPublishRequest {
                    id,
                    topic: "t".into(),
                })
                .await,
            Code::FailedPrecondition,
            not_connected,
        );
    })
    .await;
}

#[tokio::test]
async fn send_without_a_reply_in_time_is_deadline_exceeded() {
    bounded(async {
        let feed = feed_with(FeedConfig {
            rate: 10,
            echo: false,
            ..FeedConfig::default()
        })
        .await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(&mut client, connect_request(feed.url("/ws"))).await;
        assert_error(
            client
                .send(SendRequest {
                    id: id.clone(),
                    message: br#"{"q":1}"#.to_vec(),
                    timeout_ms: 200,
                    content_type: "application/json".into(),
                })
                .await,
            Code::DeadlineExceeded,
            "Request timeout",
        );
        assert!(
            feed.wait_for_received(HANG, |r| r.message.as_text().is_some())
                .await,
            "the request was sent"
        );
        // The connection is still usable.
        assert_eq!(listed(&mut client, &id).await.status, "connected");
    })
    .await;
}

#[tokio::test]
async fn a_failed_handshake_is_unavailable_and_leaves_no_connection() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let url = format!("ws://127.0.0.1:{}/ws", dead_port());
        let status = client
            .connect(connect_request(url.clone()))
            .await
            .expect_err("nothing listens there");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains(&url) && status.message().contains("failed"),
            "the reason names the URL: {:?}",
            status.message()
        );
        assert!(list(&mut client, &[]).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_max_connections_are_resource_exhausted() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&["--max-connections", "1"]).await;
        let mut client = wsm.client().await;
        let first = connect(&mut client, connect_request(feed.url("/ws"))).await;
        assert_error_containing(
            client.connect(connect_request(feed.url("/ws"))).await,
            Code::ResourceExhausted,
            "maximum of 1 connections",
        );
        assert_eq!(list(&mut client, &[]).await.len(), 1);
        client
            .disconnect(DisconnectRequest { id: first })
            .await
            .expect("Disconnect");
        connect(&mut client, connect_request(feed.url("/ws"))).await;
    })
    .await;
}
