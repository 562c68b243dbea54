//! How a personality is chosen (server default, query), refused, or absent; the binary's flags.

use crate::common::*;

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
