//! Reading the Redis streams: entries and their times, and each topic's log and its checks.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;
use serde_json::Value;

/// The state store key prefix `wsm serve` uses by default (Dapr's: the app id).
pub(crate) const KEY_PREFIX: &str = "websocketmanager||";
pub(crate) const LIFECYCLE_TOPIC: &str = "websocketmanager.lifecycle";

pub(crate) fn millis_since_epoch(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) async fn redis_connection(url: &str) -> Result<MultiplexedConnection, String> {
    redis::Client::open(url)
        .map_err(|e| format!("Redis URL {url}: {e}"))?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("connecting to Redis: {e}"))
}

/// The entries of `stream` after the entry id `after` (from the start with `-`): `(id, data)`.
pub(crate) async fn entries_after(
    conn: &mut MultiplexedConnection,
    stream: &str,
    after: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    const PAGE: usize = 1000;
    let mut out = Vec::new();
    let mut cursor = after.to_owned();
    loop {
        let start = if cursor == "-" {
            cursor.clone()
        } else {
            format!("({cursor}")
        };
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await
            .map_err(|e| format!("XRANGE {stream}: {e}"))?;
        let n = reply.ids.len();
        for entry in reply.ids {
            let data: Vec<u8> = entry.get("data").unwrap_or_default();
            cursor = entry.id.clone();
            out.push((entry.id, data));
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// The time part of a stream entry id (`<ms>-<n>`): when Redis added it, on its clock.
pub(crate) fn entry_millis(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// One published frame: its owner's epoch, its sequence number in the epoch, and when Redis added
/// it (ms since the Unix epoch).
#[derive(Clone, Copy)]
pub(crate) struct Event {
    pub(crate) epoch: u64,
    seq: u64,
    pub(crate) at_ms: i64,
}

/// One topic's events as read so far, in stream order.
pub(crate) struct TopicLog {
    pub(crate) topic: String,
    /// The last entry id read (`-` before the first read).
    cursor: String,
    pub(crate) events: Vec<Event>,
    /// Entries that are not a CloudEvent with numeric `epoch` and `seq`.
    unreadable: usize,
}

impl TopicLog {
    pub(crate) fn new(topic: String) -> Self {
        TopicLog {
            topic,
            cursor: "-".into(),
            events: Vec::new(),
            unreadable: 0,
        }
    }

    pub(crate) async fn read_new(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), String> {
        for (id, data) in entries_after(conn, &self.topic, &self.cursor).await? {
            let event: Option<Value> = serde_json::from_slice(&data).ok();
            let numbers = event
                .as_ref()
                .and_then(|e| Some((e["epoch"].as_u64()?, e["seq"].as_u64()?)));
            match numbers {
                Some((epoch, seq)) => self.events.push(Event {
                    epoch,
                    seq,
                    at_ms: entry_millis(&id),
                }),
                None => self.unreadable += 1,
            }
            self.cursor = id;
        }
        Ok(())
    }

    /// The first event a later owner published.
    pub(crate) fn first_taken_over(&self) -> Option<Event> {
        self.events.iter().find(|e| e.epoch >= 2).copied()
    }

    /// Frames missing within an epoch, and anything out of order: the stream starts at epoch 1,
    /// epochs only go up, and within an epoch `seq` goes up by one from 1.
    pub(crate) fn check(&self) -> (u64, Vec<String>) {
        let mut lost = 0;
        let mut faults = Vec::new();
        let mut last: Option<Event> = None;
        for (i, event) in self.events.iter().enumerate() {
            match last {
                None => {
                    if event.epoch != 1 {
                        faults.push(format!("{}: starts at epoch {}", self.topic, event.epoch));
                    }
                    lost += event.seq.saturating_sub(1);
                }
                Some(prev) if prev.epoch == event.epoch => {
                    if event.seq <= prev.seq {
                        faults.push(format!(
                            "{}: seq {} after {} within epoch {} (entry {i})",
                            self.topic, event.seq, prev.seq, event.epoch
                        ));
                    } else {
                        lost += event.seq - prev.seq - 1;
                    }
                }
                Some(prev) if event.epoch > prev.epoch => lost += event.seq.saturating_sub(1),
                Some(prev) => faults.push(format!(
                    "{}: epoch went back from {} to {} (entry {i})",
                    self.topic, prev.epoch, event.epoch
                )),
            }
            last = Some(*event);
        }
        if self.unreadable > 0 {
            faults.push(format!(
                "{}: {} entries without numeric epoch and seq",
                self.topic, self.unreadable
            ));
        }
        (lost, faults)
    }
}
