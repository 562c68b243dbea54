//! The upstream feed server process SIGKILLed and started again on its port ten times.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use wsm_testkit::{stream_entries, RedisServer};

use crate::support::process::WsmProcess;
use crate::support::server::{bounded, Poll};

use super::common::{http, open_publishing, published, Event, Metrics, ONE_AT_A_TIME};

const LIFECYCLE: &str = "websocketmanager.lifecycle";

/// A `feed-server` process (the feed server's own binary) on a fixed port, controlled over its
/// HTTP control endpoint.
struct FeedProcess {
    child: Child,
    control: String,
    _stdout: BufReader<ChildStdout>,
}

impl FeedProcess {
    fn spawn(listen: SocketAddr) -> FeedProcess {
        let listen = listen.to_string();
        let mut child = Command::new(wsm_testkit::feed_server_bin())
            .args(["--listen", &listen, "--rate", "400", "--wait-for-subscribe"])
            .args(["--control-port", "0", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the feed server process starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut control = None;
        let mut listening = false;
        while control.is_none() || !listening {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).expect("stdout reads");
            assert!(n > 0, "the feed server process exited before listening");
            if let Some(addr) = line.trim().strip_prefix("control http://") {
                control = Some(format!("http://{addr}"));
            }
            listening |= line.starts_with("listening ws://");
        }
        FeedProcess {
            child,
            control: control.unwrap_or_default(),
            _stdout: stdout,
        }
    }

    /// SIGKILL, and reaps the process.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A control call (`GET /stats`, `POST /stall?ms=N`, ...) and its JSON answer.
    async fn call(&self, method: reqwest::Method, path: &str) -> Value {
        let body = http()
            .request(method, format!("{}{path}", self.control))
            .send()
            .await
            .expect("the feed's control endpoint answers")
            .bytes()
            .await
            .expect("a whole body");
        serde_json::from_slice(&body).expect("JSON from the control endpoint")
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path).await
    }

    /// The texts the one session of this process received, once it has received `greeting`
    /// messages and sent at least `frames`.
    async fn session(&self, greeting: usize, frames: u64) -> Vec<String> {
        let poll = Poll::new("the feed's session to be greeted and streaming");
        loop {
            let stats = self.get("/stats").await;
            assert!(
                stats["accepted_total"].as_u64() <= Some(1),
                "wsm opened more than one session to one feed process: {stats}"
            );
            let sent = stats["sessions"][0]["frames_sent"].as_u64().unwrap_or(0);
            let texts: Vec<String> = self
                .get("/received")
                .await
                .as_array()
                .expect("a list")
                .iter()
                .filter_map(|r| r["text"].as_str().map(str::to_owned))
                .collect();
            if texts.len() >= greeting && sent >= frames {
                return texts;
            }
            poll.tick().await;
        }
    }

    async fn frames_sent(&self) -> u64 {
        self.get("/stats").await["sessions"][0]["frames_sent"]
            .as_u64()
            .expect("one session")
    }

    /// Stops the session writing and returns what it sent, once that no longer changes (a
    /// stall takes effect after the step in progress).
    async fn stall_and_count(&self) -> u64 {
        self.call(reqwest::Method::POST, "/stall?ms=600000").await;
        let poll = Poll::new("the feed process to stop sending");
        let mut last = self.frames_sent().await;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.frames_sent().await;
            if now == last {
                return now;
            }
            last = now;
            poll.tick().await;
        }
    }
}

impl Drop for FeedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One session of the feed, as the test saw it.
struct FeedSession {
    epoch: u64,
    /// Frames the feed sent on it: exactly, or at least (killed while streaming).
    sent: u64,
    exact: bool,
}

/// The feed server process is SIGKILLed ten times and started again on the same port. wsm
/// reconnects each time; every new session receives `on_connect` and then the replay messages in
/// order; the published events carry epochs 1..=11 in order with `seq` counting on from 1 without
/// a gap; and in every epoch the published depth updates are the feed's frames 1..=n of that
/// session: all it sent (stopped first, so the count is exact), or at least all it had sent
/// shortly before it was killed while streaming (every other cycle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_killed_and_restarted_ten_times() {
    let _one = ONE_AT_A_TIME.lock().await;
    bounded(async {
        const TOPIC: &str = "faults.feed.restarts";
        const KILLS: u64 = 10;
        let hello = r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#;
        let subscribes = [
            r#"{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":2}"#,
            r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":3}"#,
        ];
        let greeting: Vec<String> = std::iter::once(hello)
            .chain(subscribes)
            .map(str::to_owned)
            .collect();

        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let mut feed = FeedProcess::spawn(listen);
        let redis = RedisServer::start();
        let url = redis.url();
        let wsm = WsmProcess::spawn(&[
            "--pubsub",
            "redis",
            "--redis-url",
            &url,
            "--reconnect-base-ms",
            "50",
            "--reconnect-attempts",
            "0",
        ]);
        let id = open_publishing(
            &wsm,
            &format!("ws://{listen}/ws"),
            true,
            &[hello],
            TOPIC,
            &subscribes,
        )
        .await;

        let mut sessions = Vec::new();
        for epoch in 1..=KILLS + 1 {
            let texts = feed.session(greeting.len(), 40).await;
            assert_eq!(
                texts, greeting,
                "epoch {epoch}: the session received on_connect, then the replay messages in order"
            );
            // Odd epochs end quietly: the feed stops writing first, so what it sent is exact. Even
            // ones are killed while frames are flowing: the count read just before is a floor.
            let quiet = epoch % 2 == 1 || epoch == KILLS + 1;
            let sent = if quiet {
                feed.stall_and_count().await
            } else {
                feed.frames_sent().await
            };
            sessions.push(FeedSession {
                epoch,
                sent,
                exact: quiet,
            });
            if epoch <= KILLS {
                feed.kill();
                feed = FeedProcess::spawn(listen);
            }
        }

        // Everything of the last epoch is published (the feed is stalled; its last update is in).
        let last_sent = sessions.last().map_or(0, |s| s.sent);
        let poll = Poll::new("the last epoch's updates to be published");
        let events = loop {
            let events = published(&url, TOPIC).await;
            let done = events
                .iter()
                .any(|e| e.epoch == KILLS + 1 && e.update == Some(last_sent));
            if done {
                break events;
            }
            poll.tick().await;
        };

        // seq counts on from 1 across reconnects, without a gap; epochs go up one at a time.
        let mut last: Option<&Event> = None;
        for e in &events {
            match last {
                None => assert_eq!((e.epoch, e.seq), (1, 1), "the first event"),
                Some(prev) => {
                    assert_eq!(e.seq, prev.seq + 1, "a gap or repeat before entry {}", e.id);
                    assert!(
                        e.epoch == prev.epoch || e.epoch == prev.epoch + 1,
                        "epoch {} follows epoch {} at entry {}",
                        e.epoch,
                        prev.epoch,
                        e.id
                    );
                }
            }
            last = Some(e);
        }
        let epochs: BTreeSet<u64> = events.iter().map(|e| e.epoch).collect();
        assert_eq!(
            epochs,
            (1..=KILLS + 1).collect(),
            "one epoch per (re)connect"
        );

        let mut lost_total = 0;
        println!("epoch  sent        published  replies    lost");
        for session in &sessions {
            let of_epoch: Vec<&Event> =
                events.iter().filter(|e| e.epoch == session.epoch).collect();
            let updates: Vec<u64> = of_epoch.iter().filter_map(|e| e.update).collect();
            let replies: Vec<u64> = of_epoch.iter().filter_map(|e| e.reply).collect();
            let n = updates.len() as u64;
            let lost = session.sent.saturating_sub(n);
            lost_total += lost;
            let sent = if session.exact {
                format!("{}", session.sent)
            } else {
                format!(">= {}", session.sent)
            };
            println!(
                "{:>5}  {sent:<10}  {n:>9}  {replies:?}  {lost:>4}",
                session.epoch
            );
            assert_eq!(
                updates,
                (1..=n).collect::<Vec<_>>(),
                "epoch {}: the session's updates from 1, in order, without a gap",
                session.epoch
            );
            if session.exact {
                assert_eq!(
                    n, session.sent,
                    "epoch {}: every update sent",
                    session.epoch
                );
            } else {
                assert!(n >= session.sent, "epoch {}: updates lost", session.epoch);
            }
            // The answer to on_connect's call in the first epoch may come before publishing
            // starts; from then on every answer is published, in the order they were sent.
            let expected: &[&[u64]] = if session.epoch == 1 {
                &[&[1, 2, 3], &[2, 3]]
            } else {
                &[&[1, 2, 3]]
            };
            assert!(
                expected.contains(&replies.as_slice()),
                "epoch {}: the answers to on_connect and the replays, in order: {replies:?}",
                session.epoch
            );
        }
        println!("lost: {lost_total}");
        assert_eq!(lost_total, 0);

        // The lifecycle: connected once per epoch, one outage before each reconnect.
        let lifecycle: Vec<(String, u64, u64)> = stream_entries(&url, LIFECYCLE)
            .await
            .iter()
            .filter_map(|entry| {
                let event: Value = serde_json::from_slice(entry.field("data")?).ok()?;
                let data = &event["data"];
                (data["connection_id"] == id.as_str()).then(|| {
                    let kind = event["type"].as_str().unwrap_or("");
                    (
                        kind.rsplit('.').next().unwrap_or("").to_owned(),
                        data["attempt"].as_u64().unwrap_or(0),
                        data["epoch"].as_u64().unwrap_or(0),
                    )
                })
            })
            .collect();
        let connected: Vec<u64> = lifecycle
            .iter()
            .filter(|(kind, _, _)| kind == "connected")
            .map(|(_, _, epoch)| *epoch)
            .collect();
        assert_eq!(connected, (1..=KILLS + 1).collect::<Vec<_>>(), "connected");
        let outages = lifecycle
            .iter()
            .filter(|(kind, attempt, _)| kind == "reconnecting" && *attempt == 1)
            .count() as u64;
        let attempts = lifecycle
            .iter()
            .filter(|(kind, _, _)| kind == "reconnecting")
            .count() as u64;
        assert_eq!(outages, KILLS, "one outage per kill");
        assert!(
            !lifecycle.iter().any(|(kind, _, _)| kind == "disconnected"),
            "the connection never gave up: {lifecycle:?}"
        );
        let m = Metrics::scrape(&wsm).await;
        let reconnects = m.get("wsm_reconnects_total");
        println!(
            "reconnects: {outages} outages, {attempts} attempts, wsm_reconnects_total {reconnects}"
        );
        assert_eq!(reconnects, attempts, "every reconnect attempt is counted");
        let listed = wsm.list().await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, "connected");
    })
    .await;
}
