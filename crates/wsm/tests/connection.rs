//! The connection layer against the real local feed server over loopback: publishing order,
//! correlation in both modes, reconnect with replay, keepalive, backpressure and closing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use feed_server::{FeedConfig, FeedHandle, FeedServer, ReceivedMessage};
use serde_json::Value;
use wsm::connection::{
    BackoffPolicy, Connection, ConnectionOptions, ConnectionSpec, DialError, SendError,
};
use wsm::lifecycle::{LifecycleEvent, LifecycleKind, LifecycleSink};
use wsm::model::{OutboundMessage, Status};
use wsm::publish::{FrameReceiver, InboundFrame, PublishQueue};
use wsm::security::NetworkPolicy;

/// Generous bound against hangs only.
const HANG: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Recorder(Mutex<Vec<LifecycleEvent>>);

impl LifecycleSink for Recorder {
    fn emit(&self, event: LifecycleEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorder {
    fn kinds(&self) -> Vec<LifecycleKind> {
        self.0.lock().unwrap().iter().map(|e| e.kind).collect()
    }
}

async fn feed(rate: u32) -> FeedHandle {
    FeedServer::start(FeedConfig {
        rate,
        ..FeedConfig::default()
    })
    .await
    .expect("feed server starts")
}

fn spec(url: String) -> ConnectionSpec {
    ConnectionSpec {
        id: "conn-1".into(),
        url,
        ..ConnectionSpec::default()
    }
}

/// Short backoff; loopback allowed (the feed server listens on 127.0.0.1).
fn fast_options() -> ConnectionOptions {
    ConnectionOptions {
        network: NetworkPolicy::allow_private(),
        backoff: BackoffPolicy {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(200),
            max_attempts: 20,
            jitter: 0.1,
        },
        ..ConnectionOptions::default()
    }
}

async fn open(
    spec: ConnectionSpec,
    options: ConnectionOptions,
    queue: usize,
) -> (Connection, FrameReceiver, Arc<Recorder>) {
    let (tx, rx) = PublishQueue::new(queue, 8 << 20);
    let recorder = Arc::new(Recorder::default());
    let conn = Connection::open(spec, options, tx, recorder.clone())
        .await
        .expect("connects");
    (conn, rx, recorder)
}

fn sequence_number(frame: &InboundFrame) -> u64 {
    let v: Value = serde_json::from_slice(&frame.payload).expect("feed frames are JSON");
    v["data"]["u"]
        .as_u64()
        .or_else(|| v["u"].as_u64())
        .expect("depth update has u")
}

async fn next(rx: &mut FrameReceiver) -> InboundFrame {
    tokio::time::timeout(HANG, rx.recv())
        .await
        .expect("a frame within the hang bound")
        .expect("frames channel open")
}

#[tokio::test]
async fn published_frames_keep_upstream_order_with_contiguous_seq() {
    let feed = feed(0).await;
    let (conn, mut rx, _) = open(spec(feed.url("/stream?count=5000")), fast_options(), 64).await;
    conn.set_topic(Some("market")).await.unwrap();
    let mut last_u = 0;
    let mut last_seq = 0;
    for _ in 0..2000 {
        let frame = next(&mut rx).await;
        assert_eq!(&*frame.topic, "market");
        assert!(frame.text);
        assert_eq!(frame.epoch, 1);
        assert_eq!(frame.seq, last_seq + 1, "seq has no gaps");
        let u = sequence_number(&frame);
        assert!(u > last_u, "upstream order kept: {u} after {last_u}");
        last_u = u;
        last_seq = frame.seq;
    }
    conn.close(1000, "done").await;
}

#[tokio::test]
async fn frames_are_not_published_without_a_topic() {
    let feed = feed(200).await;
    let (conn, mut rx, _) = open(spec(feed.url("/ws")), fast_options(), 64).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rx.try_recv().is_err(),
        "nothing published before StartPublish"
    );
    conn.set_topic(Some("t")).await.unwrap();
    assert_eq!(next(&mut rx).await.seq, 1);
    conn.set_topic(None).await.unwrap();
    while rx.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rx.try_recv().is_err(),
        "nothing published after StopPublish"
    );
}

#[tokio::test]
async fn correlated_text_send_returns_the_matching_reply_and_does_not_publish_it() {
    let feed = feed(0).await; // a feed as fast as the socket takes it, interleaved with the replies
    let (conn, mut rx, _) = open(spec(feed.url("/stream")), fast_options(), 1024).await;
    conn.set_topic(Some("t")).await.unwrap();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = tokio::spawn(async move {
        let mut published = Vec::new();
        loop {
            tokio::select! {
                // Keep only what is checked: a frame holds its share of the queue's byte budget.
                frame = rx.recv() => match frame {
                    Some(frame) => published.push((
                        frame.seq,
                        String::from_utf8_lossy(&frame.payload).contains("\"payload\""),
                    )),
                    None => break,
                },
                _ = &mut stopped => break,
            }
        }
        published
    });
    for i in 0..20 {
        let response = conn
            .send(
                Bytes::from(format!(r#"{{"op":"ping","n":{i}}}"#)),
                "application/json",
                HANG,
            )
            .await
            .expect("echoed");
        let v: Value = serde_json::from_slice(&response).unwrap();
        assert_eq!(v["payload"], serde_json::json!({"op":"ping","n":i}));
        assert!(v["id"].as_str().is_some_and(|id| id.len() == 36));
    }
    conn.set_topic(None).await.unwrap();
    let _ = stop.send(());
    let published = consumer.await.unwrap();
    assert!(
        published.len() > 100,
        "the feed kept flowing: {}",
        published.len()
    );
    assert!(
        published.iter().all(|(_, is_reply)| !is_reply),
        "matched replies are not published"
    );
    for pair in published.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1);
    }
}

#[tokio::test]
async fn correlated_binary_send_strips_the_uuid_prefix() {
    let feed = feed(10).await;
    let (conn, _rx, _) = open(spec(feed.url("/ws")), fast_options(), 64).await;
    let response = conn
        .send(
            Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
            "application/octet-stream",
            HANG,
        )
        .await
        .expect("echoed");
    assert_eq!(&response[..], &[0xde, 0xad, 0xbe, 0xef]);
    let sent = feed.received();
    let binary = sent
        .iter()
        .find_map(|r| r.message.as_binary().map(<[u8]>::to_vec))
        .expect("server got a binary request");
    assert_eq!(binary.len(), 20, "16-byte UUID prefix + payload");
}

#[tokio::test]
async fn a_reply_that_never_comes_times_out() {
    let feed = feed(10).await;
    let (conn, _rx, _) = open(spec(feed.url("/ws")), fast_options(), 64).await;
    let started = std::time::Instant::now();
    let err = conn
        .send(
            Bytes::from_static(b"\"no-reply\""),
            "application/json",
            Duration::from_millis(300),
        )
        .await
        .expect_err("no reply");
    assert_eq!(err, SendError::Timeout);
    assert_eq!(err.to_string(), "Request timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The connection still works afterwards.
    conn.send(Bytes::from_static(b"{}"), "application/json", HANG)
        .await
        .expect("later requests still answered");
}

#[tokio::test]
async fn reconnect_after_a_drop_replays_in_order_and_publishes_with_the_next_epoch() {
    let feed = feed(50).await;
    let mut s = spec(feed.url("/ws"));
    s.auto_reconnect = true;
    s.on_connect = vec![OutboundMessage {
        payload: Bytes::from_static(br#"{"method":"SUBSCRIBE","params":["a@depth"],"id":1}"#),
        content_type: "application/json".into(),
    }];
    let (conn, mut rx, lifecycle) = open(s, fast_options(), 1024).await;
    conn.set_topic(Some("t")).await.unwrap();
    conn.send_raw(
        OutboundMessage {
            payload: Bytes::from_static(br#"{"method":"SUBSCRIBE","params":["b@depth"],"id":2}"#),
            content_type: "application/json".into(),
        },
        true,
    )
    .await
    .unwrap();
    let before = next(&mut rx).await;
    assert_eq!(before.epoch, 1);

    assert_eq!(feed.drop_all().await, 1);
    let after = loop {
        let frame = next(&mut rx).await;
        if frame.epoch == 2 {
            break frame;
        }
    };
    assert!(
        after.seq > before.seq,
        "seq keeps counting across reconnects"
    );
    assert_eq!(conn.epoch(), 2);
    assert_eq!(conn.status(), Status::Connected);

    // The second connection got on_connect, then the replayed SUBSCRIBE, in that order.
    let second: Vec<String> = feed
        .received_on(2)
        .into_iter()
        .filter_map(|m| match m {
            ReceivedMessage::Text(t) => Some(t),
            ReceivedMessage::Binary(_) => None,
        })
        .collect();
    assert_eq!(
        second[..2],
        [
            r#"{"method":"SUBSCRIBE","params":["a@depth"],"id":1}"#,
            r#"{"method":"SUBSCRIBE","params":["b@depth"],"id":2}"#
        ]
    );
    let kinds = lifecycle.kinds();
    assert_eq!(
        kinds[..3],
        [
            LifecycleKind::Connected,
            LifecycleKind::Reconnecting,
            LifecycleKind::Connected
        ]
    );
}

#[tokio::test]
async fn keepalive_detects_a_stalled_upstream() {
    let feed = feed(0).await;
    let mut options = fast_options();
    options.ping_interval = Duration::from_millis(100);
    options.ping_timeout = Duration::from_millis(300);
    let mut s = spec(feed.url("/ws?streams=0"));
    s.auto_reconnect = true;
    let (conn, _rx, lifecycle) = open(s, options, 64).await;
    feed.stall(Duration::from_secs(3)).await;
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let reconnecting = lifecycle
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.kind == LifecycleKind::Reconnecting)
            .cloned();
        if let Some(event) = reconnecting {
            assert!(event.reason.contains("no pong"), "reason: {}", event.reason);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stall not detected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.close(1000, "done").await;
}

#[tokio::test]
async fn a_full_publish_queue_pauses_reading_reports_degraded_and_loses_nothing() {
    let feed = feed(0).await;
    let (conn, mut rx, lifecycle) = open(spec(feed.url("/ws?count=3000")), fast_options(), 8).await;
    conn.set_topic(Some("t")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // nobody reads the queue meanwhile
    assert!(lifecycle.kinds().contains(&LifecycleKind::Degraded));
    // Commands are still served while the socket waits for the queue.
    conn.set_topic(Some("t")).await.unwrap();
    let mut expected = 1;
    while expected <= 3000 {
        let frame = next(&mut rx).await;
        assert_eq!(frame.seq, expected);
        assert_eq!(sequence_number(&frame), expected);
        expected += 1;
    }
}

#[tokio::test]
async fn without_auto_reconnect_a_drop_disconnects_and_sends_fail_fast() {
    let feed = feed(10).await;
    let (conn, _rx, lifecycle) = open(spec(feed.url("/ws")), fast_options(), 64).await;
    feed.drop_all().await;
    assert_eq!(
        tokio::time::timeout(HANG, conn.wait_for(|s| s == Status::Disconnected))
            .await
            .unwrap(),
        Status::Disconnected
    );
    let err = conn
        .send_raw(
            OutboundMessage {
                payload: Bytes::from_static(b"x"),
                content_type: "text/plain".into(),
            },
            false,
        )
        .await
        .expect_err("not connected");
    assert_eq!(err.to_string(), "WebSocket is not connected");
    assert_eq!(lifecycle.kinds().last(), Some(&LifecycleKind::Disconnected));
}

#[tokio::test]
async fn close_sends_the_code_and_ends_the_connection() {
    let feed = feed(10).await;
    let (conn, _rx, _) = open(spec(feed.url("/ws")), fast_options(), 64).await;
    assert!(feed.wait_for_connections(1, HANG).await);
    conn.close(1001, "going away").await;
    assert_eq!(conn.status(), Status::Disconnected);
    assert!(
        feed.wait_for_connections(0, HANG).await,
        "server saw the close"
    );
}

#[tokio::test]
async fn a_refused_port_and_a_silent_handshake_fail_with_clear_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = listener.local_addr().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (tx, _rx) = PublishQueue::new(1, 1024);
    let sink: Arc<dyn LifecycleSink> = Arc::new(Recorder::default());
    let err = Connection::open(
        spec(format!("ws://{closed}/ws")),
        fast_options(),
        tx.clone(),
        sink.clone(),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, DialError::Failed { .. }), "{err}");
    let mut options = fast_options();
    options.connect_timeout = Duration::from_millis(300);
    let err = Connection::open(spec(format!("ws://{silent}/ws")), options, tx, sink)
        .await
        .expect_err("silent");
    assert!(matches!(err, DialError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("timed out after 300 ms"));
    drop(listener);
}

#[tokio::test]
async fn the_byte_budget_bounds_the_queue_even_when_frames_would_fit() {
    let feed = feed(0).await;
    let (tx, mut rx) = PublishQueue::new(100_000, 2_000); // room for many frames, ~20 by size
    let recorder = Arc::new(Recorder::default());
    let conn = Connection::open(
        spec(feed.url("/ws?count=500&size=100")),
        fast_options(),
        tx,
        recorder.clone(),
    )
    .await
    .expect("connects");
    conn.set_topic(Some("t")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut queued = Vec::new();
    while let Ok(frame) = rx.try_recv() {
        queued.push(frame);
    }
    assert!(
        queued.len() <= 21,
        "at most the byte budget is queued, got {} frames",
        queued.len()
    );
    assert!(recorder.kinds().contains(&LifecycleKind::Degraded));
    let mut expected = queued.len() as u64 + 1;
    drop(queued); // releases their budget
    while expected <= 500 {
        assert_eq!(next(&mut rx).await.seq, expected);
        expected += 1;
    }
}

// The callback's error type is tungstenite's, whose size is not ours to choose.
#[allow(clippy::result_large_err)]
#[tokio::test]
async fn handshake_sends_custom_headers_and_offers_subprotocols() {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let callback = |req: &Request, mut resp: Response| {
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let _ = seen_tx.send((
                header("authorization"),
                header("x-desk"),
                header("sec-websocket-protocol"),
            ));
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", "v2.feed".parse().unwrap());
            Ok(resp)
        };
        let ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(ws);
    });
    let mut s = spec(format!("ws://{addr}/ws"));
    s.headers = vec![
        ("Authorization".into(), "Bearer t0ken".into()),
        ("X-Desk".into(), "fx".into()),
    ];
    s.subprotocols = vec!["v2.feed".into(), "v1.feed".into()];
    let (conn, _rx, _) = open(s, fast_options(), 8).await;
    let (auth, desk, protocols) = seen_rx.await.unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer t0ken"));
    assert_eq!(desk.as_deref(), Some("fx"));
    assert_eq!(protocols.as_deref(), Some("v2.feed, v1.feed"));
    assert_eq!(conn.status(), Status::Connected);
}

#[tokio::test]
async fn a_fast_feed_arrives_in_runs_that_hold_the_queue_budget_until_dropped() {
    let feed = feed(0).await; // as fast as the socket takes it: frames arrive back to back
    let (conn, mut rx, _) = open(spec(feed.url("/stream?count=20000")), fast_options(), 4096).await;
    conn.set_topic(Some("runs")).await.unwrap();
    let (mut frames, mut runs, mut largest, mut last_seq) = (0usize, 0usize, 0usize, 0u64);
    let mut held = Vec::new();
    while frames < 20000 {
        let run = tokio::time::timeout(HANG, rx.recv_run())
            .await
            .expect("a run within the hang bound")
            .expect("queue open");
        assert_eq!(&*run.topic, "runs");
        assert!(run.frames.len() <= 4096, "a run fits the frame budget");
        for frame in &run.frames {
            assert_eq!(frame.seq, last_seq + 1, "seq has no gaps across runs");
            last_seq = frame.seq;
        }
        frames += run.frames.len();
        runs += 1;
        largest = largest.max(run.frames.len());
        // Runs are at most a quarter of this queue: holding three leaves room for the next.
        held.push(run);
        if held.len() == 3 {
            held.clear(); // hands the budget back
        }
    }
    assert!(
        largest > 1 && runs < frames,
        "back-to-back frames are handed over in runs ({runs} runs for {frames} frames)"
    );
    conn.close(1000, "done").await;
}
