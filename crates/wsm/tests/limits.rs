//! Limits that hold under concurrency and hostile input, through real gRPC into an in-process
//! `wsm serve` and a real feed server: connection slots reserved before the dial, the Send timeout
//! cap, abandoned Sends forgotten, bounded handshake headers and URLs, caller mistakes as
//! INVALID_ARGUMENT, and the trimmed lifecycle stream.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use feed_server::FeedConfig;
use tonic::transport::Channel;
use tonic::Code;
use wsm::backends::redis::{RedisConfig, RedisPublisher};
use wsm::backends::Publisher;
use wsm::lifecycle::LIFECYCLE_TOPIC;
use wsm::proto::web_socket_manager_client::WebSocketManagerClient;
use wsm::proto::{ConnectRequest, ListRequest, SendRequest};
use wsm_testkit::RedisServer;

use support::server::{bounded, dead_port, feed, feed_with, metric, Poll, Wsm};

type Client = WebSocketManagerClient<Channel>;

fn connect_request(url: impl Into<String>) -> ConnectRequest {
    ConnectRequest {
        url: url.into(),
        ..ConnectRequest::default()
    }
}

/// Several channels, so thousands of calls are really concurrent (one HTTP/2 connection carries
/// at most `--grpc-max-concurrent-streams` of them at a time).
async fn clients(wsm: &Wsm, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(wsm.client().await);
    }
    clients
}

/// Fires `total` Connects to `url` at once; the codes they got, counted.
async fn concurrent_connects(clients: &[Client], url: &str, total: usize) -> HashMap<Code, usize> {
    let calls = (0..total).map(|i| {
        let mut client = clients[i % clients.len()].clone();
        let url = url.to_owned();
        tokio::spawn(async move {
            match client.connect(connect_request(url)).await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            }
        })
    });
    let mut codes = HashMap::new();
    for call in futures_util::future::join_all(calls).await {
        *codes.entry(call.expect("the call task")).or_default() += 1;
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_concurrent_connects_never_pass_max_connections() {
    bounded(async {
        let feed = feed(1).await;
        let wsm = Wsm::start(&["--max-connections", "500"]).await;
        let clients = clients(&wsm, 8).await;
        let codes = concurrent_connects(&clients, &feed.url("/ws"), 2000).await;
        assert_eq!(codes.get(&Code::Ok), Some(&500), "{codes:?}");
        assert_eq!(
            codes.get(&Code::ResourceExhausted),
            Some(&1500),
            "{codes:?}"
        );
        let mut client = clients[0].clone();
        let listed = client
            .list(ListRequest::default())
            .await
            .expect("List")
            .into_inner()
            .connections;
        assert_eq!(listed.len(), 500);
        assert!(
            feed.wait_for_connections(500, Duration::from_secs(10))
                .await
        );
        assert_eq!(
            feed.stats().connections,
            500,
            "no dial beyond the limit was made"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_dials_give_their_slots_back() {
    bounded(async {
        let feed = feed(1).await;
        let wsm = Wsm::start(&["--max-connections", "10"]).await;
        let clients = clients(&wsm, 4).await;
        let refused = format!("ws://127.0.0.1:{}/ws", dead_port());
        let codes = concurrent_connects(&clients, &refused, 1000).await;
        assert_eq!(codes.get(&Code::Ok), None, "{codes:?}");
        assert!(
            codes.get(&Code::Unavailable).is_some_and(|n| *n >= 10),
            "{codes:?}"
        );
        // Every slot came back: the whole limit is usable again.
        let codes = concurrent_connects(&clients, &feed.url("/ws"), 30).await;
        assert_eq!(codes.get(&Code::Ok), Some(&10), "{codes:?}");
        assert_eq!(codes.get(&Code::ResourceExhausted), Some(&20), "{codes:?}");
    })
    .await;
}

#[tokio::test]
async fn send_timeouts_over_five_minutes_are_invalid_arguments() {
    bounded(async {
        let feed = feed(1).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = client
            .connect(connect_request(feed.url("/ws")))
            .await
            .expect("Connect")
            .into_inner()
            .id;
        let send = |timeout_ms| SendRequest {
            id: id.clone(),
            message: br#"{"ping":1}"#.to_vec(),
            timeout_ms,
            content_type: "application/json".into(),
        };
        for too_long in [300_001, i32::MAX] {
            let status = client.send(send(too_long)).await.expect_err("too long");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains("at most 300000"), "{status:?}");
        }
        let answered = client
            .send(send(300_000))
            .await
            .expect("the cap itself is fine");
        assert!(!answered.into_inner().response.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_abandoned_by_their_callers_are_forgotten_at_once() {
    bounded(async {
        // No echo: nothing ever answers, so only the caller's cancel can end these requests.
        let feed = feed_with(FeedConfig {
            echo: false,
            rate: 1,
            ..FeedConfig::default()
        })
        .await;
        let wsm = Wsm::start(&[]).await;
        let clients = clients(&wsm, 8).await;
        let mut client = clients[0].clone();
        let id = client
            .connect(connect_request(feed.url("/ws")))
            .await
            .expect("Connect")
            .into_inner()
            .id;
        let pending = || async {
            let text = wsm.http_client().get("/metrics").await.body;
            metric(&text, "wsm_pending_requests")
        };
        let calls: Vec<_> = (0..1000)
            .map(|i| {
                let mut client = clients[i % clients.len()].clone();
                let request = SendRequest {
                    id: id.clone(),
                    message: format!("{{\"n\":{i}}}").into_bytes(),
                    timeout_ms: 60_000,
                    content_type: "application/json".into(),
                };
                tokio::spawn(async move { client.send(request).await })
            })
            .collect();
        let poll = Poll::new("1000 Sends pending");
        while pending().await < 1000.0 {
            poll.tick().await;
        }
        // The callers give up (their RPCs are cancelled), long before the 60 s timeout.
        for call in &calls {
            call.abort();
        }
        let poll = Poll::new("abandoned Sends forgotten");
        while pending().await > 0.0 {
            poll.tick().await;
        }
    })
    .await;
}

#[tokio::test]
async fn handshake_headers_are_bounded_in_number_and_size() {
    bounded(async {
        let feed = feed(1).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let headers = |n: usize, value: &str| -> HashMap<String, String> {
            (0..n)
                .map(|i| (format!("x-h{i}"), value.to_owned()))
                .collect()
        };
        // 24,572 headers made the handshake panic before the limit existed.
        for (request, expected) in [
            (headers(24_572, "v"), "at most 100 handshake headers"),
            (headers(101, "v"), "at most 100 handshake headers"),
            (headers(2, &"v".repeat(9000)), "at most 16384 bytes"),
            (
                [("Host".to_owned(), "elsewhere".to_owned())].into(),
                "sets this header itself",
            ),
        ] {
            let status = client
                .connect(ConnectRequest {
                    headers: request,
                    ..connect_request(feed.url("/ws"))
                })
                .await
                .expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(expected), "{status:?}");
        }
        client
            .connect(ConnectRequest {
                headers: headers(100, "v"),
                ..connect_request(feed.url("/ws"))
            })
            .await
            .expect("100 headers are fine");
    })
    .await;
}

#[tokio::test]
async fn urls_are_bounded_and_caller_mistakes_are_invalid_arguments_echoed_short() {
    bounded(async {
        let feed = feed(1).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let port = feed.addr().port();
        let huge = format!("ws://127.0.0.1:{port}/{}", "a".repeat(20 << 20));
        for (url, expected) in [
            (huge.clone(), "at most 8192"),
            (
                format!("ws://127.0.0.1:{port}/{}", "a".repeat(8200)),
                "at most 8192",
            ),
            ("ws://127.0.0.1:65616/ws".to_owned(), "port"),
            (
                "wss://xn--a.example/ws".to_owned(),
                "internationalized domain name",
            ),
            ("ws://exa mple.com/ws".to_owned(), "invalid URL"),
            ("ws://127.0.0.1/ws#part".to_owned(), "fragment"),
            ("127.0.0.1:9/ws".to_owned(), "not an absolute URL"),
            ("http://127.0.0.1:9/ws".to_owned(), "ws:// or wss://"),
        ] {
            let status = client
                .connect(connect_request(url.clone()))
                .await
                .expect_err("refused");
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{}: {status:?}",
                &url[..url.len().min(60)]
            );
            assert!(status.message().contains(expected), "{}", status.message());
            assert!(
                status.message().len() < 1024,
                "a short error, not the URL back"
            );
        }
        // Schemes and hosts are case-insensitive (RFC 3986): an uppercase scheme connects, and
        // the record shows the URL normalized.
        let id = client
            .connect(connect_request(format!("WS://LocalHost:{port}/ws")))
            .await
            .expect("an uppercase scheme connects")
            .into_inner()
            .id;
        let listed = client
            .list(ListRequest::default())
            .await
            .expect("List")
            .into_inner()
            .connections;
        let record = listed.iter().find(|c| c.id == id).expect("listed");
        assert_eq!(record.url, format!("ws://localhost:{port}/ws"));
    })
    .await;
}

#[tokio::test]
async fn the_lifecycle_stream_is_trimmed_and_data_streams_are_not() {
    let redis = RedisServer::start();
    let publisher = RedisPublisher::connect(&RedisConfig {
        url: redis.url(),
        lifecycle_max_len: Some(100),
        ..RedisConfig::default()
    })
    .await
    .expect("publisher");
    let event = br#"{"specversion":"1.0","id":"x","source":"s","type":"t","data":{}}"#.to_vec();
    let batch = vec![event; 50];
    for _ in 0..40 {
        publisher
            .publish(LIFECYCLE_TOPIC, &batch)
            .await
            .expect("lifecycle");
        publisher.publish("md.data", &batch).await.expect("data");
    }
    let client = redis::Client::open(redis.url()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let len = |key: &'static str| {
        let mut con = con.clone();
        async move {
            redis::cmd("XLEN")
                .arg(key)
                .query_async::<u64>(&mut con)
                .await
                .expect("XLEN")
        }
    };
    let lifecycle = len(LIFECYCLE_TOPIC).await;
    // MAXLEN ~ trims whole stream nodes (100 entries each by default): about 100, never 2000.
    assert!(
        (100..=300).contains(&lifecycle),
        "lifecycle stream: {lifecycle} entries"
    );
    assert_eq!(
        len("md.data").await,
        2000,
        "data streams keep Dapr's default (untrimmed)"
    );
    let _ = redis::cmd("PING").query_async::<String>(&mut con).await;
}
