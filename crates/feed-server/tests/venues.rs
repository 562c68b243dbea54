//! Venue personalities, both sides of every rule over real sockets: a client that breaks the
//! rule gets the venue's close code within a generous bound, one that follows it stays connected
//! for several deadlines with frames flowing. Deadlines are scaled down through the query.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use feed_server::{FeedConfig, Venue};
use flate2::read::GzDecoder;
use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::time::{timeout, Instant, Interval};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What a client saw while [`drive`] ran.
#[derive(Debug, Default)]
struct Seen {
    /// Text messages (for htx, the inflated binary ones), with when they came.
    texts: Vec<(Duration, String)>,
    /// Binary messages that arrived, all of them.
    binaries: usize,
    /// Text messages that arrived as text frames.
    raw_texts: usize,
    /// The server's close frame: code, reason, when.
    close: Option<(u16, String, Duration)>,
    /// The connection ended (after a close, or abruptly).
    ended: bool,
}

impl Seen {
    /// The `u` of every depth update, in order.
    fn seqs(&self) -> Vec<u64> {
        self.texts
            .iter()
            .filter(|(_, t)| t.contains("\"depthUpdate\""))
            .map(|(_, t)| seq(t))
            .collect()
    }

    /// Asserts frames came, numbered 1, 2, 3, ... without a gap; returns how many.
    fn assert_frames_in_sequence(&self) -> usize {
        let seqs = self.seqs();
        assert!(!seqs.is_empty(), "no frames: {self:?}");
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "frames out of sequence");
        seqs.len()
    }

    /// The texts that are not depth updates (replies, pings, notices).
    fn others(&self) -> Vec<&str> {
        self.texts
            .iter()
            .filter(|(_, t)| !t.contains("\"depthUpdate\""))
            .map(|(_, t)| t.as_str())
            .collect()
    }

    fn assert_open(&self) {
        assert!(
            self.close.is_none() && !self.ended,
            "the venue ended a connection that followed its rules: {:?}",
            self.close
        );
    }

    fn assert_closed(&self, code: u16, reason: &str, after: Duration) -> Duration {
        let Some((got_code, got_reason, at)) = &self.close else {
            panic!("no close frame; ended: {}", self.ended);
        };
        assert_eq!((*got_code, got_reason.as_str()), (code, reason));
        assert!(*at >= after, "closed too early, at {at:?}");
        *at
    }
}

fn gunzip(data: &[u8]) -> String {
    let mut text = String::new();
    GzDecoder::new(data)
        .read_to_string(&mut text)
        .expect("a gzip message holding UTF-8 text");
    text
}

fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).expect("gzip");
    encoder.finish().expect("gzip")
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A client and the moment just before it connected: the venue's clock starts at the handshake,
/// so times measured from here are never shorter than the server's.
struct Conn {
    ws: Client,
    since: Instant,
}

async fn open(url: &str) -> Conn {
    let since = Instant::now();
    Conn {
        ws: connect(url).await,
        since,
    }
}

/// Runs one client until `within` after it connected (or until the connection ends): every
/// `every` it sends what `on_tick(n)` gives (n = 0, 1, ...), and it answers each text it reads
/// with what `answer` gives. With `gzip`, binary messages are inflated and read as text.
async fn drive(
    conn: &mut Conn,
    within: Duration,
    every: Option<Duration>,
    gzip: bool,
    mut on_tick: impl FnMut(u64) -> Vec<Message>,
    mut answer: impl FnMut(&str, u64) -> Option<Message>,
) -> Seen {
    let Conn { ws: client, since } = conn;
    let started = *since;
    let deadline = started + within;
    let mut interval = every.map(|every| {
        let mut interval = tokio::time::interval(every);
        // A late tick must not make a burst: the pacing is what the rate limit tests check.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut ticks = 0;
    let mut answers = 0;
    let mut seen = Seen::default();
    loop {
        let event = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return seen,
            _ = tick(&mut interval) => None,
            message = client.next() => Some(message),
        };
        let message = match event {
            None => {
                for message in on_tick(ticks) {
                    // A send after the server closed fails; the close is what the test checks.
                    let _ = client.send(message).await;
                }
                ticks += 1;
                continue;
            }
            Some(Some(Ok(message))) => message,
            Some(Some(Err(_))) | Some(None) => {
                seen.ended = true;
                return seen;
            }
        };
        let text = match message {
            Message::Text(text) => {
                seen.raw_texts += 1;
                text.as_str().to_owned()
            }
            Message::Binary(data) => {
                seen.binaries += 1;
                if !gzip {
                    continue;
                }
                gunzip(&data)
            }
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                seen.close = Some((code, reason, started.elapsed()));
                continue;
            }
            _ => continue,
        };
        if let Some(reply) = answer(&text, answers) {
            answers += 1;
            let _ = client.send(reply).await;
        }
        seen.texts.push((started.elapsed(), text));
    }
}

fn none(_: u64) -> Vec<Message> {
    Vec::new()
}

fn no_answer(_: &str, _: u64) -> Option<Message> {
    None
}

/// A bound for a close that is due after a few hundred ms: generous, for a loaded machine.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

async fn handshake_error(url: &str) -> (u16, String) {
    match timeout(LONG, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect attempt hung")
    {
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        other => panic!("expected an HTTP rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn okx_closes_a_client_that_does_not_ping_with_4004() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/ws?venue=okx&deadline_ms=300&rate=20")).await;
    // Other messages do not count as keepalives, and are still answered.
    let list = |_| vec![Message::text(r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#)];
    let seen = drive(
        &mut client,
        CLOSE_BOUND,
        Some(Duration::from_millis(100)),
        false,
        list,
        no_answer,
    )
    .await;
    seen.assert_closed(4004, "no ping within 300 ms", Duration::from_millis(290));
    seen.assert_frames_in_sequence();
    assert!(
        seen.others().contains(&r#"{"result":[],"id":1}"#),
        "{seen:?}"
    );
    assert!(feed.wait_for_connections(0, LONG).await);
    assert_eq!(feed.stats().venue_closes.no_ping, 1);
}

#[tokio::test]
async fn okx_keeps_a_client_that_pings_and_answers_each_ping_with_pong() {
    let feed = start(FeedConfig::default()).await;
    // Pings every 100 ms against a 500 ms deadline, for 1.6 s: more than 3 deadlines.
    let mut client = open(&feed.url("/ws?venue=okx&deadline_ms=500&rate=20")).await;
    send_text(
        &mut client.ws,
        r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":7}"#,
    )
    .await;
    let ping = |_| vec![Message::text("ping")];
    let seen = drive(
        &mut client,
        Duration::from_millis(1600),
        Some(Duration::from_millis(100)),
        false,
        ping,
        no_answer,
    )
    .await;
    seen.assert_open();
    assert!(seen.assert_frames_in_sequence() >= 10);
    let others = seen.others();
    assert_eq!(others[0], r#"{"result":null,"id":7}"#);
    let pongs = others.iter().filter(|t| **t == "pong").count();
    assert!(pongs >= 8, "{pongs} pongs: {others:?}");
    assert_eq!(
        others.len(),
        pongs + 1,
        "a ping got another answer: {others:?}"
    );

    let stats = feed.stats();
    assert_eq!(stats.venue_closes.no_ping, 0);
    assert!(stats.venue_pings_answered >= 8, "{stats:?}");
    assert_eq!(stats.sessions[0].venue, Some("okx"));
    // Pings are recorded with their receive times, marked as keepalives, not as requests.
    assert_eq!(feed.subscriptions()[&1], ["ethusdt@depth"]);
    let pings: Vec<_> = feed
        .received()
        .into_iter()
        .filter(|r| r.keepalive)
        .collect();
    assert!(pings.len() >= 8);
    assert!(pings.iter().all(|r| r.message.as_text() == Some("ping")));
    for pair in pings.windows(2) {
        let gap = pair[1].received_at - pair[0].received_at;
        assert!(gap < Duration::from_millis(500), "pings {gap:?} apart");
        assert!(pair[1].unix_ms >= pair[0].unix_ms);
    }
}

#[tokio::test]
async fn bybit_closes_a_client_that_does_not_ping_with_4004() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/stream?venue=bybit&deadline_ms=250&rate=20")).await;
    // okx's keepalive is not bybit's.
    let wrong = |_| vec![Message::text("ping")];
    let seen = drive(
        &mut client,
        CLOSE_BOUND,
        Some(Duration::from_millis(100)),
        false,
        wrong,
        no_answer,
    )
    .await;
    seen.assert_closed(4004, "no ping within 250 ms", Duration::from_millis(240));
    seen.assert_frames_in_sequence();
    assert!(feed.wait_for_connections(0, LONG).await);
    let stats = feed.stats();
    assert_eq!(
        (stats.venue_closes.no_ping, stats.venue_pings_answered),
        (1, 0)
    );
}

#[tokio::test]
async fn bybit_keeps_a_client_that_sends_op_ping_and_echoes_its_req_id() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/stream?venue=bybit&deadline_ms=500&rate=20")).await;
    let ping = |n| {
        vec![Message::text(if n % 2 == 0 {
            format!(r#"{{"req_id":"r{n}","op":"ping"}}"#)
        } else {
            r#"{"op":"ping"}"#.to_owned()
        })]
    };
    let seen = drive(
        &mut client,
        Duration::from_millis(1600),
        Some(Duration::from_millis(100)),
        false,
        ping,
        no_answer,
    )
    .await;
    seen.assert_open();
    assert!(seen.assert_frames_in_sequence() >= 10);
    let others = seen.others();
    assert!(others.len() >= 8, "{others:?}");
    for (n, pong) in others.iter().enumerate() {
        let expected = if n % 2 == 0 {
            format!(r#"{{"op":"pong","success":true,"ret_msg":"pong","req_id":"r{n}"}}"#)
        } else {
            r#"{"op":"pong","success":true,"ret_msg":"pong"}"#.to_owned()
        };
        assert_eq!(*pong, expected);
    }
    assert!(feed.stats().venue_pings_answered >= 8);
}

#[tokio::test]
async fn htx_sends_gzip_frames_and_pings_and_keeps_a_client_that_pongs() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/ws?venue=htx&ping_every_ms=200&rate=50")).await;
    send_text(&mut client.ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#).await;
    // Pongs alternate between text and gzip binary; both count.
    let pong = |text: &str, n: u64| {
        let value = json(text).get("ping")?.as_u64()?;
        let pong = format!(r#"{{"pong":{value}}}"#);
        Some(if n % 2 == 0 {
            Message::text(pong)
        } else {
            Message::binary(gzip(&pong))
        })
    };
    let seen = drive(
        &mut client,
        Duration::from_millis(1500),
        None,
        true,
        none,
        pong,
    )
    .await;
    seen.assert_open();
    assert_eq!(seen.raw_texts, 0, "htx sent a text frame");
    assert!(seen.assert_frames_in_sequence() >= 20);
    let others = seen.others();
    assert_eq!(
        others[0], r#"{"result":[],"id":2}"#,
        "the reply is gzip too"
    );
    let pings: Vec<u64> = others[1..]
        .iter()
        .map(|t| {
            json(t)["ping"]
                .as_u64()
                .unwrap_or_else(|| panic!("not a ping: {t}"))
        })
        .collect();
    assert!(pings.len() >= 5, "{pings:?}");
    assert!(pings.windows(2).all(|w| w[0] < w[1]), "{pings:?}");

    let stats = feed.stats();
    assert_eq!(stats.venue_closes.pings_unanswered, 0);
    assert!(
        stats.venue_pings_sent >= 5 && stats.venue_pongs_received >= 5,
        "{stats:?}"
    );
    assert!(feed.received().iter().filter(|r| r.keepalive).count() >= 5);
}

#[tokio::test]
async fn htx_frames_at_max_rate_are_gzip_and_gap_free() {
    let feed = start(FeedConfig::default()).await;
    // Frames of 2000 bytes fill a batch with 65: 200 of them take several turns of the session.
    let n = 200;
    let mut client =
        connect(&feed.url(&format!("/stream?venue=htx&rate=0&size=2000&count={n}"))).await;
    for expected in 1..=n {
        let frame = match next(&mut client).await {
            Message::Binary(data) => gunzip(&data),
            other => panic!("expected a gzip binary frame, got {other:?}"),
        };
        assert_eq!(frame.len(), 2000, "{frame}");
        assert_eq!(seq(&frame), expected);
    }
    assert_eq!(feed.stats().frames_sent_total, n);
}

#[tokio::test]
async fn htx_closes_after_two_unanswered_pings_with_4002() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/ws?venue=htx&ping_every_ms=200&rate=20")).await;
    // A pong with the wrong number is no answer.
    let wrong = |text: &str, _| {
        let value = json(text).get("ping")?.as_u64()?;
        Some(Message::text(format!(r#"{{"pong":{}}}"#, value + 1)))
    };
    let seen = drive(&mut client, CLOSE_BOUND, None, true, none, wrong).await;
    // Pings at 200 and 400 ms go unanswered; the close comes when the third is due.
    seen.assert_closed(4002, "2 pings unanswered", Duration::from_millis(550));
    let pings = seen
        .others()
        .iter()
        .filter(|t| t.contains("\"ping\""))
        .count();
    assert_eq!(pings, 2, "{:?}", seen.others());
    seen.assert_frames_in_sequence();
    assert!(feed.wait_for_connections(0, LONG).await);
    let stats = feed.stats();
    assert_eq!(
        (stats.venue_closes.pings_unanswered, stats.venue_pings_sent),
        (1, 2)
    );
    assert_eq!(stats.venue_pongs_received, 2);
}

#[tokio::test]
async fn binance_closes_a_burst_of_six_messages_with_1008() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/ws?venue=binance&rate=20")).await;
    // Every kind counts: text, binary, WebSocket Ping and Pong.
    let burst = |n| match n {
        0 => vec![
            Message::text(r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#),
            Message::Ping("a".into()),
            Message::Pong("b".into()),
            Message::binary(vec![7u8; 20]),
            Message::text(r#"{"id":"x","payload":1}"#),
            Message::Ping("c".into()),
        ],
        _ => Vec::new(),
    };
    let seen = drive(
        &mut client,
        CLOSE_BOUND,
        Some(Duration::from_secs(60)),
        false,
        burst,
        no_answer,
    )
    .await;
    seen.assert_closed(1008, "too many requests", Duration::ZERO);
    assert!(feed.wait_for_connections(0, LONG).await);
    let stats = feed.stats();
    assert_eq!(stats.venue_closes.rate_limit, 1);
    assert_eq!(stats.max_client_msgs_per_sec, 6);
}

#[tokio::test]
async fn binance_keeps_a_client_at_four_messages_a_second_and_one_bursting_five() {
    let feed = start(FeedConfig::default()).await;
    let mut steady = open(&feed.url("/ws?venue=binance&rate=20")).await;
    let mut five = open(&feed.url("/ws?venue=binance&rate=20")).await;
    let every_250_ms = |n| {
        vec![if n % 2 == 0 {
            Message::Ping(Vec::new().into())
        } else {
            Message::text(r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#)
        }]
    };
    let burst_of_five = |n| match n {
        0 => (0..5).map(|_| Message::Ping(Vec::new().into())).collect(),
        _ => Vec::new(),
    };
    let (steady_seen, five_seen) = tokio::join!(
        drive(
            &mut steady,
            Duration::from_millis(3000),
            Some(Duration::from_millis(250)),
            false,
            every_250_ms,
            no_answer
        ),
        drive(
            &mut five,
            Duration::from_millis(1000),
            Some(Duration::from_secs(60)),
            false,
            burst_of_five,
            no_answer
        ),
    );
    steady_seen.assert_open();
    assert!(steady_seen.assert_frames_in_sequence() >= 40);
    assert!(
        steady_seen.others().len() >= 5,
        "SUBSCRIBE-style calls are still answered"
    );
    five_seen.assert_open();
    five_seen.assert_frames_in_sequence();
    let stats = feed.stats();
    assert_eq!(stats.venue_closes.rate_limit, 0);
    assert_eq!(stats.max_client_msgs_per_sec, 5, "{stats:?}");
    assert!(stats.sessions.iter().all(|s| s.venue == Some("binance")));
}

#[tokio::test]
async fn binance_lifetime_sends_its_notice_before_closing_with_the_code() {
    let feed = start(FeedConfig::default()).await;
    let mut client =
        open(&feed.url("/ws?venue=binance&lifetime_ms=700&notice_ms=300&close_code=1012&rate=20"))
            .await;
    let seen = drive(&mut client, CLOSE_BOUND, None, false, none, no_answer).await;
    let closed_at = seen.assert_closed(
        1012,
        "connection lifetime reached",
        Duration::from_millis(690),
    );
    let notices: Vec<_> = seen
        .texts
        .iter()
        .filter(|(_, t)| t.contains("serverShutdown"))
        .collect();
    assert_eq!(notices.len(), 1, "{:?}", seen.others());
    let (noticed_at, notice) = notices[0];
    let event = &json(notice)["event"];
    assert_eq!(event["e"], "serverShutdown");
    assert!(
        event["E"].as_u64().is_some_and(|ms| ms > 1_600_000_000_000),
        "{notice}"
    );
    assert!(
        *noticed_at >= Duration::from_millis(390),
        "notice at {noticed_at:?}"
    );
    assert!(
        *noticed_at < closed_at,
        "notice {noticed_at:?}, close {closed_at:?}"
    );
    seen.assert_frames_in_sequence();
    assert!(feed.wait_for_connections(0, LONG).await);
    let stats = feed.stats();
    assert_eq!(
        (stats.venue_closes.lifetime, stats.venue_notices_sent),
        (1, 1)
    );
}

#[tokio::test]
async fn the_server_default_venue_and_lifetime_apply_unless_the_query_overrides_them() {
    let feed = start(FeedConfig {
        venue: Some(Venue::Binance),
        lifetime: Some(Duration::from_millis(400)),
        ..FeedConfig::default()
    })
    .await;
    let mut default = open(&feed.url("/ws?rate=20")).await;
    let mut unlimited = open(&feed.url("/ws?rate=20&lifetime_ms=0")).await;
    let mut plain = open(&feed.url("/ws?rate=20&venue=none")).await;
    let burst = |n| match n {
        0 => (0..6).map(|_| Message::Ping(Vec::new().into())).collect(),
        _ => Vec::new(),
    };
    let within = Duration::from_millis(1200);
    let (default, unlimited, plain) = tokio::join!(
        drive(&mut default, CLOSE_BOUND, None, false, none, no_answer),
        drive(&mut unlimited, within, None, false, none, no_answer),
        drive(
            &mut plain,
            within,
            Some(Duration::from_secs(60)),
            false,
            burst,
            no_answer
        ),
    );
    // The notice (1000 ms by default) is clamped to the 400 ms lifetime: it comes at once.
    let closed_at = default.assert_closed(
        1001,
        "connection lifetime reached",
        Duration::from_millis(390),
    );
    let notice = default
        .texts
        .iter()
        .find(|(_, t)| t.contains("serverShutdown"));
    assert!(
        notice.is_some_and(|(at, _)| *at < closed_at),
        "no notice before the close: {:?}",
        default.others()
    );
    unlimited.assert_open();
    plain.assert_open();
    assert!(plain.assert_frames_in_sequence() >= 20);
    let stats = feed.stats();
    assert_eq!(stats.venue_closes.lifetime, 1);
    assert_eq!(
        stats.venue_closes.rate_limit, 0,
        "venue=none has no rate limit"
    );
}

#[tokio::test]
async fn unknown_venues_and_bad_knobs_are_refused_at_the_handshake() {
    let feed = start_quiet().await;
    let (status, body) = handshake_error(&feed.url("/ws?venue=kraken")).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("unknown venue \"kraken\"") && body.contains("okx"),
        "{body}"
    );
    for query in [
        "venue=binance&close_code=1002",
        "venue=okx&deadline_ms=0",
        "venue=htx&ping_every_ms=soon",
        "venue=binance&limit=0",
    ] {
        assert_eq!(
            handshake_error(&feed.url(&format!("/ws?{query}"))).await.0,
            400,
            "{query}"
        );
    }
    assert_eq!(feed.accepted_total(), 0);
}

#[tokio::test]
async fn without_a_venue_keepalive_texts_are_ordinary_messages() {
    let feed = start(FeedConfig::default()).await;
    let mut client = open(&feed.url("/ws?rate=20")).await;
    let burst = |n| match n {
        0 => vec![
            Message::text("ping"),
            Message::text(r#"{"op":"ping"}"#),
            Message::text(r#"{"pong":1}"#),
        ]
        .into_iter()
        .chain((0..6).map(|_| Message::Ping(Vec::new().into())))
        .collect(),
        _ => Vec::new(),
    };
    let seen = drive(
        &mut client,
        Duration::from_millis(600),
        Some(Duration::from_secs(60)),
        false,
        burst,
        no_answer,
    )
    .await;
    seen.assert_open();
    assert_eq!(seen.binaries, 0);
    assert!(seen.others().is_empty(), "answered: {:?}", seen.others());
    seen.assert_frames_in_sequence();
    let received = feed.received();
    assert_eq!(received.len(), 3);
    assert!(received
        .iter()
        .all(|r| !r.keepalive && r.unix_ms > 1_600_000_000_000));
    let stats = feed.stats();
    assert_eq!(stats.venue_closes, Default::default());
    assert_eq!(
        (stats.venue_pings_answered, stats.max_client_msgs_per_sec),
        (0, 0)
    );
    assert_eq!(stats.sessions[0].venue, None);
}

/// The binary, killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_takes_venue_flags_and_serves_the_venue_counters() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_feed-server"))
        .args(["--venue", "okx", "--control-port", "0", "--rate", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn feed-server");
    let stdout = child.stdout.take().expect("stdout is piped");
    let _process = Process(child);
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ws = lines.next().and_then(Result::ok).unwrap_or_default();
        let control = lines.next().and_then(Result::ok).unwrap_or_default();
        (ws, control)
    });
    let (ws, control) = timeout(LONG, lines)
        .await
        .expect("no stdout lines")
        .expect("reader");
    let ws = ws
        .strip_prefix("listening ")
        .expect("listening line")
        .to_owned();
    let control = control
        .strip_prefix("control http://")
        .expect("control line")
        .to_owned();

    let mut client = open(&format!("{ws}/ws?deadline_ms=200")).await;
    let seen = drive(&mut client, CLOSE_BOUND, None, false, none, no_answer).await;
    seen.assert_closed(4004, "no ping within 200 ms", Duration::from_millis(190));

    let (status, stats) = http(&control, "GET", "/stats").await;
    assert_eq!(status, 200);
    assert_eq!(
        stats["venue_closes"],
        json(r#"{"no_ping":1,"pings_unanswered":0,"rate_limit":0,"lifetime":0}"#)
    );
    for key in [
        "venue_pings_answered",
        "venue_pings_sent",
        "venue_pongs_received",
        "venue_notices_sent",
        "max_client_msgs_per_sec",
    ] {
        assert_eq!(stats[key], 0, "{key}: {stats}");
    }

    let mut client = connect(&format!("{ws}/ws?deadline_ms=300")).await;
    send_text(&mut client, "ping").await;
    assert_eq!(next_reply(&mut client).await, "pong");
    let (_, received) = http(&control, "GET", "/received").await;
    let ping = &received[0];
    assert_eq!(
        (&ping["text"], &ping["keepalive"]),
        (&json(r#""ping""#), &json("true"))
    );
    assert!(
        ping["unix_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 1_600_000_000_000),
        "{ping}"
    );

    let refused = Command::new(env!("CARGO_BIN_EXE_feed-server"))
        .args(["--venue", "kraken"])
        .stdin(Stdio::null())
        .output()
        .expect("run feed-server");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("unknown venue \"kraken\""),
        "{stderr}"
    );
}
