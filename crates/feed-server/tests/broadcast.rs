//! Broadcast (venue-like) mode over real sockets: one generator per stream, byte-identical frames
//! for every socket, global ids, id-less tokens, the lag policy; and the per-socket orders and
//! the generic lifetime that rotation tests rely on.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use feed_server::broadcast::{frame_id, frame_token, frame_u, token, untoken, LAG_REASON};
use feed_server::FeedConfig;
use futures_util::StreamExt;
use support::*;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const STREAM: &str = "btcusdt@depth@100ms";

/// The next `n` text frames.
async fn frames(client: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(next_text(client).await);
    }
    out
}

/// Frames until one with id `last` (or beyond) came.
async fn frames_until(client: &mut Client, last: u64) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let frame = next_text(client).await;
        let id = frame_id(&frame).unwrap_or_else(|| panic!("no id in {frame}"));
        out.push(frame);
        if id >= last {
            return out;
        }
    }
}

fn ids(frames: &[String]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| frame_id(f).unwrap_or_else(|| panic!("no id in {f}")))
        .collect()
}

fn assert_consecutive(ids: &[u64]) {
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids not consecutive: {ids:?}"
    );
}

/// The id of the connection that opened last.
async fn newest(feed: &feed_server::FeedHandle, n: usize) -> u64 {
    assert!(feed.wait_for_connections(n, LONG).await);
    *feed.live_connections().last().expect("a connection")
}

/// Reads until the connection ends; the close frame's code and reason, if one came.
async fn read_to_end(client: &mut Client) -> (Option<(u16, String)>, Option<WsError>) {
    let mut close = None;
    loop {
        match timeout(LONG, client.next())
            .await
            .expect("connection did not end")
        {
            Some(Ok(Message::Close(frame))) => {
                close = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
            }
            Some(Ok(_)) => {}
            Some(Err(WsError::ConnectionClosed)) | None => return (close, None),
            Some(Err(error)) => return (close, Some(error)),
        }
    }
}

#[tokio::test]
async fn two_sockets_get_byte_identical_frames_with_the_same_global_ids() {
    let feed = start(FeedConfig::default()).await;
    let url = feed.url("/stream?broadcast=1&rate=200&size=120");
    let mut a = connect(&url).await;
    let early = frames(&mut a, 10).await;
    let mut b = connect(&url).await;
    let from_b = frames(&mut b, 40).await;
    let b_ids = ids(&from_b);
    let from_a = frames_until(&mut a, *b_ids.last().unwrap()).await;

    // A started the generator at 1; B joined later, higher, and neither has a gap.
    assert_eq!(ids(&early)[0], 1);
    let mut a_ids = ids(&early);
    a_ids.extend(ids(&from_a));
    assert_consecutive(&a_ids);
    assert_consecutive(&b_ids);
    assert!(b_ids[0] > 10, "B started at {}", b_ids[0]);

    // Over the overlap, the same frames byte for byte.
    let a_by_id: BTreeMap<u64, &String> = early
        .iter()
        .chain(&from_a)
        .map(|f| (frame_u(f).unwrap(), f))
        .collect();
    for frame in &from_b {
        let u = frame_u(frame).unwrap();
        assert_eq!(a_by_id.get(&u), Some(&frame), "frame {u} differs");
        assert_eq!(frame.len(), 120, "size pads the frame: {frame}");
        let v = json(frame);
        assert_eq!(v["stream"], STREAM);
        assert_eq!(
            (v["data"]["U"].as_u64(), v["data"]["e"].as_str()),
            (Some(u), Some("depthUpdate"))
        );
    }
    let generated = feed.stats().broadcast_frames[STREAM];
    assert!(generated >= *b_ids.last().unwrap(), "{generated}");
}

#[tokio::test]
async fn ids_are_global_per_stream_and_never_restart() {
    let feed = start(FeedConfig {
        broadcast: true,
        rate: 200,
        ..FeedConfig::default()
    })
    .await;
    // /ws: the bare update, same ids and event times as /stream.
    let mut bare = connect(&feed.url("/ws")).await;
    let mut combined = connect(&feed.url("/stream")).await;
    let first = frames(&mut combined, 5).await;
    let last = frame_u(first.last().unwrap()).unwrap();
    let from_bare = frames_until(&mut bare, last).await;
    let bare_last = json(from_bare.last().unwrap());
    assert_eq!(bare_last["u"].as_u64(), Some(last));
    assert!(bare_last.get("stream").is_none());
    assert_eq!(
        json(first.last().unwrap())["data"]["E"],
        bare_last["E"],
        "one generator, one event time"
    );
    drop((bare, combined));
    // Every socket gone: the generator stops; the next one starts it again, ids go on.
    assert!(feed.wait_for_connections(0, LONG).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped_at = feed.stats().broadcast_frames[STREAM];
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        feed.stats().broadcast_frames[STREAM],
        stopped_at,
        "generator still running"
    );
    let mut later = connect(&feed.url("/stream")).await;
    let again = frame_u(&next_text(&mut later).await).unwrap();
    assert_eq!(again, stopped_at + 1, "ids restarted or skipped");

    // Another stream, by SUBSCRIBE, has its own counter.
    let mut waiting = connect(&feed.url("/stream?streams=0")).await;
    assert!(silent_for(&mut waiting, Duration::from_millis(200)).await);
    send_text(
        &mut waiting,
        r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":1}"#,
    )
    .await;
    assert_eq!(next_text(&mut waiting).await, r#"{"result":null,"id":1}"#);
    let eth = json(&next_text(&mut waiting).await);
    assert_eq!(eth["stream"], "ethusdt@depth");
    assert_eq!(
        (eth["data"]["u"].as_u64(), eth["data"]["s"].as_str()),
        (Some(1), Some("ETHUSDT"))
    );
}

#[tokio::test]
async fn id_less_frames_carry_unique_tokens_that_map_back() {
    let feed = start(FeedConfig::default()).await;
    let url = feed.url("/stream?broadcast=1&ids=0&rate=200&size=200");
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    let from_a = frames(&mut a, 30).await;
    let last = frame_token(from_a.last().unwrap()).unwrap();
    let from_b = frames_until(&mut b, last).await;
    for frame in from_a.iter().chain(&from_b) {
        let data = &json(frame)["data"];
        assert!(
            data.get("u").is_none() && data.get("U").is_none(),
            "{frame}"
        );
        assert_eq!(data["e"], "trade");
        let t = data["t"].as_str().unwrap();
        assert_eq!(token(untoken(t).unwrap()), t);
        assert_eq!(frame.len(), 200);
    }
    let a_ids = ids(&from_a);
    assert_consecutive(&a_ids);
    assert_consecutive(&ids(&from_b));
    // The same token is the same frame, byte for byte.
    for frame in &from_b {
        let n = frame_token(frame).unwrap();
        if let Some(i) = a_ids.iter().position(|&id| id == n) {
            assert_eq!(&from_a[i], frame);
        }
    }
    assert!(ids(&from_b).iter().filter(|n| a_ids.contains(n)).count() >= 20);
    for n in [1, 2, 3, 1 << 40, u64::MAX] {
        assert_eq!(untoken(&token(n)), Some(n));
    }
}

#[tokio::test]
async fn bad_broadcast_queries_are_refused_with_400() {
    let feed = start(FeedConfig::default()).await;
    for query in [
        "broadcast=1&rate=0",
        "ids=0",
        "broadcast=yes please",
        "broadcast=1&ids=2",
    ] {
        let url = feed.url(&format!("/ws?{}", query.replace(' ', "%20")));
        match tokio_tungstenite::connect_async(&url).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 400, "{query}"),
            other => panic!("{query}: expected HTTP 400, got {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_socket_orders_act_on_one_socket_only() {
    let feed = start(FeedConfig {
        broadcast: true,
        rate: 100,
        ..FeedConfig::default()
    })
    .await;
    let url = feed.url("/ws");
    let mut a = connect(&url).await;
    let a_id = newest(&feed, 1).await;
    let mut b = connect(&url).await;
    let b_id = newest(&feed, 2).await;
    assert_eq!(feed.live_connections(), vec![a_id, b_id]);
    let a_before = frame_u(&next_text(&mut a).await).unwrap();
    next_text(&mut b).await;

    // Stall A: B keeps receiving; A is silent, then gets the backlog in order.
    assert!(
        feed.stall_connection(a_id, Duration::from_millis(600))
            .await
    );
    let t0 = Instant::now();
    let mut b_ids = Vec::new();
    while t0.elapsed() < Duration::from_millis(400) {
        b_ids.push(frame_u(&next_text(&mut b).await).unwrap());
    }
    assert!(
        b_ids.len() >= 20,
        "B got {} frames during A's stall",
        b_ids.len()
    );
    assert_consecutive(&b_ids);
    let mut a_ids = vec![a_before];
    // What A had in flight before the stall, then nothing until it ends.
    loop {
        match timeout(Duration::from_millis(100), a.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => a_ids.push(frame_u(t.as_str()).unwrap()),
            Ok(other) => panic!("A: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(
        t0.elapsed() < Duration::from_millis(550),
        "A was not stalled"
    );
    a_ids.extend(ids(&frames_until(&mut a, *b_ids.last().unwrap()).await));
    assert_consecutive(&a_ids);
    assert!(
        t0.elapsed() >= Duration::from_millis(550),
        "A's stall ended early"
    );

    // Close A: B goes on.
    let reading = tokio::spawn(async move { read_to_end(&mut a).await });
    assert!(feed.close_connection(a_id, 4000).await);
    let (close, _) = reading.await.unwrap();
    assert_eq!(close.map(|c| c.0), Some(4000));
    let b_more = ids(&frames(&mut b, 5).await);
    assert_consecutive(&b_more);

    // Drop C: no close frame for C; B goes on.
    let mut c = connect(&url).await;
    let c_id = newest(&feed, 2).await;
    next_text(&mut c).await;
    assert!(feed.drop_connection(c_id).await);
    let (close, _) = read_to_end(&mut c).await;
    assert!(close.is_none(), "C got a close frame: {close:?}");
    assert_eq!(feed.live_connections(), vec![b_id]);
    let after = ids(&frames(&mut b, 5).await);
    assert_eq!(after[0], b_more[4] + 1, "B lost frames");

    // Unknown ids.
    assert!(!feed.drop_connection(a_id).await);
    assert!(!feed.close_connection(999, 1000).await);
    assert!(!feed.stall_connection(999, Duration::from_millis(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_endpoint_takes_a_connection_id() {
    let feed = start(FeedConfig {
        control_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..FeedConfig::default()
    })
    .await;
    let control = feed.control_addr().unwrap().to_string();
    let url = feed.url("/stream?broadcast=1&rate=100");
    let mut a = connect(&url).await;
    let a_id = newest(&feed, 1).await;
    let mut b = connect(&url).await;
    let b_id = newest(&feed, 2).await;
    next_text(&mut a).await;
    next_text(&mut b).await;
    let (status, body) = http(&control, "GET", "/connections").await;
    assert_eq!(
        (status, body["connections"].clone()),
        (200, serde_json::json!([a_id, b_id]))
    );

    let (status, body) = http(&control, "POST", "/stall?ms=50&connection=999").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "no open connection 999");
    let (status, _) = http(&control, "POST", "/drop?connection=x").await;
    assert_eq!(status, 400);
    let (status, body) = http(&control, "POST", &format!("/stall?ms=50&connection={b_id}")).await;
    assert_eq!(
        (
            status,
            body["stalled"].as_u64(),
            body["connection"].as_u64()
        ),
        (200, Some(1), Some(b_id))
    );

    let reading = tokio::spawn(async move { read_to_end(&mut a).await });
    let (status, body) = http(
        &control,
        "POST",
        &format!("/close?code=4001&connection={a_id}"),
    )
    .await;
    assert_eq!((status, body["closed"].as_u64()), (200, Some(1)));
    assert_eq!(reading.await.unwrap().0.map(|c| c.0), Some(4001));
    assert_consecutive(&ids(&frames(&mut b, 5).await));
    let (status, body) = http(&control, "POST", &format!("/drop?connection={b_id}")).await;
    assert_eq!((status, body["dropped"].as_u64()), (200, Some(1)));
    assert!(feed.wait_for_connections(0, LONG).await);
    let (_, stats) = http(&control, "GET", "/stats").await;
    assert!(
        stats["broadcast_frames"][STREAM].as_u64().unwrap() >= 5,
        "{stats}"
    );
}

#[tokio::test]
async fn a_lifetime_without_a_venue_closes_with_its_code() {
    let feed = start(FeedConfig::default()).await;
    // Before the handshakes: the lifetimes count from them.
    let t0 = Instant::now();
    let noticed =
        connect(&feed.url("/ws?broadcast=1&rate=50&lifetime_ms=400&notice_ms=150&close_code=1012"))
            .await;
    let plain = connect(&feed.url("/ws?rate=50&lifetime_ms=300")).await;
    let watch = |mut client: Client| async move {
        let mut notice = None;
        let mut frames = 0;
        loop {
            match timeout(LONG, client.next()).await.expect("no close") {
                Some(Ok(Message::Text(text))) if text.contains("serverShutdown") => {
                    notice = Some((t0.elapsed(), text.as_str().to_owned()));
                }
                Some(Ok(Message::Text(_))) => frames += 1,
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (
                        notice,
                        frames,
                        u16::from(frame.code),
                        frame.reason.to_string(),
                        t0.elapsed(),
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let ((notice, frames, code, reason, at), (plain_notice, plain_frames, plain_code, _, plain_at)) =
        tokio::join!(watch(noticed), watch(plain));
    let (notice_at, text) = notice.expect("a serverShutdown notice");
    assert!(
        text.starts_with(r#"{"event":{"e":"serverShutdown","E":"#),
        "{text}"
    );
    assert!(
        notice_at >= Duration::from_millis(240) && notice_at < at,
        "{notice_at:?}"
    );
    assert_eq!(
        (code, reason.as_str()),
        (1012, "connection lifetime reached")
    );
    assert!(at >= Duration::from_millis(390), "closed at {at:?}");
    assert!(frames >= 5 && plain_frames >= 5);
    assert!(plain_notice.is_none(), "no notice_ms, no notice");
    assert_eq!(plain_code, 1001);
    assert!(plain_at >= Duration::from_millis(290), "{plain_at:?}");
    let stats = feed.stats();
    assert_eq!((stats.lifetime_closes, stats.lifetime_notices_sent), (2, 1));
    assert_eq!(stats.venue_closes.lifetime, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_falls_behind_is_closed_with_1008_and_the_others_keep_up() {
    let feed = start(FeedConfig {
        // 4 KiB frames: 256 of them per channel (128 ms at 2000 frames/s).
        broadcast_buffer_bytes: 1 << 20,
        ..FeedConfig::default()
    })
    .await;
    let url = feed.url("/ws?broadcast=1&rate=2000&size=4096");
    let mut fast = connect(&url).await;
    let mut slow = connect(&url).await;
    next_text(&mut slow).await;
    // The fast one reads all along; the slow one stops until the server gives up on it.
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let deadline = Instant::now() + LONG;
        while Instant::now() < deadline {
            let text = next_text(&mut fast).await;
            seen.push(frame_u(&text).unwrap());
            if seen.len() >= 3000 {
                break;
            }
        }
        (fast, seen)
    });
    let deadline = Instant::now() + LONG;
    while feed.stats().broadcast_lag_closes == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow socket was never found behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (close, error) = read_to_end(&mut slow).await;
    assert_eq!(close, Some((1008, LAG_REASON.to_owned())), "{error:?}");
    assert_eq!(LAG_REASON, "too slow for the broadcast");
    let (fast, seen) = reader.await.unwrap();
    assert_eq!(seen.len(), 3000);
    assert_consecutive(&seen);
    assert_eq!(
        feed.stats().broadcast_lag_closes,
        1,
        "the fast one was not closed"
    );
    assert_eq!(feed.connections(), 1);
    drop(fast);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_longer_than_the_buffer_ends_in_1008_after_the_stall() {
    let feed = start(FeedConfig {
        broadcast: true,
        rate: 1000,
        size: 4096,
        broadcast_buffer_bytes: 64 << 10, // 16 frames
        ..FeedConfig::default()
    })
    .await;
    let mut client = connect(&feed.url("/ws")).await;
    let id = newest(&feed, 1).await;
    next_text(&mut client).await;
    assert!(feed.stall_connection(id, Duration::from_millis(300)).await);
    let (close, error) = read_to_end(&mut client).await;
    assert_eq!(close, Some((1008, LAG_REASON.to_owned())), "{error:?}");
    assert_eq!(feed.stats().broadcast_lag_closes, 1);
}

#[tokio::test]
async fn htx_sockets_get_the_shared_frames_gzip_compressed() {
    use std::io::Read;
    let feed = start(FeedConfig::default()).await;
    let mut plain = connect(&feed.url("/ws?broadcast=1&rate=100")).await;
    let mut htx =
        connect(&feed.url("/ws?broadcast=1&rate=100&venue=htx&ping_every_ms=60000")).await;
    let first = match next(&mut htx).await {
        Message::Binary(data) => {
            let mut text = String::new();
            flate2::read::GzDecoder::new(&data[..])
                .read_to_string(&mut text)
                .expect("gzip text");
            text
        }
        other => panic!("expected gzip binary, got {other:?}"),
    };
    let u = frame_u(&first).unwrap();
    let same = frames_until(&mut plain, u).await;
    assert_eq!(
        same.last(),
        Some(&first),
        "the htx payload is the shared frame"
    );
}
