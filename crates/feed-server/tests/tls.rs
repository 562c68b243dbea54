//! `wss://`: the feed over TLS (frames, SUBSCRIBE, echo, the fault controls, restarts), and what
//! clients get when they trust another CA, speak another TLS version, bring no client certificate,
//! or never start TLS.

mod support;

use std::time::Duration;

use feed_server::tls::{server_config, TlsVersions};
use feed_server::{FeedConfig, FeedHandle};
use futures_util::{SinkExt, StreamExt};
use support::tls::*;
use support::*;
use tokio::io::AsyncReadExt;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use wsm_testkit::tls::TestCa;

/// A feed serving `wss://` with a `localhost` certificate from `ca`; with `client_ca`, it wants
/// client certificates from that CA.
async fn tls_feed(
    ca: &TestCa,
    versions: TlsVersions,
    client_ca: Option<&TestCa>,
    config: FeedConfig,
) -> FeedHandle {
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let tls = server_config(
        leaf.cert_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        versions,
        client_ca.map(|c| c.ca_pem().as_bytes()),
    )
    .expect("server TLS config");
    start(FeedConfig {
        tls: Some(tls),
        ..config
    })
    .await
}

async fn wait_for_tls_failures(feed: &FeedHandle, n: u64) {
    let deadline = tokio::time::Instant::now() + LONG;
    while feed.stats().tls_handshake_failures_total < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} failed TLS handshakes, saw {}",
            feed.stats().tls_handshake_failures_total
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads until the connection ends; returns the close frame seen, if any.
async fn close_frame(client: &mut TlsClient) -> Option<Message> {
    let mut close = None;
    while let Some(message) = timeout(LONG, client.next())
        .await
        .expect("connection did not end")
    {
        match message {
            Ok(message @ Message::Close(_)) => close = Some(message),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    close
}

#[tokio::test]
async fn wss_client_gets_depth_frames_subscribe_replies_and_echoes() {
    let ca = TestCa::new("feed test CA");
    let feed = tls_feed(&ca, TlsVersions::All, None, FeedConfig::default()).await;
    assert!(feed.url("/ws").starts_with("wss://127.0.0.1:"));
    assert_eq!(feed.scheme(), "wss");
    let trust = client_config(ca.ca_pem(), ALL_VERSIONS, None);
    let mut client = connect_tls(feed.addr(), "/stream?rate=0&count=200", trust)
        .await
        .expect("wss connect");
    for expected in 1..=200 {
        let frame = next_text(&mut client).await;
        assert_eq!(json(&frame)["stream"], "btcusdt@depth@100ms");
        assert_eq!(seq(&frame), expected);
    }

    send_text(
        &mut client,
        r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":7}"#,
    )
    .await;
    assert_eq!(next_reply(&mut client).await, r#"{"result":null,"id":7}"#);
    send_text(&mut client, r#"{"id":"req-1","payload":{"a":[1, 2]}}"#).await;
    assert_eq!(
        next_reply(&mut client).await,
        r#"{"id":"req-1","payload":{"a":[1, 2]}}"#
    );
    let binary = vec![9u8; 24];
    client
        .send(Message::binary(binary.clone()))
        .await
        .expect("send binary");
    loop {
        match next(&mut client).await {
            Message::Binary(data) => break assert_eq!(data.as_ref(), binary.as_slice()),
            Message::Text(_) => {}
            other => panic!("expected the binary echo, got {other:?}"),
        }
    }
    let stats = feed.stats();
    assert_eq!(
        (stats.accepted_total, stats.tls_handshake_failures_total),
        (1, 0)
    );
    assert_eq!(feed.subscriptions()[&1], ["ethusdt@depth"]);
}

#[tokio::test]
async fn a_full_rate_stream_over_tls_arrives_whole_to_its_last_frame() {
    let ca = TestCa::new("feed test CA");
    let feed = tls_feed(&ca, TlsVersions::All, None, FeedConfig::default()).await;
    let trust = client_config(ca.ca_pem(), ALL_VERSIONS, None);
    let count = 20_000u64;
    let mut client = connect_tls(
        feed.addr(),
        &format!("/ws?rate=0&size=1000&count={count}"),
        trust,
    )
    .await
    .expect("wss connect");
    // Not reading at first fills the socket, so the server's TLS writes wait with records
    // queued; the stream must still arrive whole and in order, to its last frame.
    wait_until_writes_block(&feed).await;
    for expected in 1..=count {
        let frame = next_text(&mut client).await;
        assert_eq!(frame.len(), 1000);
        assert_eq!(seq(&frame), expected);
    }
    assert!(silent_for(&mut client, Duration::from_millis(100)).await);
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails_and_the_server_counts_it() {
    let ca = TestCa::new("feed test CA");
    let feed = tls_feed(
        &ca,
        TlsVersions::All,
        None,
        FeedConfig {
            control_listen: Some("127.0.0.1:0".parse().expect("address")),
            ..FeedConfig::default()
        },
    )
    .await;
    let other = TestCa::new("a CA the feed does not use");
    let error = connect_tls(
        feed.addr(),
        "/ws",
        client_config(other.ca_pem(), ALL_VERSIONS, None),
    )
    .await
    .expect_err("the certificate is not trusted");
    assert!(
        error.starts_with("tls: ") && error.contains("UnknownIssuer"),
        "{error}"
    );
    wait_for_tls_failures(&feed, 1).await;
    assert_eq!(feed.accepted_total(), 0);

    let control = feed.control_addr().expect("control address").to_string();
    let (status, stats) = http(&control, "GET", "/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["tls_handshake_failures_total"], 1);
}

#[tokio::test]
async fn a_plain_ws_client_on_the_tls_port_fails_and_is_counted() {
    let ca = TestCa::new("feed test CA");
    let feed = tls_feed(&ca, TlsVersions::All, None, FeedConfig::default()).await;
    let plain = format!("ws://{}/ws", feed.addr());
    let result = timeout(LONG, tokio_tungstenite::connect_async(plain))
        .await
        .expect("plain connect hung");
    assert!(result.is_err(), "a plain handshake succeeded on a TLS port");
    wait_for_tls_failures(&feed, 1).await;
    assert_eq!(feed.accepted_total(), 0);
}

#[tokio::test]
async fn a_tls13_only_client_fails_against_a_tls12_only_server() {
    let ca = TestCa::new("feed test CA");
    let feed = tls_feed(&ca, TlsVersions::Tls12Only, None, FeedConfig::default()).await;
    let error = connect_tls(feed.addr(), "/ws", client_config(ca.ca_pem(), TLS13, None))
        .await
        .expect_err("no common TLS version");
    assert!(error.starts_with("tls: "), "{error}");
    wait_for_tls_failures(&feed, 1).await;

    let mut client = connect_tls(feed.addr(), "/ws", client_config(ca.ca_pem(), TLS12, None))
        .await
        .expect("a TLS 1.2 client is served");
    assert_eq!(seq(&next_text(&mut client).await), 1);
}

#[tokio::test]
async fn a_tls12_only_client_fails_against_a_tls13_only_server() {
    let ca = TestCa::new("feed test CA");
    let feed = tls_feed(&ca, TlsVersions::Tls13Only, None, FeedConfig::default()).await;
    connect_tls(feed.addr(), "/ws", client_config(ca.ca_pem(), TLS12, None))
        .await
        .expect_err("no common TLS version");
    wait_for_tls_failures(&feed, 1).await;
    let mut client = connect_tls(feed.addr(), "/ws", client_config(ca.ca_pem(), TLS13, None))
        .await
        .expect("a TLS 1.3 client is served");
    assert_eq!(seq(&next_text(&mut client).await), 1);
}

#[tokio::test]
async fn mtls_serves_only_clients_with_a_certificate_from_the_client_ca() {
    let ca = TestCa::new("feed test CA");
    let clients = TestCa::new("client CA");
    let feed = tls_feed(&ca, TlsVersions::All, Some(&clients), FeedConfig::default()).await;

    // With TLS 1.3 the client may finish its side before the server rejects it; the failure
    // then shows at the WebSocket handshake. Either way the client gets nothing.
    connect_tls(
        feed.addr(),
        "/ws",
        client_config(ca.ca_pem(), ALL_VERSIONS, None),
    )
    .await
    .expect_err("no client certificate");
    let stranger = TestCa::new("another client CA").issue_client("wsm-client");
    connect_tls(
        feed.addr(),
        "/ws",
        client_config(ca.ca_pem(), ALL_VERSIONS, Some(&stranger)),
    )
    .await
    .expect_err("a client certificate from another CA");
    wait_for_tls_failures(&feed, 2).await;

    let identity = clients.issue_client("wsm-client");
    for versions in [TLS12, TLS13] {
        let trust = client_config(ca.ca_pem(), versions, Some(&identity));
        let mut client = connect_tls(feed.addr(), "/ws", trust)
            .await
            .expect("a client certificate from the client CA");
        assert_eq!(seq(&next_text(&mut client).await), 1);
    }
    assert_eq!(feed.accepted_total(), 2);
}

#[tokio::test]
async fn a_client_that_never_starts_tls_is_dropped_after_the_handshake_timeout() {
    let ca = TestCa::new("feed test CA");
    let config = FeedConfig {
        handshake_timeout: Duration::from_millis(200),
        ..FeedConfig::default()
    };
    let feed = tls_feed(&ca, TlsVersions::All, None, config).await;
    let mut tcp = tokio::net::TcpStream::connect(feed.addr())
        .await
        .expect("tcp connect");
    let mut buf = [0u8; 64];
    let read = timeout(LONG, tcp.read(&mut buf))
        .await
        .expect("the server kept the silent connection open");
    assert!(matches!(read, Ok(0) | Err(_)), "got bytes: {read:?}");
    wait_for_tls_failures(&feed, 1).await;
}

#[tokio::test]
async fn drops_closes_and_refusals_work_over_tls_and_clients_reconnect() {
    let ca = TestCa::new("feed test CA");
    let config = FeedConfig {
        control_listen: Some("127.0.0.1:0".parse().expect("address")),
        ..FeedConfig::default()
    };
    let feed = tls_feed(&ca, TlsVersions::All, None, config).await;
    let control = feed.control_addr().expect("control address").to_string();
    let trust = client_config(ca.ca_pem(), ALL_VERSIONS, None);
    let path = "/ws?rate=200";

    // Dropped through the control endpoint, as a script would: no close frame.
    let mut client = connect_tls(feed.addr(), path, trust.clone())
        .await
        .expect("connect");
    next_text(&mut client).await;
    let (status, dropped) = http(&control, "POST", "/drop").await;
    assert_eq!((status, dropped["dropped"].as_u64()), (200, Some(1)));
    assert!(close_frame(&mut client).await.is_none());

    // A new connection starts its sequence again; a close carries the code.
    let mut client = connect_tls(feed.addr(), path, trust.clone())
        .await
        .expect("reconnect");
    assert_eq!(seq(&next_text(&mut client).await), 1);
    let reading = tokio::spawn(async move { close_frame(&mut client).await });
    assert_eq!(feed.close_all(4001).await, 1);
    match reading.await.expect("reader task") {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::from(4001)),
        other => panic!("expected a close frame, got {other:?}"),
    }

    // Refused connections are closed before TLS, so they are not TLS failures.
    feed.refuse(true).await;
    connect_tls(feed.addr(), path, trust.clone())
        .await
        .expect_err("refused");
    assert_eq!(feed.refused_total(), 1);
    feed.refuse(false).await;
    let mut client = connect_tls(feed.addr(), path, trust)
        .await
        .expect("served again");
    next_text(&mut client).await;
    assert_eq!(feed.stats().tls_handshake_failures_total, 0);
}

#[tokio::test]
async fn shutdown_closes_tls_clients_with_going_away_and_a_restart_serves_again() {
    let ca = TestCa::new("feed test CA");
    let feed = tls_feed(&ca, TlsVersions::All, None, FeedConfig::default()).await;
    let addr = feed.addr();
    let trust = client_config(ca.ca_pem(), ALL_VERSIONS, None);
    let mut client = connect_tls(addr, "/ws?rate=200", trust.clone())
        .await
        .expect("connect");
    next_text(&mut client).await;
    let reading = tokio::spawn(async move { close_frame(&mut client).await });
    feed.shutdown().await;
    match reading.await.expect("reader task") {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a 1001 close frame, got {other:?}"),
    }

    let restarted = tls_feed(
        &ca,
        TlsVersions::All,
        None,
        FeedConfig {
            listen: addr,
            ..FeedConfig::default()
        },
    )
    .await;
    let mut client = connect_tls(addr, "/ws?rate=200", trust)
        .await
        .expect("the restarted server serves");
    assert_eq!(seq(&next_text(&mut client).await), 1);
    assert_eq!(restarted.accepted_total(), 1);
}
