//! SIGTERM on a real `wsm serve` process: frames still queued for the bus are published before the
//! process exits, every upstream socket is closed with 1001 (going away), and the connection
//! records stay in the shared store for a successor instance.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use feed_server::{FeedConfig, FeedServer};
use tonic::transport::Endpoint;
use wsm::api::proto::{self, web_socket_manager_client::WebSocketManagerClient};
use wsm_testkit::{stream_entries, RedisServer};

const TOPIC: &str = "ticks.shutdown";

struct Wsm {
    child: Child,
    http: String,
    grpc: String,
}

impl Drop for Wsm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wsm serve` on free loopback ports and reads its addresses from stdout.
fn spawn_wsm(redis_url: &str) -> Wsm {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsm"))
        .args(["serve", "--bind", "127.0.0.1", "-s", "0", "-g", "0"])
        .args([
            "--state",
            "redis",
            "--pubsub",
            "redis",
            "--redis-url",
            redis_url,
        ])
        .args(["--allow-private-networks", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("wsm starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let (mut http, mut grpc) = (None, None);
    while http.is_none() || grpc.is_none() {
        let line = lines
            .next()
            .expect("wsm prints its addresses before anything else")
            .expect("stdout reads");
        if let Some(addr) = line.strip_prefix("http listening on ") {
            http = Some(addr.to_owned());
        } else if let Some(addr) = line.strip_prefix("grpc listening on ") {
            grpc = Some(addr.to_owned());
        }
    }
    Wsm {
        child,
        http: http.unwrap_or_default(),
        grpc: grpc.unwrap_or_default(),
    }
}

/// One metric's value from the `/metrics` text.
async fn metric(http: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics has a body");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is missing from /metrics:\n{text}"))
}

fn seqs(entries: &[wsm_testkit::StreamEntry]) -> Vec<u64> {
    entries
        .iter()
        .map(|e| {
            let data = e.field("data").expect("every entry has a data field");
            let event: serde_json::Value = serde_json::from_slice(data).expect("data is JSON");
            event["seq"].as_u64().expect("every event has a seq")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_queued_frames_closes_sockets_with_1001_and_keeps_records() {
    let redis = RedisServer::start();
    let feed = FeedServer::start(FeedConfig {
        rate: 2000,
        auto_stream: false,
        ..FeedConfig::default()
    })
    .await
    .expect("the feed server starts");
    let wsm = spawn_wsm(&redis.url());
    let channel = Endpoint::from_shared(format!("http://{}", wsm.grpc))
        .unwrap()
        .connect()
        .await
        .expect("the gRPC port accepts");
    let mut client = WebSocketManagerClient::new(channel);

    let id = client
        .connect(proto::ConnectRequest {
            url: feed.url("/ws"),
            ..Default::default()
        })
        .await
        .expect("Connect succeeds")
        .into_inner()
        .id;
    client
        .start_publish(proto::StartPublishRequest {
            id: id.clone(),
            topic: TOPIC.into(),
        })
        .await
        .expect("StartPublish succeeds");
    // Frames flow only after the SUBSCRIBE, so every received frame is one to publish.
    client
        .send_raw(proto::SendRawRequest {
            id: id.clone(),
            message: br#"{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}"#.to_vec(),
            content_type: "application/json".into(),
            replay_on_reconnect: false,
        })
        .await
        .expect("SendRaw succeeds");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream_entries(&redis.url(), TOPIC).await.len() < 200 {
        assert!(Instant::now() < deadline, "frames never reached the stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Hold the bus: Redis refuses writes for 2 s, so received frames wait in the publish queue.
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&wsm.http, "wsm_publish_queue_frames").await == 0 {
        assert!(
            Instant::now() < deadline,
            "no frame ever waited in the queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received_before = metric(&wsm.http, "wsm_frames_received_total").await;

    let status = Command::new("kill")
        .args(["-TERM", &wsm.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut wsm = wsm;
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = wsm.child.try_wait().expect("the child can be waited on") {
            break exit;
        }
        assert!(Instant::now() < deadline, "wsm did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "wsm exits cleanly on SIGTERM: {exit:?}");

    let codes = feed.stats().client_close_codes;
    assert_eq!(
        codes.get(&1001),
        Some(&1),
        "the upstream saw a 1001 close: {codes:?}"
    );

    let seqs = seqs(&stream_entries(&redis.url(), TOPIC).await);
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "the stream holds every seq once, in order");
    assert!(
        seqs.len() as u64 >= received_before,
        "{} published, but {received_before} were received before SIGTERM: queued frames were lost",
        seqs.len()
    );

    let snapshot = wsm_testkit::RedisSnapshot::take(&redis.url()).await;
    let key = format!("websocketmanager||websocketmanager.connection.{id}");
    assert!(
        snapshot.keys.contains_key(&key),
        "the record stays for a successor: {:?}",
        snapshot.keys.keys().collect::<Vec<_>>()
    );
}
