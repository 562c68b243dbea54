//! The whole chain, end to end, as it runs in production: the C host harness (a WorkManager host
//! simulator) `dlopen`s the built `libcontroller` and delivers command events one at a time → the
//! plugin's `gateway_call` → HTTP `POST /v1/invoke/{Method}` → the WSM server, on a real Redis for
//! both its connection records and pub/sub → a real WebSocket feed. The feed's frames are read back
//! from the Redis stream and checked as the Dapr-format CloudEvents a subscriber would receive.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;

use support::host_sim::Worker;
use support::live_wsm::LiveWsm;

const TOPIC: &str = "md.e2e.btcusdt";
const STREAM: &str = "btcusdt@depth@100ms";
/// Generous bounds against hangs, never timing assertions.
const WAIT: Duration = Duration::from_secs(20);

/// Redis, the feed and a WSM server with Redis backends, for as long as the test holds this.
struct Stack {
    redis: wsm_testkit::RedisServer,
    live: LiveWsm,
    /// The feed's URL: `ws://`, or `wss://localhost:…` when the feed serves TLS.
    feed_url: String,
    _tls: Option<tempfile::TempDir>,
}

fn stack() -> Stack {
    let redis = wsm_testkit::RedisServer::start();
    let live = LiveWsm::start(&wsm_flags(&redis.url(), None));
    let feed_url = live.feed.url("/ws");
    Stack {
        redis,
        live,
        feed_url,
        _tls: None,
    }
}

/// The same stack with the feed on `wss://`, its certificate from a CA made now, which WSM is
/// told to trust with `--ca-file`.
fn tls_stack() -> Stack {
    let redis = wsm_testkit::RedisServer::start();
    let ca = wsm_testkit::tls::TestCa::new("e2e test CA");
    let leaf = ca.issue(&["localhost"]);
    let dir = tempfile::tempdir().expect("a directory for the CA file");
    let ca_file = ca.write_ca_file(dir.path());
    let tls = feed_server::tls::server_config(
        leaf.cert_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        feed_server::tls::TlsVersions::All,
        None,
    )
    .expect("the feed's TLS configuration");
    let ca_file = ca_file.to_str().expect("a UTF-8 path").to_owned();
    let live = LiveWsm::start_with(&wsm_flags(&redis.url(), Some(&ca_file)), Some(tls));
    let feed_url = live.feed.url_for_host("localhost", "/ws");
    Stack {
        redis,
        live,
        feed_url,
        _tls: Some(dir),
    }
}

fn wsm_flags<'a>(redis: &'a str, ca_file: Option<&'a str>) -> Vec<&'a str> {
    let mut flags = vec![
        "--state",
        "redis",
        "--pubsub",
        "redis",
        "--redis-url",
        redis,
        "--instance-id",
        "wsm-e2e",
        "--log-level",
        "warn",
    ];
    if let Some(ca_file) = ca_file {
        flags.extend(["--ca-file", ca_file]);
    }
    flags
}

impl Stack {
    /// Every entry of the topic's Redis stream, with its `data` field parsed: the CloudEvent.
    fn events(&self) -> Vec<Value> {
        let entries = self
            .live
            .runtime
            .block_on(wsm_testkit::stream_entries(&self.redis.url(), TOPIC));
        entries
            .iter()
            .map(|entry| {
                // Dapr's Redis pub/sub: `XADD <topic> * data <envelope> metadata <json>`.
                let names: Vec<&str> = entry.fields.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(names, ["data", "metadata"], "entry {}", entry.id);
                let data = entry.field("data").expect("a `data` field");
                serde_json::from_slice(data).unwrap_or_else(|e| {
                    panic!(
                        "entry {} is not a JSON CloudEvent: {e}: {}",
                        entry.id,
                        String::from_utf8_lossy(data)
                    )
                })
            })
            .collect()
    }

    /// Polls the stream until it holds at least `n` events.
    fn wait_for_events(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.events();
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Redis keys that hold connection records.
    fn record_keys(&self) -> BTreeSet<String> {
        let snapshot = self
            .live
            .runtime
            .block_on(wsm_testkit::RedisSnapshot::take(&self.redis.url()));
        snapshot
            .keys
            .into_keys()
            .filter(|k| {
                k.contains("websocketmanager.connection.") && !k.ends_with("connection.index")
            })
            .collect()
    }

    fn wait_for_feed_connections(&self, n: usize) -> bool {
        self.live
            .runtime
            .block_on(self.live.feed.wait_for_connections(n, WAIT))
    }
}

fn id_of(reply: &Value) -> String {
    assert_eq!(reply["success"], true, "{reply}");
    reply["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the reply names the connection: {reply}"))
        .to_owned()
}

fn has_record(keys: &BTreeSet<String>, id: &str) -> bool {
    keys.iter()
        .any(|k| k.ends_with(&format!("connection.{id}")))
}

#[test]
fn host_to_plugin_to_wsm_on_redis_to_feed_and_back() {
    whole_chain(&stack());
}

/// The same chain to a `wss://` feed, as every real venue is.
#[test]
fn host_to_plugin_to_wsm_on_redis_to_a_wss_feed_and_back() {
    let stack = tls_stack();
    assert!(
        stack.feed_url.starts_with("wss://localhost:"),
        "{}",
        stack.feed_url
    );
    whole_chain(&stack);
}

fn whole_chain(stack: &Stack) {
    let feed_url = stack.feed_url.clone();
    let mut worker = Worker::start(&stack.live.http);
    let mut sent_ids: Vec<&str> = Vec::new();

    // Connect, subscribe upstream, publish to a topic: the job the controller exists for.
    sent_ids.push("e2e-create");
    let created = worker.call(&format!(
        r#"@correlationid=e2e-create @subject=btc {{"command":"create","url":"{feed_url}","auto_reconnect":true,"tags":{{"desk":"e2e","worker":"a"}}}}"#
    ));
    let id = id_of(&created);
    assert_eq!(created["status"], "connected", "{created}");
    sent_ids.push("e2e-subscribe");
    let subscribed = worker.call(&format!(
        r#"@correlationid=e2e-subscribe {{"command":"subscribe","id":"{id}","params":["{STREAM}"]}}"#
    ));
    assert_eq!(subscribed["success"], true, "{subscribed}");
    sent_ids.push("e2e-publish");
    let published = worker.call(&format!(
        r#"@correlationid=e2e-publish {{"command":"publish","id":"{id}","topic":"{TOPIC}"}}"#
    ));
    assert_eq!(
        published,
        json!({"command":"publish","success":true,"id":id,"topic":TOPIC})
    );

    // A correlated request over the socket: the feed echoes the envelope, WSM matches it to this
    // call by its id and hands back the echo, not publishing it.
    sent_ids.push("e2e-send");
    let answered = worker.call(&format!(
        r#"@correlationid=e2e-send {{"command":"send","id":"{id}","text":"{{\"ping\":42}}","timeout_ms":5000}}"#
    ));
    assert_eq!(answered["success"], true, "{answered}");
    let echo: Value = serde_json::from_str(
        answered["response_text"]
            .as_str()
            .unwrap_or_else(|| panic!("a text response: {answered}")),
    )
    .expect("the echo is JSON");
    assert_eq!(echo["payload"], json!({"ping":42}), "{answered}");

    // The feed's frames, read back from Redis as a Dapr subscriber would see them.
    let events = stack.wait_for_events(50);
    assert!(
        events.len() >= 50,
        "50 frames within {WAIT:?}, got {}",
        events.len()
    );
    let mut last_u = None;
    for (i, event) in events.iter().enumerate() {
        let seq = event["seq"].as_u64().expect("seq");
        assert_eq!(event["specversion"], "1.0", "{event}");
        assert_eq!(event["type"], "com.dapr.event.sent", "{event}");
        assert_eq!(event["datacontenttype"], "application/json", "{event}");
        assert_eq!(event["topic"], TOPIC, "{event}");
        assert_eq!(event["pubsubname"], "pubsub", "{event}");
        assert_eq!(event["source"], "websocketmanager", "{event}");
        assert_eq!(event["websocketId"], id.as_str(), "{event}");
        assert_eq!(event["websocketUrl"], feed_url.as_str(), "{event}");
        assert_eq!(event["epoch"], 1, "{event}");
        assert_eq!(event["contentType"], "text/plain", "{event}");
        assert_eq!(event["timestamp"], event["time"], "{event}");
        assert_eq!(event["id"], format!("{id}:1:{seq}"), "{event}");
        for trace in ["traceid", "traceparent", "tracestate"] {
            assert_eq!(event[trace], "", "daprd's empty trace attributes: {event}");
        }
        assert!(
            event["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{event}"
        );
        // The frame itself, as the feed sent it: a depth update of the subscribed stream, in order
        // and none missing (the feed counts `u` 1, 2, 3, … per connection).
        let frame: Value = serde_json::from_str(
            event["data"]
                .as_str()
                .unwrap_or_else(|| panic!("a text frame travels as a JSON string: {event}")),
        )
        .expect("the frame is the feed's JSON");
        assert_eq!(frame["e"], "depthUpdate", "{event}");
        assert_eq!(frame["s"], "BTCUSDT", "{event}");
        let u = frame["u"].as_u64().expect("the feed's update id");
        if i > 0 {
            let prev = &events[i - 1];
            assert_eq!(prev["seq"].as_u64().map(|s| s + 1), Some(seq), "seq gap");
            assert_eq!(last_u.map(|v: u64| v + 1), Some(u), "frame lost upstream");
        }
        last_u = Some(u);
    }
    // The echo answered the Send and was not published.
    assert!(
        events.iter().all(|e| !e["data"]
            .as_str()
            .unwrap_or_default()
            .contains("\"payload\"")),
        "the correlated echo was published"
    );

    // The SUBSCRIBE the plugin built reached the feed.
    let subscriptions = stack.live.feed.subscriptions();
    assert!(
        subscriptions
            .values()
            .any(|streams| streams == &vec![STREAM.to_owned()]),
        "{subscriptions:?}"
    );

    // Two more connections from this worker, one from another worker.
    let more: Vec<String> = (0..2)
        .map(|_| {
            id_of(&worker.call(&format!(
                r#"{{"command":"create","url":"{feed_url}","tags":{{"desk":"e2e","worker":"a"}}}}"#
            )))
        })
        .collect();
    sent_ids.extend([""; 2]);
    let mut other = Worker::start(&stack.live.http);
    let others = id_of(&other.call(&format!(
        r#"{{"command":"create","url":"{feed_url}","tags":{{"desk":"e2e","worker":"b"}}}}"#
    )));
    assert!(
        stack.wait_for_feed_connections(4),
        "four sockets at the feed"
    );
    let records = stack.record_keys();
    for conn in more.iter().chain([&id, &others]) {
        assert!(
            has_record(&records, conn),
            "{conn} has a record in Redis: {records:?}"
        );
    }
    sent_ids.push("e2e-list");
    let listed =
        worker.call(r#"@correlationid=e2e-list {"command":"list","filters":{"desk":"e2e"}}"#);
    let rows = listed["connections"].as_array().expect("list rows");
    assert_eq!(rows.len(), 4, "{listed}");
    let row = rows
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} listed: {listed}"));
    assert_eq!(row["topic"], TOPIC, "{row}");
    assert_eq!(row["status"], "connected", "{row}");
    assert_eq!(row["instance_id"], "wsm-e2e", "{row}");

    // `stop` disconnects everything this worker created, and only that.
    sent_ids.push("e2e-stop");
    let stopped = worker.call(r#"@correlationid=e2e-stop {"command":"stop"}"#);
    assert_eq!(
        stopped,
        json!({"command":"stop","success":true,"message":"disconnected 3 connections"})
    );
    let exit = worker.finish();
    assert!(exit.success, "worker A's host:\n{}", exit.stderr);
    assert!(
        exit.stderr
            .contains("host_sim: 8 calls, 8 replies ok, 0 bad; 8 results freed"),
        "{}",
        exit.stderr
    );
    // Every reply carried its request's correlationid back, and none was invented.
    let expected: Vec<Option<String>> = sent_ids
        .iter()
        .map(|s| (!s.is_empty()).then(|| (*s).to_owned()))
        .collect();
    assert_eq!(exit.reply_correlation_ids(), expected, "{}", exit.stderr);

    assert!(
        stack.wait_for_feed_connections(1),
        "only worker B's socket is left at the feed, has {}",
        stack.live.feed.connections()
    );
    let records = stack.record_keys();
    for conn in more.iter().chain([&id]) {
        assert!(
            !has_record(&records, conn),
            "{conn}'s record is gone from Redis: {records:?}"
        );
    }
    assert!(has_record(&records, &others), "{records:?}");
    let left = other.call(r#"{"command":"list"}"#);
    let rows = left["connections"].as_array().expect("list rows");
    assert_eq!(rows.len(), 1, "{left}");
    assert_eq!(rows[0]["id"], others.as_str(), "{left}");
    // Nothing more is published for the stopped connection.
    let before = stack.events().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stack.events().len(), before, "frames after stop");
    let exit = other.finish();
    assert!(exit.success, "worker B's host:\n{}", exit.stderr);
}
