//! Depth-update streaming: sequence, rate, count, size, frame forms, subscriptions starting and
//! stopping the stream, and backpressure.

mod support;

use std::time::{Duration, Instant};

use feed_server::FeedConfig;
use support::*;

#[tokio::test]
async fn fixed_rate_frames_arrive_in_sequence_at_the_rate() {
    let feed = start(FeedConfig::default()).await;
    let mut client = connect(&feed.url("/ws?rate=50&count=25")).await;
    let started = Instant::now();
    for expected in 1..=25 {
        assert_eq!(seq(&next_text(&mut client).await), expected);
    }
    let elapsed = started.elapsed();
    // 25 frames at 50/s: the first at once, the last 24 intervals of 20 ms later.
    assert!(
        elapsed >= Duration::from_millis(440),
        "too fast: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "far too slow: {elapsed:?}"
    );
}

#[tokio::test]
async fn max_rate_frames_arrive_in_sequence_without_gaps() {
    let feed = start(FeedConfig::default()).await;
    let n = 100_000;
    let mut client = connect(&feed.url(&format!("/ws?rate=0&size=100&count={n}"))).await;
    for expected in 1..=n {
        let frame = next_text(&mut client).await;
        assert_eq!(frame.len(), 100, "{frame}");
        assert_eq!(seq(&frame), expected);
    }
    assert_eq!(feed.stats().sessions[0].frames_sent, n);
}

#[tokio::test]
async fn count_stops_the_stream_but_not_the_connection() {
    let feed = start(FeedConfig::default()).await;
    let mut client = connect(&feed.url("/ws?rate=0&count=5")).await;
    for expected in 1..=5 {
        assert_eq!(seq(&next_text(&mut client).await), expected);
    }
    assert!(silent_for(&mut client, Duration::from_millis(300)).await);
    send_text(&mut client, r#"{"id":"still-there","payload":1}"#).await;
    assert_eq!(
        next_text(&mut client).await,
        r#"{"id":"still-there","payload":1}"#
    );
}

#[tokio::test]
async fn stream_path_sends_combined_frames_and_ws_path_bare_ones() {
    let feed = start(FeedConfig::default()).await;
    let mut combined = connect(&feed.url("/stream?rate=100")).await;
    let frame = json(&next_text(&mut combined).await);
    assert_eq!(frame["stream"], "btcusdt@depth@100ms");
    assert_eq!(frame["data"]["e"], "depthUpdate");
    assert_eq!(frame["data"]["s"], "BTCUSDT");
    assert_eq!(frame["data"]["U"], 1);
    assert_eq!(frame["data"]["u"], 1);
    assert!(frame["data"]["E"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(frame["data"]["b"][0].as_array().unwrap().len(), 2);
    assert!(frame["data"]["a"][0][0]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .is_ok());

    let mut bare = connect(&feed.url("/ws/ethusdt@depth?rate=100")).await;
    let frame = json(&next_text(&mut bare).await);
    assert!(frame.get("stream").is_none());
    assert_eq!(frame["e"], "depthUpdate");
    assert_eq!(frame["s"], "ETHUSDT");
    assert_eq!(frame["u"], 1);
}

#[tokio::test]
async fn size_pads_every_frame_to_exactly_that_size() {
    let feed = start(FeedConfig {
        size: 300,
        ..FeedConfig::default()
    })
    .await;
    let mut client = connect(&feed.url("/stream?rate=0&count=50")).await;
    for expected in 1..=50 {
        let frame = next_text(&mut client).await;
        assert_eq!(frame.len(), 300, "{frame}");
        assert_eq!(seq(&frame), expected);
    }
}

#[tokio::test]
async fn streams_zero_waits_for_a_subscribe_and_unsubscribe_stops_the_stream() {
    let feed = start(FeedConfig::default()).await;
    let mut client = connect(&feed.url("/stream?streams=0&rate=100")).await;
    assert!(silent_for(&mut client, Duration::from_millis(300)).await);

    send_text(
        &mut client,
        r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":1}"#,
    )
    .await;
    assert_eq!(next_text(&mut client).await, r#"{"result":null,"id":1}"#);
    for expected in 1..=3 {
        let frame = json(&next_text(&mut client).await);
        assert_eq!(frame["stream"], "ethusdt@depth");
        assert_eq!(frame["data"]["s"], "ETHUSDT");
        assert_eq!(frame["data"]["u"], expected);
    }

    send_text(
        &mut client,
        r#"{"method":"UNSUBSCRIBE","params":["ethusdt@depth"],"id":2}"#,
    )
    .await;
    assert_eq!(next_reply(&mut client).await, r#"{"result":null,"id":2}"#);
    assert!(silent_for(&mut client, Duration::from_millis(300)).await);
}

#[tokio::test]
async fn subscribed_streams_take_turns_with_one_sequence() {
    let feed = start(FeedConfig::default()).await;
    let mut client = connect(&feed.url("/stream?streams=0&rate=0&count=4")).await;
    send_text(
        &mut client,
        r#"{"method":"SUBSCRIBE","params":["a@depth","b@depth"],"id":1}"#,
    )
    .await;
    assert_eq!(next_text(&mut client).await, r#"{"result":null,"id":1}"#);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let frame = json(&next_text(&mut client).await);
        seen.push((
            frame["stream"].as_str().unwrap().to_owned(),
            frame["data"]["u"].as_u64().unwrap(),
        ));
    }
    let expected: Vec<(String, u64)> = vec![
        ("a@depth".into(), 1),
        ("b@depth".into(), 2),
        ("a@depth".into(), 3),
        ("b@depth".into(), 4),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_client_that_stops_reading_pauses_its_stream_instead_of_growing_buffers() {
    let feed = start(FeedConfig::default()).await;
    let _client = connect(&feed.url("/ws?rate=0&size=100")).await;
    let last = wait_until_writes_block(&feed).await;
    // Kernel socket buffers plus the write buffer: a few MB, far from unbounded.
    assert!(last * 100 < 64 << 20, "{last} frames were written");
}
