//! Secrets out of sight: a URL's userinfo and secret-looking query values never reach List,
//! published frames, lifecycle events, errors or logs (the store keeps the real URL, and the dial
//! uses it); a Redis password never reaches a start-up error; refused calls are counted and
//! logged with the caller's address; `/ready` reports a store that refuses writes.

mod support;

use std::process::Command;

use tonic::Code;
use wsm::lifecycle::LIFECYCLE_TOPIC;
use wsm::proto::{ConnectRequest, ListRequest, StartPublishRequest, SubscribeRequest};
use wsm_testkit::RedisServer;

use support::process::{Spawn, WsmProcess};
use support::server::{bounded, dead_port, feed, metric, with_key, Poll, Wsm, HANG};

const SECRETS: [&str; 3] = ["s3cret", "TOPSECRET", "V7"];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret:?}: {text}");
    }
}

/// The feed's URL with userinfo and secrets in the query (the feed ignores unknown keys).
fn secret_url(port: u16) -> String {
    format!("ws://alice:s3cret@127.0.0.1:{port}/ws?token=TOPSECRET&venue_id=V7&symbol=BTC")
}

fn redacted_url(port: u16) -> String {
    format!("ws://REDACTED@127.0.0.1:{port}/ws?token=REDACTED&venue_id=REDACTED&symbol=BTC")
}

#[tokio::test]
async fn list_frames_events_and_errors_show_urls_redacted_and_the_store_keeps_them() {
    bounded(async {
        let feed = feed(50).await;
        let port = feed.addr().port();
        let wsm = Wsm::start(&[
            "--redact-query-params",
            "venue_id",
            "--reconnect-base-ms",
            "50",
            "--reconnect-attempts",
            "2",
        ])
        .await;
        let mut client = wsm.client().await;
        let mut lifecycle = client
            .subscribe(SubscribeRequest {
                topic: LIFECYCLE_TOPIC.into(),
            })
            .await
            .expect("Subscribe lifecycle")
            .into_inner();
        let mut frames = client
            .subscribe(SubscribeRequest {
                topic: "md.secret".into(),
            })
            .await
            .expect("Subscribe")
            .into_inner();
        let id = client
            .connect(ConnectRequest {
                url: secret_url(port),
                auto_reconnect: true,
                ..ConnectRequest::default()
            })
            .await
            .expect("Connect (the dial uses the real URL)")
            .into_inner()
            .id;
        client
            .start_publish(StartPublishRequest {
                id: id.clone(),
                topic: "md.secret".into(),
            })
            .await
            .expect("StartPublish");

        let listed = client
            .list(ListRequest::default())
            .await
            .expect("List")
            .into_inner()
            .connections;
        assert_eq!(listed[0].url, redacted_url(port));
        let event = tokio::time::timeout(HANG, frames.message())
            .await
            .expect("a frame")
            .expect("stream")
            .expect("event");
        let cloud: serde_json::Value = serde_json::from_str(&event.cloud_event).expect("JSON");
        assert_eq!(cloud["websocketUrl"], redacted_url(port));
        let stored = wsm
            .running
            .service
            .store()
            .get(&id)
            .await
            .expect("store")
            .expect("the record");
        assert_eq!(stored.url, secret_url(port), "the store keeps the real URL");

        // Reconnects that fail put the URL into their reasons: redacted.
        feed.refuse(true).await;
        feed.drop_all().await;
        let mut events = Vec::new();
        let poll = Poll::new("the connection gives up");
        loop {
            let next = tokio::time::timeout(HANG, lifecycle.message())
                .await
                .expect("a lifecycle event")
                .expect("stream")
                .expect("event");
            let text = next.cloud_event.clone();
            events.push(text.clone());
            if text.contains("lifecycle.disconnected") {
                break;
            }
            poll.tick().await;
        }
        let all = events.join("\n");
        assert_no_secret("lifecycle events", &all);
        assert!(all.contains("REDACTED"), "{all}");

        // A failed Connect's error.
        let status = client
            .connect(ConnectRequest {
                url: secret_url(dead_port()),
                ..ConnectRequest::default()
            })
            .await
            .expect_err("nothing listens");
        assert_eq!(status.code(), Code::Unavailable);
        assert_no_secret("a Connect error", status.message());
        assert!(
            status.message().contains("REDACTED@127.0.0.1"),
            "{}",
            status.message()
        );
    })
    .await;
}

#[tokio::test]
async fn logs_of_failed_reconnects_and_ended_connections_show_urls_redacted() {
    let feed = feed(10).await;
    let wsm = WsmProcess::spawn_with(
        &["--reconnect-base-ms", "50", "--reconnect-attempts", "2"],
        &Spawn {
            capture_logs: true,
            log_level: Some("info"),
            ..Spawn::default()
        },
    );
    let mut client = wsm.client().await;
    client
        .connect(ConnectRequest {
            url: secret_url(feed.addr().port()).replace("&venue_id=V7", ""),
            auto_reconnect: true,
            ..ConnectRequest::default()
        })
        .await
        .expect("Connect");
    feed.refuse(true).await;
    feed.drop_all().await;
    let poll = Poll::new("the connection ended in the log");
    while !wsm.logs().contains("connection ended") {
        poll.tick().await;
    }
    let logs = wsm.logs();
    assert!(logs.contains("reconnect attempt failed"), "{logs}");
    assert!(logs.contains("REDACTED"), "{logs}");
    assert_no_secret("the log", &logs);
    assert!(
        !logs.contains('\u{1b}'),
        "no colour codes in a log that is not a terminal"
    );
}

#[test]
fn a_redis_password_never_reaches_a_start_up_error() {
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", dead_port());
    let out = Command::new(env!("CARGO_BIN_EXE_wsm"))
        .args(["serve", "--bind", "127.0.0.1", "-s", "0", "-g", "0"])
        .args(["--state", "redis", "--pubsub", "redis", "--redis-url", &url])
        .output()
        .expect("wsm runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("REDACTED@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn refused_calls_are_counted_by_port_and_reason_and_logged_with_the_caller() {
    let wsm = WsmProcess::spawn_with(
        &["--api-keys", "right"],
        &Spawn {
            capture_logs: true,
            ..Spawn::default()
        },
    );
    let mut client = wsm.client().await;
    for _ in 0..3 {
        let status = client
            .list(with_key(ListRequest::default(), "guess-k3y"))
            .await
            .expect_err("a wrong key");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let response = http
            .post(format!("http://{}/v1/invoke/List", wsm.http))
            .body("{}")
            .send()
            .await
            .expect("HTTP");
        assert_eq!(response.status().as_u16(), 401);
    }
    let metrics = http
        .get(format!("http://{}/metrics", wsm.http))
        .header("x-api-key", "right")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert_eq!(
        metric(
            &metrics,
            r#"wsm_auth_failures_total{port="grpc",reason="wrong"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"wsm_auth_failures_total{port="http",reason="missing"}"#
        ),
        2.0
    );
    let poll = Poll::new("the refusal logged");
    while !wsm
        .logs()
        .contains("refused a call without a valid API key")
    {
        poll.tick().await;
    }
    let logs = wsm.logs();
    assert!(logs.contains("peer=127.0.0.1:"), "{logs}");
    assert!(
        !logs.contains("guess-k3y"),
        "the key itself is never logged: {logs}"
    );
    // Rate-limited: five refusals within a second make fewer than five lines.
    let lines = logs
        .matches("refused a call without a valid API key")
        .count();
    assert!(lines < 5, "{lines} lines: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reports_a_store_that_refuses_writes() {
    bounded(async {
        let redis = RedisServer::start();
        let url = redis.url();
        let wsm = Wsm::start(&[
            "--state",
            "redis",
            "--pubsub",
            "redis",
            "--redis-url",
            &url,
            "--heartbeat-interval-seconds",
            "1",
            "--stale-threshold-seconds",
            "2",
        ])
        .await;
        let http = wsm.http_client();
        assert_eq!(http.get("/ready").await.status, 200);
        let client = redis::Client::open(url.as_str()).expect("client");
        let con = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let set_maxmemory = |bytes: &'static str| {
            let mut con = con.clone();
            async move {
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("maxmemory")
                    .arg(bytes)
                    .query_async::<()>(&mut con)
                    .await
                    .expect("CONFIG SET");
            }
        };
        // Out of memory: PING still answers, every write is refused.
        set_maxmemory("1").await;
        let poll = Poll::new("/ready reports failing writes");
        let reply = loop {
            let reply = http.get("/ready").await;
            if reply.status == 503 {
                break reply;
            }
            poll.tick().await;
        };
        let body = reply.json();
        let state = body["state"].as_str().unwrap_or_default();
        assert!(state.contains("writes failing since"), "{body}");
        assert!(state.contains("OOM"), "{body}");
        assert_eq!(http.get("/health").await.status, 200, "alive, not ready");
        set_maxmemory("0").await;
        let poll = Poll::new("/ready again once writes succeed");
        while http.get("/ready").await.status != 200 {
            poll.tick().await;
        }
    })
    .await;
}
