//! Reading a topic's Redis stream back, for `Subscribe`: `XREAD` from the newest entry on, so any
//! instance's publishes are seen, not only this one's.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::shown;
use crate::backends::{BusTail, TailError, TailEvent};

/// Entries one `XREAD` returns at most, and how long it blocks.
const XREAD_COUNT: usize = 512;
const XREAD_BLOCK_MS: u64 = 1000;

type Events = mpsc::Sender<Result<TailEvent, TailError>>;

/// Tails topics' Redis streams at `url`, one connection per reader.
#[derive(Debug, Clone)]
pub(crate) struct RedisTail {
    url: String,
}

impl RedisTail {
    pub fn new(url: &str) -> Self {
        RedisTail {
            url: url.to_owned(),
        }
    }
}

#[async_trait]
impl BusTail for RedisTail {
    async fn tail(&self, topic: &str, events: Events) -> Result<(), TailError> {
        let con = redis_connection(&self.url).await?;
        tokio::spawn(tail_redis(topic.to_owned(), con, events));
        Ok(())
    }
}

async fn redis_connection(url: &str) -> Result<redis::aio::MultiplexedConnection, TailError> {
    let client = redis::Client::open(url).map_err(|e| {
        TailError::Invalid(format!(
            "the configured Redis URL {} is invalid: {e}",
            shown(url)
        ))
    })?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_millis(XREAD_BLOCK_MS) * 5));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| TailError::Unavailable(format!("Redis unreachable for Subscribe: {e}")))
}

async fn tail_redis(topic: String, mut con: redis::aio::MultiplexedConnection, tx: Events) {
    // Start after the newest entry now. Not `$` on every call: entries added between two reads
    // would be skipped.
    let newest = redis::cmd("XREVRANGE")
        .arg(&topic)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async::<redis::streams::StreamRangeReply>(&mut con)
        .await;
    let mut last = match newest {
        Ok(range) => range
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()),
        Err(e) => return read_failed(&tx, &topic, &e).await,
    };
    loop {
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(XREAD_COUNT)
            .arg("BLOCK")
            .arg(XREAD_BLOCK_MS)
            .arg("STREAMS")
            .arg(&topic)
            .arg(&last);
        let read = xread.query_async::<Option<redis::streams::StreamReadReply>>(&mut con);
        let reply = tokio::select! {
            _ = tx.closed() => return,
            reply = read => reply,
        };
        let reply = match reply {
            Ok(reply) => reply.unwrap_or_default(),
            Err(e) => return read_failed(&tx, &topic, &e).await,
        };
        for key in reply.keys {
            for entry in key.ids {
                let data: Option<String> = entry.get("data");
                last = entry.id.clone();
                let event = TailEvent::from_json(data.unwrap_or_default(), entry.id);
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Ends a Redis tail with the reason, for the reader.
async fn read_failed(tx: &Events, topic: &str, error: &redis::RedisError) {
    let error = TailError::Unavailable(format!(
        "reading the Redis stream {topic} failed: {error}; subscribe again"
    ));
    let _ = tx.send(Err(error)).await;
}
