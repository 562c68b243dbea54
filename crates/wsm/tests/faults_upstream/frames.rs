//! Frames wsm must refuse: a 100 MB frame, a frame over the limit, invalid UTF-8 in a text frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use wsm::lifecycle::LIFECYCLE_TOPIC;

use crate::support;
use crate::support::process::WsmProcess;
use crate::support::server::{Poll, Wsm};

use super::common::{
    connect, frames, kinds, lifecycle_until, listed, shared, start_publish, subscribe, Body,
    Published,
};
use super::hostile::Hostile;

const MB_100: u64 = 100 * 1000 * 1000;

/// A process's peak resident memory (`VmHWM`), in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in kB");
    kb * 1024
}

// ---------------------------------------------------------------------------------------------
// 1. A 100 MB frame.

/// The upstream sends 100 numbered frames, then announces a 100 MB binary frame and streams it;
/// after the reconnect it sends 100 more. A real `wsm serve` process with the default 16 MiB limit
/// refuses the frame from its header: its peak memory grows by far less than the frame, the
/// upstream could not even hand over the whole frame, and the connection closes with 1009 and
/// reconnects. Lost: exactly the refused frame.
#[test]
fn a_100_mb_frame_is_refused_unbuffered_and_the_connection_reconnects() {
    shared(async {
        const BEFORE: u64 = 100;
        const AFTER: u64 = 100;
        let (go, gate) = watch::channel(false);
        let streamed = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&streamed);
        let upstream = Hostile::start(move |mut s| {
            let mut gate = gate.clone();
            let streamed = Arc::clone(&counted);
            async move {
                if s.accept().await.is_err() {
                    return;
                }
                if s.index == 0 {
                    let _ = gate.wait_for(|go| *go).await;
                    for n in 1..=BEFORE {
                        if s.numbered(n).await.is_err() {
                            return;
                        }
                    }
                    s.stream_huge_frame(MB_100, &streamed).await;
                } else {
                    for n in BEFORE + 1..=BEFORE + AFTER {
                        if s.numbered(n).await.is_err() {
                            return;
                        }
                    }
                    s.hold().await;
                }
            }
        })
        .await;
        let wsm = WsmProcess::spawn(&["--reconnect-base-ms", "20"]);
        let mut client = wsm.client().await;
        let mut lifecycle = subscribe(&mut client, LIFECYCLE_TOPIC).await;
        let mut events = subscribe(&mut client, "faults.huge").await;
        let id = connect(&mut client, &upstream.url("/huge"), true).await;
        start_publish(&mut client, &id, "faults.huge").await;
        let peak_before = peak_rss(wsm.pid());
        go.send_replace(true);

        let got = frames(&mut events, (BEFORE + AFTER) as usize).await;
        for (i, frame) in got.iter().enumerate() {
            let n = i as u64 + 1;
            let epoch = if n <= BEFORE { 1 } else { 2 };
            assert_eq!(
                (frame.seq, frame.epoch, &frame.body),
                (n, epoch, &Body::Numbered(n)),
                "every frame before the big one and after the reconnect is published, in order"
            );
        }
        let events = lifecycle_until(&mut lifecycle, &id, "reconnecting").await;
        let why = &events.last().expect("a reconnecting event").reason;
        assert!(
            why.contains("at least 100000000 bytes")
                && why.contains("over the limit of 16777216 bytes")
                && why.contains("--max-message-bytes")
                && why.contains("closed with 1009"),
            "the reason names the size and the limit: {why}"
        );
        let connected = lifecycle_until(&mut lifecycle, &id, "connected").await;
        assert_eq!(connected.last().map(|e| e.epoch), Some(2));

        let peak_after = peak_rss(wsm.pid());
        let grew = peak_after.saturating_sub(peak_before);
        assert!(
            grew < 10 << 20,
            "wsm's peak memory grew by {grew} bytes ({peak_before} → {peak_after}): far less than the 100 MB frame"
        );
        let took = streamed.load(Ordering::SeqCst);
        eprintln!(
            "100 MB frame: wsm VmHWM {peak_before} → {peak_after} bytes; the upstream handed over {took} payload bytes"
        );
        assert!(
            took < MB_100 / 2,
            "wsm stopped reading at the header: the upstream handed over {took} of {MB_100} bytes"
        );
        assert_eq!(
            upstream.close_codes(),
            [1009],
            "closed as 'message too big'"
        );
        assert_eq!(upstream.accepted(), 2, "one reconnect");

        let sent = BEFORE + 1 + AFTER;
        let published = wsm.metric("wsm_frames_published_total").await as u64;
        assert_eq!(published, BEFORE + AFTER);
        assert_eq!(sent - published, 1, "lost: only the refused frame");
    });
}

/// Without auto-reconnect, the refused frame ends the connection: `disconnected` says why and
/// that nothing will reconnect, List shows it, and the frames before it were all published.
#[test]
fn a_frame_over_the_limit_without_auto_reconnect_ends_the_connection_with_a_clear_error() {
    shared(async {
        const BEFORE: u64 = 50;
        let (go, gate) = watch::channel(false);
        let streamed = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&streamed);
        let upstream = Hostile::start(move |mut s| {
            let mut gate = gate.clone();
            let streamed = Arc::clone(&counted);
            async move {
                if s.accept().await.is_err() || gate.wait_for(|go| *go).await.is_err() {
                    return;
                }
                for n in 1..=BEFORE {
                    if s.numbered(n).await.is_err() {
                        return;
                    }
                }
                s.stream_huge_frame(MB_100, &streamed).await;
            }
        })
        .await;
        let wsm = Wsm::start(&["--max-message-bytes", "65536"]).await;
        let mut client = wsm.client().await;
        let mut lifecycle = subscribe(&mut client, LIFECYCLE_TOPIC).await;
        let mut events = subscribe(&mut client, "faults.limit").await;
        let id = connect(&mut client, &upstream.url("/limit"), false).await;
        start_publish(&mut client, &id, "faults.limit").await;
        go.send_replace(true);

        let got = frames(&mut events, BEFORE as usize).await;
        let expected: Vec<Published> = (1..=BEFORE)
            .map(|n| Published {
                seq: n,
                epoch: 1,
                body: Body::Numbered(n),
            })
            .collect();
        assert_eq!(
            got, expected,
            "every frame before the refused one is published"
        );
        let events = lifecycle_until(&mut lifecycle, &id, "disconnected").await;
        assert_eq!(kinds(&events), ["connecting", "connected", "disconnected"]);
        let why = &events[2].reason;
        assert!(
            why.contains("at least 100000000 bytes, over the limit of 65536 bytes")
                && why.contains("--max-message-bytes")
                && why.ends_with("closed with 1009; auto_reconnect is off"),
            "the reason names the limit and what happens next: {why}"
        );
        let poll = Poll::new("List to show the connection disconnected");
        loop {
            let list = listed(&mut client).await;
            let status = list.iter().find(|c| c.id == id).map(|c| c.status.clone());
            if status.as_deref() == Some("disconnected") {
                break;
            }
            poll.tick().await;
        }
        upstream.wait_all_closed_by_client().await;
        assert_eq!(upstream.accepted(), 1, "no reconnect");
        assert_eq!(upstream.close_codes(), [1009]);
        let metrics = wsm.http_client().get("/metrics").await.body;
        let published = support::server::metric(&metrics, "wsm_frames_published_total") as u64;
        assert_eq!(published, BEFORE, "lost: only the refused frame");
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Invalid UTF-8 in a text frame.

/// A text frame that is not UTF-8 fails the connection (RFC 6455: close 1007), which reconnects.
/// Every valid frame, before and after, is published, a binary frame with the same bytes is
/// published as binary, and the invalid text never is. Lost: nothing valid.
#[test]
fn invalid_utf8_in_a_text_frame_closes_with_1007_reconnects_and_loses_nothing_valid() {
    shared(async {
        const INVALID: &[u8] = b"{\"n\":\xff\xfe}";
        let (go, gate) = watch::channel(false);
        let upstream = Hostile::start(move |mut s| {
            let mut gate = gate.clone();
            async move {
                if s.accept().await.is_err() {
                    return;
                }
                let sent = if s.index == 0 {
                    if gate.wait_for(|go| *go).await.is_err() {
                        return;
                    }
                    let mut sent = Ok(());
                    for n in 1..=25 {
                        sent = sent.and(s.numbered(n).await);
                    }
                    sent = sent.and(s.frame(0x2, INVALID).await);
                    for n in 26..=50 {
                        sent = sent.and(s.numbered(n).await);
                    }
                    // The bad frame, and nothing after it on this connection.
                    sent.and(s.frame(0x1, INVALID).await)
                } else {
                    let mut sent = Ok(());
                    for n in 51..=100 {
                        sent = sent.and(s.numbered(n).await);
                    }
                    sent
                };
                if sent.is_ok() {
                    s.hold().await;
                }
            }
        })
        .await;
        let wsm = Wsm::start(&["--reconnect-base-ms", "20"]).await;
        let mut client = wsm.client().await;
        let mut lifecycle = subscribe(&mut client, LIFECYCLE_TOPIC).await;
        let mut events = subscribe(&mut client, "faults.utf8").await;
        let id = connect(&mut client, &upstream.url("/utf8"), true).await;
        start_publish(&mut client, &id, "faults.utf8").await;
        go.send_replace(true);

        // 50 valid text frames and the binary one before, 50 after the reconnect.
        let got = frames(&mut events, 101).await;
        let mut expected = Vec::new();
        for n in 1..=25 {
            expected.push((1, Body::Numbered(n)));
        }
        expected.push((1, Body::Binary(INVALID.to_vec())));
        for n in 26..=50 {
            expected.push((1, Body::Numbered(n)));
        }
        for n in 51..=100 {
            expected.push((2, Body::Numbered(n)));
        }
        let expected: Vec<Published> = expected
            .into_iter()
            .enumerate()
            .map(|(i, (epoch, body))| Published {
                seq: i as u64 + 1,
                epoch,
                body,
            })
            .collect();
        assert_eq!(
            got, expected,
            "every valid frame, in order, seq without gaps"
        );

        let events = lifecycle_until(&mut lifecycle, &id, "reconnecting").await;
        let why = &events.last().expect("a reconnecting event").reason;
        assert!(
            why.contains("a text message that is not valid UTF-8")
                && why.contains("closed with 1007"),
            "the reason says what was wrong: {why}"
        );
        let connected = lifecycle_until(&mut lifecycle, &id, "connected").await;
        assert_eq!(connected.last().map(|e| e.epoch), Some(2));
        assert_eq!(
            upstream.close_codes(),
            [1007],
            "closed as 'invalid frame payload data'"
        );
        assert_eq!(upstream.accepted(), 2, "one reconnect");
        let metrics = wsm.http_client().get("/metrics").await.body;
        let published = support::server::metric(&metrics, "wsm_frames_published_total") as u64;
        assert_eq!(
            published, 101,
            "lost: nothing valid; the invalid frame is not published"
        );
    });
}
