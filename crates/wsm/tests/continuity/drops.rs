//! Unplanned changes: a venue's close with 1001 and a drop without a close frame. With one leg the
//! first reconnect goes out at once, so little is lost, and the gap is announced with exactly the
//! missing ids; with `redundancy: 2` nothing is lost at all. A stalled leg loses nothing either.

use std::time::Duration;

use wsm::venue::VenueOptions;

use super::{assert_continuous, count, legs_open, venue, Ids, Run, Seen, RATE};

/// At 1,000 frames/s on loopback, the most one unplanned drop of the only leg may lose.
const MOST_LOST: usize = 50;

fn redundant() -> VenueOptions {
    VenueOptions {
        redundancy: Some(2),
        ..VenueOptions::default()
    }
}

/// The ranges the `gap` events name: "... (A..=B)".
fn announced(run: &Run) -> Vec<u64> {
    let mut ids = Vec::new();
    for (kind, reason) in run.events() {
        if kind != "gap" {
            continue;
        }
        let Some(range) = reason.rsplit('(').next().and_then(|r| r.strip_suffix(')')) else {
            continue;
        };
        if let Some((a, b)) = range.split_once("..=") {
            if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                ids.extend(a..=b);
            }
        }
    }
    ids
}

/// Each epoch's frames are contiguous and epochs only grow: a gap is always a new epoch.
fn assert_epochs_follow_gaps(frames: &[Seen], gaps: usize) {
    let first = frames.first().map_or(0, |f| f.epoch);
    for w in frames.windows(2) {
        assert!(w[1].epoch >= w[0].epoch, "epochs never go back");
        assert_eq!(w[1].seq, w[0].seq + 1, "seq keeps counting across a gap");
    }
    let last = frames.last().map_or(0, |f| f.epoch);
    assert_eq!(last - first, gaps as u64, "one new epoch per announced gap");
}

async fn lost_when_alone(ids: Ids, query: &str, drop_orders: bool) {
    let r = Run::start(
        "wsm-alone",
        venue().await,
        ids,
        query,
        VenueOptions::default(),
    )
    .await;
    r.frames_after(300).await;
    let drops = 2;
    if drop_orders {
        for _ in 0..drops {
            let live = r.feed.live_connections();
            assert_eq!(live.len(), 1);
            assert!(r.feed.drop_connection(live[0]).await);
            r.wait_for("connected", 1 + r.count("connected")).await;
            r.frames_after(300).await;
        }
    } else {
        r.wait_for("gap", drops).await;
        r.frames_after(300).await;
    }
    let frames = r.stop().await;
    let c = count(&frames);
    let gaps = r.count("gap");
    println!(
        "{ids:?}{query}: {} venue ids lost in {gaps} gaps ({} published)",
        c.missing.len(),
        c.ids
    );
    assert!(gaps >= drops, "{:?}", r.events());
    assert!(
        c.missing.len() <= MOST_LOST * gaps,
        "{} ids lost in {gaps} drops at {RATE}/s: the first reconnect must go out at once",
        c.missing.len()
    );
    assert_eq!((c.duplicates, c.reordered), (0, 0));
    if ids == Ids::Sequenced {
        assert_eq!(
            announced(&r),
            c.missing,
            "the gap events name exactly what is missing"
        );
    }
    assert_epochs_follow_gaps(&frames, gaps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_of_the_only_leg_loses_little_and_announces_the_missing_ids() {
    lost_when_alone(Ids::Sequenced, "", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_of_the_only_id_less_leg_loses_little_and_announces_a_time_span() {
    lost_when_alone(Ids::Fingerprint, "", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_with_1001_of_the_only_leg_reconnects_at_once_and_announces_the_missing_ids() {
    lost_when_alone(Ids::Sequenced, "&lifetime_ms=1000&close_code=1001", false).await;
}

async fn closes_with_two_legs(ids: Ids) {
    for run in 0..5 {
        let query = "&lifetime_ms=1000&close_code=1001";
        let r = Run::start("wsm-1001", venue().await, ids, query, redundant()).await;
        r.frames_after(2500).await;
        let frames = r.stop().await;
        assert!(r.feed.stats().lifetime_closes >= 2);
        assert_continuous(&frames, 2000, &format!("1001 closes {ids:?} run {run}"));
        assert_eq!(r.count("gap"), 0, "{:?}", r.events());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_with_1001_lose_nothing_with_two_legs_sequenced() {
    closes_with_two_legs(Ids::Sequenced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_with_1001_lose_nothing_with_two_legs_by_fingerprint() {
    closes_with_two_legs(Ids::Fingerprint).await;
}

async fn drops_with_two_legs(ids: Ids) {
    let r = Run::start("wsm-two-legs", venue().await, ids, "", redundant()).await;
    let first = legs_open(&r.feed, 2).await;
    r.frames_after(300).await;
    // One leg, with no close frame; then, once it is back, the other.
    assert!(r.feed.drop_connection(first[0]).await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = legs_open(&r.feed, 2).await;
    r.frames_after(300).await;
    assert!(r.feed.drop_connection(first[1]).await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let last = legs_open(&r.feed, 2).await;
    assert!(!again.contains(&first[0]) && !last.contains(&first[1]));
    r.frames_after(300).await;
    let frames = r.stop().await;
    assert_continuous(&frames, 900, &format!("two legs, drops, {ids:?}"));
    assert_eq!(r.count("gap"), 0, "{:?}", r.events());
    assert!(r.count("degraded") >= 2, "each lost leg is announced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_legs_a_drop_of_either_loses_nothing_sequenced() {
    drops_with_two_legs(Ids::Sequenced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_legs_a_drop_of_either_loses_nothing_by_fingerprint() {
    drops_with_two_legs(Ids::Fingerprint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_legs_a_stalled_leg_loses_nothing() {
    for ids in [Ids::Sequenced, Ids::Fingerprint] {
        let r = Run::start("wsm-stall", venue().await, ids, "", redundant()).await;
        let legs = legs_open(&r.feed, 2).await;
        r.frames_after(300).await;
        assert!(
            r.feed
                .stall_connection(legs[0], Duration::from_secs(2))
                .await
        );
        r.frames_after(2500).await;
        let frames = r.stop().await;
        assert_continuous(&frames, 2500, &format!("a stalled leg, {ids:?}"));
    }
}

/// A correlated Send on two legs: it goes out on one leg, its response comes back there only, is
/// matched once and never published; every venue id still arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_legs_a_correlated_send_is_answered_once_and_not_published() {
    let r = Run::start("wsm-send", venue().await, Ids::Sequenced, "", redundant()).await;
    legs_open(&r.feed, 2).await;
    r.frames_after(200).await;
    for i in 0..20 {
        let payload = bytes::Bytes::from(format!(r#"{{"ask":{i}}}"#));
        let answer = r
            .service
            .send(&r.id, payload, "application/json", 5000)
            .await
            .expect("answered");
        let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON");
        assert_eq!(
            answer["payload"],
            serde_json::json!({"ask": i}),
            "the echo's payload"
        );
    }
    r.frames_after(200).await;
    let frames = r.stop().await;
    // Responses would be frames without a venue id; every published frame has one.
    assert!(
        frames.iter().all(|f| f.id.is_some()),
        "a response was published"
    );
    assert_continuous(&frames, 400, "two legs with Sends");
}
