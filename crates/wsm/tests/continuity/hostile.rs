//! The arbiter under hostile input, on two legs of a scripted upstream: legs that disagree about
//! an id, ids that are not numbers, a venue that restarts its numbering, a 16 MiB frame. What
//! each does is in docs/wsm.md ("Continuity"); none may panic or publish a frame twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use wsm::venue::{SequenceRule, VenueOptions};
use wsm::ConnectRequest;

use super::support::events::{next, open_publishing};
use super::{service, TOPIC};

/// An upstream whose two sockets (0 and 1) each send `frames(n)` once both are open.
async fn two_legs(frames: fn(usize) -> Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let open = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let open = Arc::clone(&open);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let n = open.fetch_add(1, Ordering::SeqCst);
                while open.load(Ordering::SeqCst) < 2 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                for frame in frames(n) {
                    if ws.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                }
                // Held open until the test ends.
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    url
}

/// What a redundant, sequenced connection to `url` publishes: the first `n` frames' texts.
async fn published(url: String, n: usize) -> Vec<Value> {
    let (bus, service) = service("wsm-hostile").await;
    let req = ConnectRequest {
        url,
        auto_reconnect: true,
        venue: VenueOptions {
            redundancy: Some(2),
            sequence: Some(SequenceRule {
                value: "/u".into(),
                key: Some("/s".into()),
                prev: None,
            }),
            ..VenueOptions::default()
        },
        ..ConnectRequest::default()
    };
    let (id, mut frames, _) = open_publishing(&service, &bus, req, TOPIC).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let event = next(&mut frames).await;
        let text = event["data"].as_str().expect("text").to_owned();
        out.push(serde_json::from_str(&text).expect("JSON"));
    }
    // Nothing more: every other copy was a duplicate.
    let more = tokio::time::timeout(Duration::from_millis(500), next(&mut frames)).await;
    assert!(more.is_err(), "a frame was published twice: {more:?}");
    service.disconnect(&id).await.unwrap();
    out
}

fn us(frames: &[Value]) -> Vec<Value> {
    frames.iter().map(|f| f["u"].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legs_that_disagree_about_an_id_publish_it_once_from_the_first() {
    let url = two_legs(|n| {
        (1..=50)
            .map(|u| format!(r#"{{"s":"A","u":{u},"leg":{n}}}"#))
            .collect()
    })
    .await;
    let frames = published(url, 50).await;
    assert_eq!(us(&frames), (1..=50).map(Value::from).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_are_not_numbers_are_matched_by_fingerprint() {
    let url = two_legs(|_| {
        (1..=30)
            .map(|u| format!(r#"{{"s":"A","u":"x-{u}"}}"#))
            .collect()
    })
    .await;
    let frames = published(url, 30).await;
    let mut seen: Vec<String> = us(&frames)
        .iter()
        .map(|u| u.as_str().unwrap_or_default().to_owned())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30, "each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_venue_that_restarts_its_numbering_is_followed_once() {
    let url = two_legs(|_| {
        (100..=110)
            .chain(1..=10)
            .map(|u| format!(r#"{{"s":"A","u":{u}}}"#))
            .collect()
    })
    .await;
    let frames = published(url, 21).await;
    let want: Vec<Value> = (100..=110).chain(1..=10).map(Value::from).collect();
    assert_eq!(us(&frames), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixteen_mib_frame_on_both_legs_is_published_once() {
    let url = two_legs(|_| {
        let head = r#"{"s":"A","u":1,"pad":""#;
        let pad = (16 << 20) - head.len() - 2;
        vec![format!("{head}{}\"}}", "x".repeat(pad))]
    })
    .await;
    let frames = published(url, 1).await;
    assert_eq!(frames[0]["u"], 1);
    assert_eq!(
        frames[0]["pad"].as_str().map(str::len),
        Some((16 << 20) - 24)
    );
}
