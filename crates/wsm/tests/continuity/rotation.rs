//! Planned changes of socket, make-before-break: each must lose nothing and keep the epoch, on a
//! sequenced feed and on an id-less one, 5 runs each.

use std::time::Duration;

use wsm::venue::VenueOptions;

use super::{assert_continuous, notice, venue, Ids, Run};

const RUNS: usize = 5;

/// `max_lifetime_ms` of 1 s: a run of 2.5 s rotates at least twice.
async fn lifetime(ids: Ids) {
    for run in 0..RUNS {
        let venue_options = VenueOptions {
            max_lifetime_ms: Some(1000),
            ..VenueOptions::default()
        };
        let r = Run::start("wsm-lifetime", venue().await, ids, "", venue_options).await;
        r.wait_for("rotated", 2).await;
        r.frames_after(100).await;
        let frames = r.stop().await;
        assert_continuous(&frames, 1000, &format!("lifetime {ids:?} run {run}"));
        for (kind, reason) in r.events() {
            if kind == "rotated" {
                assert!(reason.contains("overlap proven"), "{reason}");
            }
            assert_ne!(kind, "gap", "{reason}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_rotations_lose_nothing_sequenced() {
    lifetime(Ids::Sequenced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_rotations_lose_nothing_by_fingerprint() {
    lifetime(Ids::Fingerprint).await;
}

/// The venue's `serverShutdown` 1 s before it would close each socket (lifetime 1.5 s).
async fn notices(ids: Ids) {
    for run in 0..RUNS {
        let venue_options = VenueOptions {
            notice: Some(notice()),
            ..VenueOptions::default()
        };
        let query = "&lifetime_ms=1500&notice_ms=1000&close_code=1001";
        let r = Run::start("wsm-notice", venue().await, ids, query, venue_options).await;
        r.wait_for("rotated", 2).await;
        r.frames_after(100).await;
        let frames = r.stop().await;
        assert_continuous(&frames, 500, &format!("notice {ids:?} run {run}"));
        assert_eq!(
            r.feed.stats().lifetime_closes,
            0,
            "every old socket was closed by wsm before the venue's close"
        );
        assert_eq!(r.count("gap"), 0, "{:?}", r.events());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venue_notices_lose_nothing_sequenced() {
    notices(Ids::Sequenced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venue_notices_lose_nothing_by_fingerprint() {
    notices(Ids::Fingerprint).await;
}

/// An operator's Rotate, three times a run.
async fn operator(ids: Ids) {
    for run in 0..RUNS {
        let r = Run::start(
            "wsm-rotate",
            venue().await,
            ids,
            "",
            VenueOptions::default(),
        )
        .await;
        for _ in 0..3 {
            r.frames_after(200).await;
            let rotated = r.service.rotate(&r.id).await.expect("rotates");
            assert!(rotated.overlap, "{rotated:?}");
            assert!(rotated.duplicates > 0, "{rotated:?}");
            assert!(rotated.took < Duration::from_secs(5), "{rotated:?}");
        }
        r.frames_after(100).await;
        let frames = r.stop().await;
        assert_continuous(&frames, 600, &format!("Rotate {ids:?} run {run}"));
        assert_eq!(r.count("rotated"), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_loses_nothing_sequenced() {
    operator(Ids::Sequenced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_loses_nothing_by_fingerprint() {
    operator(Ids::Fingerprint).await;
}
