//! Every error code the API promises, and what each failed call leaves behind.

use std::collections::HashMap;
use std::fmt::Debug;

use feed_server::FeedConfig;
use tonic::{Code, Response, Status};
use wsm::proto::{
    ConnectRequest, DisconnectRequest, GetTagRequest, GetTagsRequest, SendRawRequest, SendRequest,
    SetTagRequest, SetTagsRequest, StartPublishRequest, StopPublishRequest, SubscribeRequest,
};

use crate::support::server::{bounded, dead_port, feed, feed_with, Poll, Wsm, HANG};

use super::common::{assert_error, connect, connect_request, list, listed, tags};

const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

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
