//! Connections and their records: connect, errors, tags, disconnect, owners, clearing on start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use feed_server::{FeedConfig, FeedServer};
use serde_json::Value;
use wsm::backends::memory::{MemoryBus, MemoryStateStore};
use wsm::backends::{Concurrency, StateStore};
use wsm::model::Status;
use wsm::{ConnectRequest, ServiceConfig, WebSocketService};

use super::common::{code, config, connect_req, env, env_with, next_event, HANG};

#[tokio::test]
async fn connect_creates_an_owned_persisted_record_and_list_shows_it() {
    let e = env(10).await;
    let mut tags = BTreeMap::new();
    tags.insert("venue".to_owned(), "binance".to_owned());
    let record = e
        .service
        .connect(ConnectRequest {
            url: e.feed.url("/ws"),
            auto_reconnect: true,
            tags: tags.clone(),
            headers: [("Authorization".to_owned(), "Bearer secret".to_owned())].into(),
            ..ConnectRequest::default()
        })
        .await
        .expect("connects");
    assert_eq!(record.status, Status::Connected);
    assert_eq!(record.instance_id, "wsm-test-1");
    assert_eq!(record.epoch, 1);
    assert_eq!(uuid::Uuid::parse_str(&record.id).map(|_| ()), Ok(()));

    let stored = e
        .state
        .get(&format!("websocketmanager.connection.{}", record.id))
        .await
        .unwrap()
        .expect("record persisted");
    let json: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(json["autoReconnect"], true);
    assert_eq!(json["instanceId"], "wsm-test-1");
    assert_eq!(json["status"], "connected");
    let index = e
        .state
        .get("websocketmanager.connection.index")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&index.value).unwrap(),
        std::slice::from_ref(&record.id)
    );
    let by_instance = e
        .state
        .get("websocketmanager.instance.index.wsm-test-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&by_instance.value).unwrap(),
        std::slice::from_ref(&record.id)
    );

    let all = e.service.list(&[]).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].tags, tags);
    let filtered = e
        .service
        .list(&[("venue".into(), "kraken".into())])
        .await
        .unwrap();
    assert!(filtered.is_empty());
    assert_eq!(
        e.service
            .list(&[("venue".into(), "binance".into())])
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn invalid_urls_are_invalid_arguments_and_failed_handshakes_leave_no_record() {
    let e = env(10).await;
    for (url, message) in [
        ("", "URL is required"),
        (
            "http://127.0.0.1:1/",
            "URL must use ws:// or wss://, got http://127.0.0.1:1/",
        ),
    ] {
        let err = e
            .service
            .connect(connect_req(url.into()))
            .await
            .unwrap_err();
        assert_eq!(
            (code(&err), err.to_string().as_str()),
            ("INVALID_ARGUMENT", message)
        );
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = e
        .service
        .connect(connect_req(format!("ws://{closed}/ws")))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "UNAVAILABLE");
    assert!(err.to_string().contains("handshake with"), "{err}");
    assert!(
        e.service.list(&[]).await.unwrap().is_empty(),
        "no record left"
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found_for_every_connection_operation() {
    let e = env(10).await;
    let s = &e.service;
    let id = "00000000-0000-0000-0000-000000000000";
    let errors = vec![
        s.disconnect(id).await.unwrap_err(),
        s.start_publish(id, "t").await.unwrap_err(),
        s.stop_publish(id).await.unwrap_err(),
        s.send(id, Bytes::from_static(b"{}"), "", 0)
            .await
            .unwrap_err(),
        s.send_raw(id, Bytes::from_static(b"{}"), "", false)
            .await
            .unwrap_err(),
        s.set_tag(id, "k", "v").await.unwrap_err(),
        s.get_tag(id, "k").await.unwrap_err(),
        s.set_tags(id, BTreeMap::new()).await.unwrap_err(),
        s.get_tags(id).await.unwrap_err(),
    ];
    for err in errors {
        assert_eq!(
            (code(&err), err.to_string()),
            ("NOT_FOUND", "Connection not found".into())
        );
    }
}

/// A record that vanishes from the shared store while its owner lives (a store restarted without
/// persistence, a clear, an expiry) ends the connection, and its consumers hear so: no other
/// instance will report it.
#[tokio::test]
async fn a_connection_whose_record_vanished_ends_with_a_disconnected_event() {
    let bus = MemoryBus::new();
    let mut rx = bus.subscribe("websocketmanager.lifecycle");
    let e = env_with(10, config(), Arc::new(bus.clone()), bus).await;
    let record = e
        .service
        .connect(ConnectRequest {
            url: e.feed.url("/ws"),
            auto_reconnect: true,
            ..ConnectRequest::default()
        })
        .await
        .unwrap();
    for _ in 0..2 {
        next_event(&mut rx).await; // connecting, connected
    }
    e.state
        .delete(
            &wsm::store::keys::record_key(&record.id),
            Concurrency::LastWrite,
        )
        .await
        .unwrap();
    assert_eq!(e.service.verify_ownership().await.unwrap(), 1);
    let event = next_event(&mut rx).await;
    assert_eq!(
        event["type"], "com.virtufin.websocketmanager.lifecycle.disconnected",
        "{event}"
    );
    assert_eq!(event["data"]["connection_id"], record.id.as_str());
    assert_eq!(event["data"]["url"], record.url.as_str());
    assert!(
        event["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("record is gone from the shared store")),
        "{event}"
    );
    assert!(
        e.feed.wait_for_connections(0, HANG).await,
        "the socket is closed"
    );
    // Nothing else follows: the connection is over, not reconnecting.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "no lifecycle event after the disconnect"
    );
}

#[tokio::test]
async fn tags_can_be_set_and_read_within_the_limits() {
    let e = env(10).await;
    let id = e
        .service
        .connect(connect_req(e.feed.url("/ws")))
        .await
        .unwrap()
        .id;
    e.service.set_tag(&id, "desk", "fx").await.unwrap();
    assert_eq!(e.service.get_tag(&id, "desk").await.unwrap(), "fx");
    assert_eq!(e.service.get_tag(&id, "absent").await.unwrap(), "");
    let tags: BTreeMap<String, String> =
        [("a".into(), "1".into()), ("b".into(), "2".into())].into();
    e.service.set_tags(&id, tags.clone()).await.unwrap();
    assert_eq!(e.service.get_tags(&id).await.unwrap(), tags);

    let too_many: BTreeMap<String, String> =
        (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
    let err = e.service.set_tags(&id, too_many).await.unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
    assert_eq!(err.to_string(), "at most 50 tags per connection, got 51");
    let err = e
        .service
        .set_tag(&id, &"k".repeat(129), "v")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
    let err = e
        .service
        .set_tag(&id, "k", &"v".repeat(1025))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
    assert_eq!(
        e.service.get_tags(&id).await.unwrap(),
        tags,
        "refused changes change nothing"
    );
}

#[tokio::test]
async fn disconnect_closes_the_socket_and_removes_the_record() {
    let e = env(10).await;
    let id = e
        .service
        .connect(connect_req(e.feed.url("/ws")))
        .await
        .unwrap()
        .id;
    assert!(e.feed.wait_for_connections(1, HANG).await);
    e.service.disconnect(&id).await.unwrap();
    assert!(e.feed.wait_for_connections(0, HANG).await, "socket closed");
    assert!(e.service.list(&[]).await.unwrap().is_empty());
    assert_eq!(
        e.state
            .get(&format!("websocketmanager.connection.{id}"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        code(&e.service.disconnect(&id).await.unwrap_err()),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn a_dropped_connection_without_auto_reconnect_is_not_connected() {
    let e = env(10).await;
    let id = e
        .service
        .connect(connect_req(e.feed.url("/ws")))
        .await
        .unwrap()
        .id;
    e.feed.drop_all().await;
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        match e
            .service
            .send_raw(&id, Bytes::from_static(b"{}"), "", false)
            .await
        {
            Err(err) => {
                assert_eq!(
                    (code(&err), err.to_string()),
                    ("FAILED_PRECONDITION", "WebSocket is not connected".into())
                );
                break;
            }
            Ok(()) => assert!(tokio::time::Instant::now() < deadline),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = e.service.start_publish(&id, "t").await.unwrap_err();
    assert_eq!(code(&err), "FAILED_PRECONDITION");
}

#[tokio::test]
async fn another_instances_connection_is_refused_with_its_owner_named() {
    let e = env(10).await;
    let foreign = serde_json::json!({
        "id": "c-foreign", "url": "ws://example.invalid/", "status": "connected",
        "autoReconnect": false, "createdAt": "2026-01-01T00:00:00Z", "instanceId": "wsm-other"
    });
    e.state
        .set(
            "websocketmanager.connection.c-foreign",
            foreign.to_string().as_bytes(),
            Concurrency::LastWrite,
            None,
        )
        .await
        .unwrap();
    let err = e.service.disconnect("c-foreign").await.unwrap_err();
    assert_eq!(code(&err), "FAILED_PRECONDITION");
    assert_eq!(
        err.to_string(),
        "Connection owned by different instance: wsm-other"
    );
    // Reads are not owner-only.
    assert_eq!(
        e.service.get_tags("c-foreign").await.unwrap(),
        BTreeMap::new()
    );
}

#[tokio::test]
async fn clear_all_on_start_removes_every_record() {
    let state = MemoryStateStore::new();
    let bus = MemoryBus::new();
    let first = WebSocketService::start(config(), Arc::new(state.clone()), Arc::new(bus.clone()))
        .await
        .unwrap();
    let feed = FeedServer::start(FeedConfig::default()).await.unwrap();
    first.connect(connect_req(feed.url("/ws"))).await.unwrap();
    first.connect(connect_req(feed.url("/ws"))).await.unwrap();
    first.shutdown(Duration::from_secs(5)).await;

    let keep = WebSocketService::start(config(), Arc::new(state.clone()), Arc::new(bus.clone()))
        .await
        .unwrap();
    assert_eq!(
        keep.list(&[]).await.unwrap().len(),
        2,
        "records survive a restart by default"
    );

    let cleared = WebSocketService::start(
        ServiceConfig {
            clear_all_on_start: true,
            ..config()
        },
        Arc::new(state.clone()),
        Arc::new(bus),
    )
    .await
    .unwrap();
    assert!(cleared.list(&[]).await.unwrap().is_empty());
}
