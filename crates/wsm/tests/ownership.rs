//! Two instances on one Redis: a connection-specific call that reaches the instance not owning the
//! connection is FAILED_PRECONDITION naming the owner, and counted as an ownership miss. (Forwarding
//! to the owner comes with the multi-instance work; until then this is the contract.)

mod support;

use support::server::{metric, Wsm};
use wsm::api::proto;
use wsm_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_another_instances_connection_is_an_ownership_miss() {
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = support::server::feed(10).await;
    let shared = ["--state", "redis", "--redis-url", url.as_str()];
    let owner = Wsm::start(&[&shared[..], &["--instance-id", "wsm-owner"]].concat()).await;
    let other = Wsm::start(&[&shared[..], &["--instance-id", "wsm-other"]].concat()).await;

    let id = owner
        .client()
        .await
        .connect(proto::ConnectRequest {
            url: feed.url("/ws"),
            ..Default::default()
        })
        .await
        .expect("Connect on the owner")
        .into_inner()
        .id;

    let mut client = other.client().await;
    let listed = client
        .list(proto::ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert_eq!(listed.len(), 1, "List shows every instance's connections");
    assert_eq!(listed[0].instance_id, "wsm-owner");

    let before = metric(
        &other.http_client().get("/metrics").await.body,
        "wsm_ownership_misses_total",
    );
    let err = client
        .disconnect(proto::DisconnectRequest { id: id.clone() })
        .await
        .expect_err("the other instance does not own it");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "Connection owned by different instance: wsm-owner"
    );
    let after = metric(
        &other.http_client().get("/metrics").await.body,
        "wsm_ownership_misses_total",
    );
    assert_eq!(after, before + 1.0);

    // Reads need no ownership.
    let tags = client
        .get_tags(proto::GetTagsRequest { id })
        .await
        .expect("GetTags on any instance");
    assert!(tags.into_inner().tags.is_empty());
}
