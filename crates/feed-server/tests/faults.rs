//! Fault controls: dropping, closing, stalling, refusing, and stopping the server.

mod support;

use std::time::Duration;

use feed_server::FeedConfig;
use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Reads until the connection ends; returns the close frame seen (if any) and the final error.
async fn read_to_end(client: &mut Client) -> (Option<Message>, Option<WsError>) {
    let mut close = None;
    loop {
        match timeout(LONG, client.next())
            .await
            .expect("connection did not end")
        {
            Some(Ok(message @ Message::Close(_))) => close = Some(message),
            Some(Ok(_)) => {}
            Some(Err(error)) => return (close, Some(error)),
            None => return (close, None),
        }
    }
}

#[tokio::test]
async fn drop_all_ends_connections_without_a_close_frame() {
    let feed = start(FeedConfig::default()).await;
    let mut client = connect(&feed.url("/ws?rate=100")).await;
    next_text(&mut client).await;
    assert_eq!(feed.drop_all().await, 1);
    assert_eq!(feed.connections(), 0);
    let (close, error) = read_to_end(&mut client).await;
    assert!(close.is_none(), "got a close frame: {close:?}");
    assert!(
        matches!(
            error,
            Some(WsError::Protocol(_)) | Some(WsError::Io(_)) | Some(WsError::ConnectionClosed)
        ),
        "expected an abrupt end, got {error:?}"
    );
}

#[tokio::test]
async fn close_all_sends_a_close_frame_with_the_code() {
    let feed = start(FeedConfig::default()).await;
    let mut client = connect(&feed.url("/ws?rate=100")).await;
    next_text(&mut client).await;
    let closing = tokio::spawn(async move { read_to_end(&mut client).await });
    assert_eq!(feed.close_all(4001).await, 1);
    let (close, error) = closing.await.expect("reader task");
    match close {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::from(4001)),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(error.is_none(), "closing handshake failed: {error:?}");
    assert!(feed.wait_for_connections(0, LONG).await);
}

#[tokio::test]
async fn drop_all_reaches_a_session_blocked_on_a_client_that_stopped_reading() {
    let feed = start(FeedConfig::default()).await;
    let _client = connect(&feed.url("/ws?rate=0&size=100")).await;
    wait_until_writes_block(&feed).await;
    assert_eq!(
        timeout(LONG, feed.drop_all()).await.expect("drop_all hung"),
        1
    );
    assert_eq!(feed.connections(), 0, "the blocked session was not dropped");
}

#[tokio::test]
async fn close_all_gives_up_on_a_client_that_stopped_reading_and_drops_it() {
    let feed = start(FeedConfig::default()).await;
    let _client = connect(&feed.url("/ws?rate=0&size=100")).await;
    wait_until_writes_block(&feed).await;
    assert_eq!(
        timeout(LONG, feed.close_all(1000))
            .await
            .expect("close_all hung"),
        1
    );
    assert_eq!(feed.connections(), 0, "the blocked session is still open");
}

#[tokio::test]
async fn stall_stops_pongs_until_it_ends() {
    let feed = start_quiet().await;
    let mut client = connect(&feed.url("/ws")).await;
    client
        .send(Message::Ping("before".into()))
        .await
        .expect("ping");
    assert_eq!(next(&mut client).await, Message::Pong("before".into()));

    assert_eq!(feed.stall(Duration::from_millis(1500)).await, 1);
    client
        .send(Message::Ping("during".into()))
        .await
        .expect("ping");
    assert!(
        silent_for(&mut client, Duration::from_millis(800)).await,
        "a stalled server answered"
    );
    // The pong comes once the stall is over.
    assert_eq!(next(&mut client).await, Message::Pong("during".into()));
}

#[tokio::test]
async fn stall_pauses_the_stream_without_losing_frames() {
    let feed = start(FeedConfig::default()).await;
    let mut client = connect(&feed.url("/ws?rate=50")).await;
    assert_eq!(seq(&next_text(&mut client).await), 1);
    feed.stall(Duration::from_millis(600)).await;
    let mut expected = 2;
    // Frames already in flight may still arrive; then a gap, then the sequence continues.
    let gap = loop {
        let started = tokio::time::Instant::now();
        let frame = next_text(&mut client).await;
        assert_eq!(seq(&frame), expected);
        expected += 1;
        if started.elapsed() >= Duration::from_millis(400) {
            break true;
        }
        if expected > 10 {
            break false;
        }
    };
    assert!(gap, "no pause in the stream");
    for _ in 0..3 {
        assert_eq!(seq(&next_text(&mut client).await), expected);
        expected += 1;
    }
}

#[tokio::test]
async fn refuse_closes_new_connections_right_after_accept() {
    let feed = start_quiet().await;
    let mut open = connect(&feed.url("/ws")).await;
    feed.refuse(true).await;
    let attempt = timeout(LONG, tokio_tungstenite::connect_async(feed.url("/ws")))
        .await
        .expect("connect attempt hung");
    assert!(
        attempt.is_err(),
        "a refused connection completed its handshake"
    );
    assert_eq!(feed.refused_total(), 1);
    assert_eq!(feed.accepted_total(), 1);

    // The connection that was already open still works.
    send_text(&mut open, r#"{"id":"x","payload":null}"#).await;
    assert_eq!(next_text(&mut open).await, r#"{"id":"x","payload":null}"#);

    feed.refuse(false).await;
    let _again = connect(&feed.url("/ws")).await;
    assert_eq!(feed.accepted_total(), 2);
}

#[tokio::test]
async fn unknown_paths_are_rejected_at_the_handshake() {
    let feed = start_quiet().await;
    let attempt = timeout(LONG, tokio_tungstenite::connect_async(feed.url("/nope")))
        .await
        .expect("connect attempt hung");
    match attempt {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected an HTTP 404, got {other:?}"),
    }
    let bad_query = timeout(
        LONG,
        tokio_tungstenite::connect_async(feed.url("/ws?rate=x")),
    )
    .await
    .expect("connect attempt hung");
    match bad_query {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected an HTTP 400, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_closes_connections_with_going_away() {
    let feed = start(FeedConfig::default()).await;
    let url = feed.url("/ws");
    let mut client = connect(&url).await;
    next_text(&mut client).await;
    let closing = tokio::spawn(async move { read_to_end(&mut client).await });
    timeout(LONG, feed.shutdown()).await.expect("shutdown hung");
    let (close, _) = closing.await.expect("reader task");
    match close {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a 1001 close frame, got {other:?}"),
    }
    let after = timeout(LONG, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect attempt hung");
    assert!(after.is_err(), "the server still accepts after shutdown");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let feed = start(FeedConfig::default()).await;
    let url = feed.url("/ws");
    let mut client = connect(&url).await;
    next_text(&mut client).await;
    drop(feed);
    let _ = read_to_end(&mut client).await;
    // The listener is gone once the accept loop has seen the signal.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches("/ws"))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the port still accepts connections");
}
