//! Venue protocols (SPEC 9) against scripted upstreams on real sockets: each test's upstream plays
//! one venue behaviour (gzip frames, a silent pong, a notice, a sequence gap, a venue ping) and the
//! test reads what wsm published and announced on the memory bus.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use wsm::backends::memory::{MemoryBus, MemoryStateStore, Subscription};
use wsm::backends::StateStore;
use wsm::connection::BackoffPolicy;
use wsm::security::NetworkPolicy;
use wsm::venue::VenueOptions;
use wsm::{ConnectRequest, ServiceConfig, WebSocketService};

mod support;
use support::events::{next, next_kind, open_publishing, HANG};

const TOPIC: &str = "venue.frames";

type Socket = WebSocketStream<TcpStream>;
type Script =
    Arc<dyn Fn(Socket, usize, Log) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What the upstream's sessions received, by connection number (0 = the first).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(usize, String)>>>);

impl Log {
    fn push(&self, conn: usize, text: String) {
        self.0.lock().unwrap().push((conn, text));
    }
    fn texts(&self) -> Vec<(usize, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// An upstream that runs `script` for every accepted connection.
struct Scripted {
    url: String,
    log: Log,
    accepted: Arc<AtomicUsize>,
}

async fn scripted(script: Script) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let log = Log::default();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (l, a) = (log.clone(), Arc::clone(&accepted));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let n = a.fetch_add(1, Ordering::SeqCst);
            let (script, log) = (Arc::clone(&script), l.clone());
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    script(ws, n, log).await;
                }
            });
        }
    });
    Scripted { url, log, accepted }
}

struct Env {
    bus: MemoryBus,
    state: MemoryStateStore,
    service: WebSocketService,
}

async fn env() -> Env {
    let mut config = ServiceConfig {
        instance_id: "wsm-venue-1".into(),
        ..ServiceConfig::default()
    };
    config.connection.network = NetworkPolicy::allow_private();
    config.connection.max_message_size = 1 << 20;
    config.connection.backoff = BackoffPolicy {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        max_attempts: 50,
        jitter: 0.1,
    };
    let bus = MemoryBus::new();
    let state = MemoryStateStore::new();
    let service = WebSocketService::start(config, Arc::new(state.clone()), Arc::new(bus.clone()))
        .await
        .expect("service starts");
    Env {
        bus,
        state,
        service,
    }
}

fn venue(options: Value) -> VenueOptions {
    serde_json::from_value(options).expect("venue options parse")
}

impl Env {
    /// Connects with `venue` options and publishes to [`TOPIC`]; returns the id and both streams.
    async fn open(
        &self,
        url: &str,
        profile: Option<&str>,
        options: VenueOptions,
    ) -> (String, Subscription, Subscription) {
        let req = ConnectRequest {
            url: url.to_owned(),
            auto_reconnect: true,
            profile: profile.map(str::to_owned),
            venue: options,
            ..ConnectRequest::default()
        };
        open_publishing(&self.service, &self.bus, req, TOPIC).await
    }
}

fn frame_text(event: &Value) -> String {
    event["data"].as_str().expect("a text frame").to_owned()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn hold_open(mut ws: Socket) {
    while let Some(Ok(_)) = ws.next().await {}
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

fn metrics(e: &Env) -> String {
    wsm::api::metrics::render(
        &e.service.snapshot(),
        e.service.metrics(),
        &wsm::api::metrics::ApiMetrics::default(),
        &wsm::api::auth::AuthFailures::default(),
        None,
    )
}

#[tokio::test]
async fn each_option_is_validated_at_connect_naming_its_field() {
    let e = env().await;
    let up = scripted(Arc::new(|ws, _, _| Box::pin(hold_open(ws)))).await;
    for (options, profile, field) in [
        (
            json!({"keepalive": {"message": "ping", "interval_ms": 0}}),
            None,
            "keepalive.interval_ms",
        ),
        (
            json!({"keepalive": {"message": "ping", "interval_ms": 10, "timeout_ms": 5}}),
            None,
            "keepalive.pong",
        ),
        (
            json!({"reply": {"match": {"pointer": "ping"}, "with": "x"}}),
            None,
            "reply.match.pointer",
        ),
        (
            json!({"outbound_rate": {"messages": 0, "per_ms": 1000}}),
            None,
            "outbound_rate.messages",
        ),
        (
            json!({"outbound_rate": {"messages": 5, "per_ms": 0}}),
            None,
            "outbound_rate.per_ms",
        ),
        (
            json!({"notice": {"text": "x", "pointer": "/e"}}),
            None,
            "notice takes text",
        ),
        (
            json!({"sequence": {"value": "/u", "prev": "pu"}}),
            None,
            "sequence.prev",
        ),
        (json!({}), Some("nasdaq"), "unknown profile \"nasdaq\""),
    ] {
        let err = e
            .service
            .connect(ConnectRequest {
                url: up.url.clone(),
                profile: profile.map(str::to_owned),
                venue: venue(options.clone()),
                ..ConnectRequest::default()
            })
            .await
            .expect_err("refused");
        let code = wsm::api::status::code_name(wsm::api::status::grpc_code(&err));
        assert_eq!(code, "INVALID_ARGUMENT", "{options}: {err}");
        assert!(err.to_string().contains(field), "{options}: {err}");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0, "nothing was dialed");
    assert!(e.service.list(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn gzip_frames_are_published_as_json_and_a_bomb_or_garbage_is_refused_with_the_connection_up()
{
    let e = env().await;
    let up = scripted(Arc::new(|mut ws: Socket, _, _| {
        Box::pin(async move {
            let send =
                |n: u64| Message::Binary(Bytes::from(gzip(format!("{{\"n\":{n}}}").as_bytes())));
            ws.send(send(1)).await.unwrap();
            // 10 MiB of zeros in a few KiB: over the 1 MiB max_message_size.
            ws.send(Message::Binary(Bytes::from(gzip(&vec![b'0'; 10 << 20]))))
                .await
                .unwrap();
            let whole = gzip(br#"{"truncated":true}"#);
            ws.send(Message::Binary(Bytes::copy_from_slice(
                &whole[..whole.len() - 8],
            )))
            .await
            .unwrap();
            ws.send(Message::Binary(Bytes::from_static(b"not gzip at all")))
                .await
                .unwrap();
            ws.send(send(2)).await.unwrap();
            hold_open(ws).await;
        })
    }))
    .await;
    let (id, mut frames, mut lifecycle) = e
        .open(&up.url, None, venue(json!({"decompress": "gzip"})))
        .await;
    for n in [1, 2] {
        let event = next(&mut frames).await;
        assert_eq!(event["datacontenttype"], "application/json", "{event}");
        let frame: Value = serde_json::from_str(&frame_text(&event)).unwrap();
        assert_eq!(frame["n"], n);
    }
    let reason = next_kind(&mut lifecycle, "error").await;
    assert!(
        reason.contains("inflates past the limit of 1048576 bytes"),
        "{reason}"
    );
    // Refusals are counted each (events are at most one a second per connection).
    let m = metrics(&e);
    assert_eq!(metric(&m, "wsm_frames_refused_total"), 3, "{m}");
    let status = e.service.list(&[]).await.unwrap()[0].status;
    assert_eq!(status, wsm::model::Status::Connected);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1, "never reconnected");
    e.service.disconnect(&id).await.unwrap();
}

#[tokio::test]
async fn a_keepalive_without_its_pong_marks_the_leg_dead_and_pongs_are_never_published() {
    let e = env().await;
    // The first session answers the first keepalive only; the second answers all of them.
    let up = scripted(Arc::new(|mut ws: Socket, n, log: Log| {
        Box::pin(async move {
            let mut answered = 0;
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    log.push(n, t.to_string());
                    if t.as_str() == "ping" && (n > 0 || answered == 0) {
                        answered += 1;
                        let _ = ws.send(Message::text("pong")).await;
                        let _ = ws
                            .send(Message::text(format!("{{\"data\":{answered}}}")))
                            .await;
                    }
                }
            }
        })
    }))
    .await;
    let options = venue(json!({"keepalive": {
        "message": "ping", "interval_ms": 150, "pong": {"text": "pong"}, "timeout_ms": 300
    }}));
    let (id, mut frames, mut lifecycle) = e.open(&up.url, None, options).await;
    let reason = next_kind(&mut lifecycle, "reconnecting").await;
    assert!(
        reason.contains("no pong to the keepalive message within 300 ms"),
        "{reason}"
    );
    next_kind(&mut lifecycle, "connected").await;
    // On the second socket every keepalive is answered: it stays up for 3 × the timeout.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    let pings = up
        .log
        .texts()
        .iter()
        .filter(|(c, t)| *c == 1 && t == "ping")
        .count();
    assert!(pings >= 4, "keepalives every 150 ms: {pings}");
    // Only data was published, never a pong.
    while let Ok(bytes) = frames.try_recv() {
        let event: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(frame_text(&event).starts_with("{\"data\""), "{event}");
    }
    assert!(metric(&metrics(&e), "wsm_keepalive_timeouts_total") >= 1);
    e.service.disconnect(&id).await.unwrap();
}

#[tokio::test]
async fn venue_pings_are_answered_from_the_template_and_not_published() {
    let e = env().await;
    let up = scripted(Arc::new(|mut ws: Socket, n, log: Log| {
        Box::pin(async move {
            for ts in [111u64, 222, 333] {
                let ping = gzip(format!("{{\"ping\":{ts}}}").as_bytes());
                ws.send(Message::Binary(Bytes::from(ping))).await.unwrap();
                ws.send(Message::Binary(Bytes::from(gzip(
                    format!("{{\"tick\":{ts}}}").as_bytes(),
                ))))
                .await
                .unwrap();
            }
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    log.push(n, t.to_string());
                }
            }
        })
    }))
    .await;
    let (id, mut frames, _lifecycle) = e.open(&up.url, Some("htx"), VenueOptions::default()).await;
    for ts in [111, 222, 333] {
        let frame: Value = serde_json::from_str(&frame_text(&next(&mut frames).await)).unwrap();
        assert_eq!(frame, json!({"tick": ts}), "pings are not published");
    }
    let deadline = tokio::time::Instant::now() + HANG;
    while up.log.texts().len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answers: Vec<String> = up.log.texts().into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        answers,
        [r#"{"pong":111}"#, r#"{"pong":222}"#, r#"{"pong":333}"#]
    );
    e.service.disconnect(&id).await.unwrap();
}

#[tokio::test]
async fn a_notice_mid_stream_rotates_make_before_break_and_publishing_goes_on() {
    let e = env().await;
    // Like a venue: both sockets see the same stream from the new one's start on. The old
    // socket sends 0, 1 and the notice, then (once the new one is surely there) 2, 3, 4; the new
    // one sends 2 to 5.
    let up = scripted(Arc::new(|mut ws: Socket, n, _| {
        Box::pin(async move {
            let send = |i: u32| Message::text(format!("{{\"i\":{i}}}"));
            if n == 0 {
                for i in 0..2 {
                    ws.send(send(i)).await.unwrap();
                }
                ws.send(Message::text(r#"{"event":{"e":"serverShutdown","E":1}}"#))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                for i in 2..5 {
                    let _ = ws.send(send(i)).await;
                }
            } else {
                for i in 2..6 {
                    ws.send(send(i)).await.unwrap();
                }
            }
            hold_open(ws).await;
        })
    }))
    .await;
    let (id, mut frames, mut lifecycle) = e
        .open(&up.url, Some("binance-spot"), VenueOptions::default())
        .await;
    let reason = next_kind(&mut lifecycle, "rotating").await;
    assert!(reason.contains("/event/e = \"serverShutdown\""), "{reason}");
    assert!(reason.contains("make-before-break"), "{reason}");
    let rotated = next_kind(&mut lifecycle, "rotated").await;
    assert!(rotated.contains("overlap proven"), "{rotated}");
    let mut seen = Vec::new();
    while seen.len() < 7 {
        seen.push(frame_text(&next(&mut frames).await));
    }
    // Each frame once, in order, and the notice itself (it is venue data).
    assert_eq!(
        seen,
        [
            r#"{"i":0}"#,
            r#"{"i":1}"#,
            r#"{"event":{"e":"serverShutdown","E":1}}"#,
            r#"{"i":2}"#,
            r#"{"i":3}"#,
            r#"{"i":4}"#,
            r#"{"i":5}"#,
        ]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next(&mut frames))
            .await
            .is_err(),
        "a frame was published twice"
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    let m = metrics(&e);
    assert_eq!(
        (
            metric(&m, "wsm_venue_notices_total"),
            metric(&m, "wsm_rotations_total"),
            metric(&m, "wsm_continuity_gaps_total"),
        ),
        (1, 1, 0),
        "{m}"
    );
    e.service.disconnect(&id).await.unwrap();
}

#[tokio::test]
async fn a_venue_gap_is_announced_and_counted_and_publishing_goes_on() {
    let e = env().await;
    let up = scripted(Arc::new(|mut ws: Socket, _, _| {
        Box::pin(async move {
            // BTCUSDT skips from 11 to 13 (pu 12): one gap; ETHUSDT is continuous.
            for (s, pu, u) in [
                ("BTCUSDT", 0, 10),
                ("ETHUSDT", 0, 5),
                ("BTCUSDT", 10, 11),
                ("ETHUSDT", 5, 6),
                ("BTCUSDT", 12, 13),
                ("BTCUSDT", 13, 14),
            ] {
                let frame = json!({"e": "depthUpdate", "s": s, "pu": pu, "u": u}).to_string();
                ws.send(Message::text(frame)).await.unwrap();
            }
            hold_open(ws).await;
        })
    }))
    .await;
    let (id, mut frames, mut lifecycle) = e
        .open(&up.url, Some("binance-usdm"), VenueOptions::default())
        .await;
    for _ in 0..6 {
        next(&mut frames).await;
    }
    let reason = next_kind(&mut lifecycle, "gap").await;
    assert!(reason.contains("for BTCUSDT"), "{reason}");
    assert!(
        reason.contains("previous was 12, but the last seen was 11"),
        "{reason}"
    );
    assert_eq!(metric(&metrics(&e), "wsm_venue_gaps_total"), 1);
    e.service.disconnect(&id).await.unwrap();
}

#[tokio::test]
async fn pacing_spaces_every_message_and_fails_past_its_wait_with_resource_exhausted() {
    let e = env().await;
    let arrivals: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let a = Arc::clone(&arrivals);
    let up = scripted(Arc::new(move |mut ws: Socket, _, _| {
        let a = Arc::clone(&a);
        Box::pin(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() {
                    a.lock().unwrap().push(tokio::time::Instant::now());
                }
            }
        })
    }))
    .await;
    let options = venue(json!({"outbound_rate": {
        "messages": 5, "per_ms": 1000, "spacing_ms": 50, "max_wait_ms": 1500
    }}));
    let (id, _frames, _lifecycle) = e.open(&up.url, None, options).await;
    let sends = (0..12).map(|i| {
        let service = e.service.clone();
        let id = id.clone();
        async move {
            // Staggered a little so they queue in order.
            tokio::time::sleep(Duration::from_millis(i * 2)).await;
            service
                .send_raw(
                    &id,
                    Bytes::from(format!("{{\"i\":{i}}}")),
                    "application/json",
                    false,
                )
                .await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| {
            format!(
                "{} {e}",
                wsm::api::status::code_name(wsm::api::status::grpc_code(e))
            )
        })
        .collect();
    // 5 per second: within 1.5 s of waiting, 10 go out (0–4 at once, 5–9 a second later).
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        10,
        "{failed:?}"
    );
    for f in &failed {
        assert!(f.starts_with("RESOURCE_EXHAUSTED"), "{f}");
        assert!(f.contains("5 messages per 1000 ms, 50 ms apart"), "{f}");
    }
    let deadline = tokio::time::Instant::now() + HANG;
    while arrivals.lock().unwrap().len() < 10 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at = arrivals.lock().unwrap().clone();
    assert_eq!(at.len(), 10, "exactly the sends that succeeded arrived");
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(45),
            "{:?}",
            pair[1] - pair[0]
        );
    }
    for window in at.windows(6) {
        assert!(
            window[5] - window[0] >= Duration::from_millis(950),
            "a burst over 5/s"
        );
    }
    e.service.disconnect(&id).await.unwrap();
}

#[tokio::test]
async fn the_record_keeps_the_profile_and_the_overrides_apart() {
    let e = env().await;
    let up = scripted(Arc::new(|ws, _, _| Box::pin(hold_open(ws)))).await;
    let overrides = venue(json!({"decompress": "zlib"}));
    let (id, _f, _l) = e.open(&up.url, Some("okx"), overrides).await;
    let stored = e
        .state
        .get(&format!("websocketmanager.connection.{id}"))
        .await
        .unwrap()
        .unwrap();
    let record: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(record["profile"], "okx");
    assert_eq!(
        record["venue"],
        json!({"decompress": "zlib"}),
        "only what the request gave"
    );
    e.service.disconnect(&id).await.unwrap();
}

#[tokio::test]
async fn an_instance_taking_the_connection_over_runs_the_same_profile_and_overrides() {
    let up = scripted(Arc::new(|mut ws: Socket, n, _| {
        Box::pin(async move {
            for i in 0..50u64 {
                // `prev` never matches: every frame after a key's first is a venue gap.
                let frame = format!("{{\"conn\":{n},\"i\":{i},\"prev\":{}}}", i + 100);
                let frame = gzip(frame.as_bytes());
                if ws.send(Message::Binary(Bytes::from(frame))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            hold_open(ws).await;
        })
    }))
    .await;
    let state = MemoryStateStore::new();
    let bus = MemoryBus::new();
    let start = |instance: &str| {
        let mut config = ServiceConfig {
            instance_id: instance.into(),
            ..ServiceConfig::default()
        };
        config.connection.network = NetworkPolicy::allow_private();
        WebSocketService::start(config, Arc::new(state.clone()), Arc::new(bus.clone()))
    };
    let (a, b) = (start("wsm-a").await.unwrap(), start("wsm-b").await.unwrap());
    let mut frames = bus.subscribe(TOPIC);
    let mut lifecycle = bus.subscribe("websocketmanager.lifecycle");
    let record = a
        .connect(ConnectRequest {
            url: up.url.clone(),
            auto_reconnect: true,
            profile: Some("htx".into()),
            // Overrides the profile's sequence rule; the takeover must keep it too.
            venue: venue(json!({"sequence": {"value": "/i", "key": "/conn", "prev": "/prev"}})),
            ..ConnectRequest::default()
        })
        .await
        .unwrap();
    a.start_publish(&record.id, TOPIC).await.unwrap();
    let outcome = b
        .take_over(&record.id, "wsm-a", "test takeover", Some(HANG))
        .await
        .unwrap();
    assert!(
        matches!(outcome, wsm::service::TakeOver::Claimed),
        "{outcome:?}"
    );
    // wsm-b's socket is the upstream's second session: its frames come out inflated, as JSON.
    loop {
        let event = next(&mut frames).await;
        let frame: Value = serde_json::from_str(&frame_text(&event)).expect("inflated JSON");
        if frame["conn"] == 1 {
            assert_eq!(event["datacontenttype"], "application/json");
            break;
        }
    }
    // The request's own sequence rule came along: wsm-b sees the gaps of its session's key.
    loop {
        let event = next(&mut lifecycle).await;
        if event["type"] == "com.virtufin.websocketmanager.lifecycle.gap"
            && event["data"]["instance_id"] == "wsm-b"
        {
            let reason = event["data"]["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("venue gap for 1"), "{reason}");
            break;
        }
    }
    b.disconnect(&record.id).await.unwrap();
}
