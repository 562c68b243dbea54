//! Calls reaching an instance that does not own the connection, and the peer key they need.

use std::time::Duration;

use serde_json::Value;
use tonic::Code;
use wsm::proto;
use wsm_testkit::{stream_entries, RedisServer};

use crate::support;
use crate::support::process::WsmProcess;
use crate::support::server::Poll;

use super::common::{connect, feed, instance, list, one_at_a_time};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_call_reaching_a_non_owner_is_served_by_forwarding() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = feed(20).await;
    let a = instance(&url, "wsm-a", &[]);
    let b = instance(&url, "wsm-b", &[]);
    let c = instance(&url, "wsm-c", &[]);
    let ids = [
        connect(&a, &feed.url("/ws"), "fwd.a").await,
        connect(&b, &feed.url("/ws"), "fwd.b").await,
        connect(&c, &feed.url("/ws"), "fwd.c").await,
    ];
    // List on any instance shows every connection with its owner.
    for via in [&a, &b, &c] {
        let listed = list(via).await;
        let owners: Vec<&str> = ids
            .iter()
            .map(|id| listed[id].instance_id.as_str())
            .collect();
        assert_eq!(owners, ["wsm-a", "wsm-b", "wsm-c"]);
        assert!(listed.values().all(|c| c.status == "connected"));
    }

    // Every connection-specific call on A's connection, sent to B.
    let id = ids[0].clone();
    let mut via_b = b.client().await;
    via_b
        .set_tag(proto::SetTagRequest {
            id: id.clone(),
            key: "desk".into(),
            value: "fx".into(),
        })
        .await
        .expect("SetTag through B");
    via_b
        .set_tags(proto::SetTagsRequest {
            id: id.clone(),
            tags: [
                ("desk".to_string(), "rates".to_string()),
                ("venue".into(), "x".into()),
            ]
            .into(),
        })
        .await
        .expect("SetTags through B");
    let tag = c
        .client()
        .await
        .get_tag(proto::GetTagRequest {
            id: id.clone(),
            key: "desk".into(),
        })
        .await
        .expect("GetTag through C")
        .into_inner()
        .value;
    assert_eq!(tag, "rates");
    let tags = via_b
        .get_tags(proto::GetTagsRequest { id: id.clone() })
        .await
        .expect("GetTags through B")
        .into_inner()
        .tags;
    assert_eq!(tags.len(), 2);
    let reply = via_b
        .send(proto::SendRequest {
            id: id.clone(),
            message: br#"{"q":"forwarded"}"#.to_vec(),
            timeout_ms: 5000,
            content_type: "application/json".into(),
        })
        .await
        .expect("Send through B")
        .into_inner()
        .response;
    let reply: Value = serde_json::from_slice(&reply).expect("the feed's JSON echo");
    assert_eq!(reply["payload"]["q"], "forwarded");
    via_b
        .send_raw(proto::SendRawRequest {
            id: id.clone(),
            message: b"raw through b".to_vec(),
            content_type: "text/plain".into(),
            replay_on_reconnect: false,
        })
        .await
        .expect("SendRaw through B");
    assert!(
        feed.wait_for_received(Duration::from_secs(10), |r| r.connection == 1
            && r.message.as_text() == Some("raw through b"))
            .await,
        "the upstream of A's connection received B's SendRaw"
    );
    via_b
        .start_publish(proto::StartPublishRequest {
            id: id.clone(),
            topic: "fwd.moved".into(),
        })
        .await
        .expect("StartPublish through B");
    assert_eq!(list(&c).await[&id].topic, "fwd.moved");
    let poll = Poll::new("frames on the topic set through B");
    while stream_entries(&url, "fwd.moved").await.is_empty() {
        poll.tick().await;
    }
    via_b
        .stop_publish(proto::StopPublishRequest { id: id.clone() })
        .await
        .expect("StopPublish through B");
    assert_eq!(list(&a).await[&id].topic, "");
    // Rotate through B is answered by A, the owner, whatever the rotation's outcome.
    let code = match via_b.rotate(proto::RotateRequest { id: id.clone() }).await {
        Ok(_) => "OK",
        Err(status) => {
            // Without make-before-break in the socket task, the owner's new leg never opens.
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(status.message().contains("rotation"), "{status:?}");
            "UNAVAILABLE"
        }
    };
    let rotate = format!(r#"wsm_requests_total{{method="Rotate",code="{code}"}}"#);
    assert_eq!(a.metric(&rotate).await, 1.0, "A served the Rotate");
    // Each of B's calls but the read-only GetTags was forwarded (GetTag/GetTags read the shared
    // record on any instance).
    assert_eq!(b.metric("wsm_forwarded_total").await, 7.0);
    assert_eq!(a.metric("wsm_forwarded_total").await, 0.0);
    assert_eq!(
        list(&a).await[&id].instance_id,
        "wsm-a",
        "no ownership moved"
    );

    // One hop only: a call marked as forwarded is answered by the instance it reaches.
    let mut marked = tonic::Request::new(proto::DisconnectRequest { id: id.clone() });
    marked
        .metadata_mut()
        .insert(wsm::cluster::HOP_HEADER, "wsm-x".parse().unwrap());
    let err = c
        .client()
        .await
        .disconnect(marked)
        .await
        .expect_err("a forwarded call is not forwarded again");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "Connection owned by different instance: wsm-a"
    );
    assert_eq!(c.metric("wsm_ownership_misses_total").await, 1.0);

    c.client()
        .await
        .disconnect(proto::DisconnectRequest { id: id.clone() })
        .await
        .expect("Disconnect through C");
    assert!(!list(&b).await.contains_key(&id));
    let poll = Poll::new("A's socket closed by the forwarded Disconnect");
    while feed.connections() != 2 {
        poll.tick().await;
    }
}

/// `message` with the client key and, when given, a forged hop marker.
fn keyed<T>(message: T, forwarded_by: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", "client-key".parse().expect("ASCII"));
    if let Some(hop) = forwarded_by {
        request
            .metadata_mut()
            .insert("x-wsm-forwarded-by", hop.parse().expect("ASCII"));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_needs_the_peer_key_goes_only_to_allowed_peers_and_caps_the_hop_header() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = feed(10).await;
    let keys = ["--api-keys", "client-key"];
    let peer = ["--peer-key", "instances-only"];
    let owner = instance(&url, "wsm-owner", &[&keys[..], &peer[..]].concat());
    // No peer key: its forwarded calls carry no credential (the client's key is never passed on).
    let keyless = instance(&url, "wsm-keyless", &keys);
    // Peers only in 10/8, and the owner advertises 127.0.0.1.
    let fenced = WsmProcess::spawn_with(
        &[
            &["--state", "redis", "--pubsub", "redis", "--redis-url", &url][..],
            &[
                "--instance-id",
                "wsm-fenced",
                "--heartbeat-interval-seconds",
                "1",
            ],
            &["--stale-threshold-seconds", "3"],
            &keys[..],
            &peer[..],
            &["--peer-allowed-cidrs", "10.0.0.0/8"],
        ]
        .concat(),
        &support::process::Spawn {
            capture_logs: true,
            ..Default::default()
        },
    );
    let id = owner
        .client()
        .await
        .connect(keyed(
            proto::ConnectRequest {
                url: feed.url("/ws"),
                ..Default::default()
            },
            None,
        ))
        .await
        .expect("Connect")
        .into_inner()
        .id;
    let set_tag = || proto::SetTagRequest {
        id: id.clone(),
        key: "k".into(),
        value: "v".into(),
    };

    let status = keyless
        .client()
        .await
        .set_tag(keyed(set_tag(), None))
        .await
        .expect_err("the owner refuses a call without the peer key");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("--peer-key"), "{status:?}");

    let status = fenced
        .client()
        .await
        .set_tag(keyed(set_tag(), None))
        .await
        .expect_err("the owner's address is outside the allowed CIDRs");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("--peer-allowed-cidrs"),
        "{status:?}"
    );

    // A caller's own hop marker: answered as a hop (not forwarded again), logged cut short.
    let hop = "x".repeat(8000);
    let status = fenced
        .client()
        .await
        .set_tag(keyed(set_tag(), Some(&hop)))
        .await
        .expect_err("one hop only");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let poll = Poll::new("the hop warning");
    while !fenced
        .logs()
        .contains("a forwarded call reached a non-owner")
    {
        poll.tick().await;
    }
    let logs = fenced.logs();
    assert!(
        !logs.contains(&"x".repeat(100)),
        "the header is cut short in the log"
    );
    assert!(logs.contains("8000 bytes in all"), "{logs}");

    // Nobody claimed the live owner's connection on the way.
    let listed = owner
        .client()
        .await
        .list(keyed(proto::ListRequest::default(), None))
        .await
        .expect("List")
        .into_inner()
        .connections;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].instance_id, "wsm-owner");
    assert!(listed[0].tags.is_empty(), "no SetTag got through");
    drop(keyless);
}
