//! The Dapr sidecar answering 500s, then too slowly, then healthy again.

use std::time::Duration;

use feed_server::FeedConfig;
use tokio::time::Instant;
use tonic::Code;
use wsm::proto;
use wsm_testkit::{DaprSidecar, RedisServer};

use crate::support::process::WsmProcess;
use crate::support::server::{bounded, feed_with, Poll};

use super::common::{
    assert_updates_complete, open_publishing, probe, published, stop_and_drain, tally, Metrics,
    ONE_AT_A_TIME,
};

/// The gRPC status of a failed call, or panics naming the call.
fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) -> tonic::Status {
    match result {
        Ok(ok) => panic!("{what} succeeded while the sidecar failed: {ok:?}"),
        Err(status) => status,
    }
}

/// wsm on the Dapr state store and pub/sub, through the Dapr-API test sidecar (which writes a real
/// Redis), while a feed publishes 500 frames/s. The sidecar answers 500 for a while, then answers
/// later than wsm's 5 s Dapr timeout, then is healthy again. Meanwhile: wsm keeps running and
/// reports the fault (`wsm_publish_errors_total`, `wsm_degraded_total`, `/ready` 503); calls that
/// need the shared store fail with `UNAVAILABLE` naming it and the cause (HTTP 500, timed out),
/// and `GetTag` is served from the owner's copy. Afterwards every frame read is in the stream
/// with `seq` 1..=n: gaps 0; duplicates only where a call that failed had landed (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dapr_sidecar_failing_then_timing_out() {
    let _one = ONE_AT_A_TIME.lock().await;
    bounded(async {
        const TOPIC: &str = "faults.dapr";
        let redis = RedisServer::start();
        let sidecar =
            DaprSidecar::start(&redis.url(), "websocketmanager", "statestore", "pubsub").await;
        let port = sidecar.port().to_string();
        let wsm = WsmProcess::spawn(&[
            "--state",
            "dapr",
            "--pubsub",
            "dapr",
            "--dapr-http-port",
            &port,
        ]);
        let feed = feed_with(FeedConfig {
            rate: 500,
            auto_stream: false,
            ..FeedConfig::default()
        })
        .await;
        let subscribe = r#"{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":1}"#;
        let id = open_publishing(&wsm, &feed.url("/ws"), false, &[], TOPIC, &[subscribe]).await;
        let mut client = wsm.client().await;
        let set_tag = |value: &str| proto::SetTagRequest {
            id: id.clone(),
            key: "phase".into(),
            value: value.into(),
        };
        client
            .set_tag(set_tag("healthy"))
            .await
            .expect("SetTag while healthy");
        let poll = Poll::new("frames to be published");
        while Metrics::scrape(&wsm).await.published() < 200 {
            poll.tick().await;
        }

        // 1. Every sidecar call answers 500.
        sidecar.set_failing(true);
        let errors = Metrics::scrape(&wsm).await.get("wsm_publish_errors_total");
        let status = refused(client.set_tag(set_tag("failing")).await, "SetTag");
        println!("SetTag during 500s: {status:?}");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("state store") && status.message().contains("500"),
            "the error names the state store and the sidecar's answer: {}",
            status.message()
        );
        let status = refused(client.list(proto::ListRequest::default()).await, "List");
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
        assert!(status.message().contains("500"), "{}", status.message());
        let tag = client
            .get_tag(proto::GetTagRequest {
                id: id.clone(),
                key: "phase".into(),
            })
            .await
            .expect("GetTag is served from the owner's copy")
            .into_inner()
            .value;
        assert!(["healthy", "failing"].contains(&tag.as_str()), "{tag}");
        assert_eq!(
            probe(&wsm, "/ready").await,
            503,
            "/ready while the sidecar fails"
        );
        assert_eq!(probe(&wsm, "/health").await, 200);
        let poll = Poll::new("publishing to fail a few times");
        while Metrics::scrape(&wsm).await.get("wsm_publish_errors_total") < errors + 3 {
            poll.tick().await;
        }

        // 2. Every sidecar call answers after wsm's 5 s timeout.
        sidecar.set_failing(false);
        sidecar.set_delay(Duration::from_secs(6));
        let errors = Metrics::scrape(&wsm).await.get("wsm_publish_errors_total");
        let started = Instant::now();
        let status = refused(client.set_tag(set_tag("slow")).await, "SetTag");
        println!(
            "SetTag during timeouts: {status:?} after {:?}",
            started.elapsed()
        );
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("state store") && status.message().contains("timed out"),
            "the error names the state store and the timeout: {}",
            status.message()
        );
        let poll = Poll::new("a publish to time out");
        while Metrics::scrape(&wsm).await.get("wsm_publish_errors_total") < errors + 1 {
            poll.tick().await;
        }
        let during = Metrics::scrape(&wsm).await;
        // The owner's copy has what the failed SetTags asked for; the shared copy does not yet.
        let tag = client
            .get_tag(proto::GetTagRequest {
                id: id.clone(),
                key: "phase".into(),
            })
            .await
            .expect("GetTag")
            .into_inner()
            .value;
        println!("GetTag after two failed SetTags: {tag:?}");

        // 3. Healthy again.
        sidecar.set_delay(Duration::ZERO);
        let poll = Poll::new("/ready after the sidecar recovered");
        while probe(&wsm, "/ready").await != 200 {
            poll.tick().await;
        }
        client
            .set_tag(set_tag("recovered"))
            .await
            .expect("SetTag after recovery");
        let listed = client
            .list(proto::ListRequest::default())
            .await
            .expect("List after recovery")
            .into_inner()
            .connections;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, "connected");
        assert_eq!(
            listed[0].tags.get("phase").map(String::as_str),
            Some("recovered")
        );

        let (sent, read) = stop_and_drain(&feed, &wsm).await;
        let poll = Poll::new("the feed's last update in the stream");
        let events = loop {
            let events = published(&redis.url(), TOPIC).await;
            if events.iter().any(|e| e.update == Some(sent)) {
                break events;
            }
            poll.tick().await;
        };
        let t = tally(&events, read);
        println!(
            "errors {} degraded {}; wsm read {read}; stream has {} entries: {} distinct, {} \
             duplicates ({} late), {} gaps",
            during.get("wsm_publish_errors_total"),
            during.get("wsm_degraded_total"),
            events.len(),
            t.distinct,
            t.duplicates,
            t.late,
            t.gaps
        );
        assert_eq!(
            Metrics::scrape(&wsm).await.get("wsm_frames_dropped_total"),
            0,
            "nothing dropped"
        );
        assert_eq!(t.gaps, 0, "lost frames");
        assert_eq!(t.distinct, read, "every frame read is published");
        assert_updates_complete(&events, sent, "dapr faults");
        assert!(during.get("wsm_degraded_total") >= 1, "degraded reported");
        assert!(
            during.get("wsm_lifecycle_events_dropped_total") >= 1,
            "lifecycle events the sidecar did not take are counted"
        );
    })
    .await;
}
