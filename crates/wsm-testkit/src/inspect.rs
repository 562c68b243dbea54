//! Reading back what a test left in Redis: every key with its type, contents and TTL, and stream
//! entries in order.

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;
use redis::Value;

/// One stream entry: its ID and its field/value pairs in stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: String,
    pub fields: Vec<(String, Vec<u8>)>,
}

impl StreamEntry {
    /// The value of `field`, if the entry has it.
    pub fn field(&self, field: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, value)| value.as_slice())
    }
}

/// What a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    String(Vec<u8>),
    Hash(BTreeMap<String, Vec<u8>>),
    Stream(Vec<StreamEntry>),
    /// Another type, by name.
    Other(String),
}

/// A key's contents and remaining TTL in seconds (`-1` = none), as `TTL` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    pub ttl: i64,
    pub value: KeyValue,
}

/// Every key of a Redis database at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisSnapshot {
    pub keys: BTreeMap<String, KeyState>,
}

async fn connect(redis_url: &str) -> MultiplexedConnection {
    // Large stream pages take a while to answer in debug builds.
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(60)));
    redis::Client::open(redis_url)
        .expect("a valid Redis URL")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connecting to Redis to inspect it")
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn bytes(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes,
        Value::SimpleString(s) => s.into_bytes(),
        other => format!("{other:?}").into_bytes(),
    }
}

fn parse_entries(reply: Value) -> Vec<StreamEntry> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id = text(&parts.pop()?);
            let pairs = match fields {
                Value::Array(items) => {
                    let mut items = items.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(field), Some(value)) = (items.next(), items.next()) {
                        pairs.push((text(&field), bytes(value)));
                    }
                    pairs
                }
                Value::Map(items) => items
                    .into_iter()
                    .map(|(f, v)| (text(&f), bytes(v)))
                    .collect(),
                _ => Vec::new(),
            };
            Some(StreamEntry { id, fields: pairs })
        })
        .collect()
}

/// All entries of `stream` in order, read in pages of 10 000.
pub async fn stream_entries(redis_url: &str, stream: &str) -> Vec<StreamEntry> {
    let mut conn = connect(redis_url).await;
    read_stream(&mut conn, stream).await
}

async fn read_stream(conn: &mut MultiplexedConnection, stream: &str) -> Vec<StreamEntry> {
    let mut out: Vec<StreamEntry> = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let reply: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await
            .expect("XRANGE");
        let page = parse_entries(reply);
        let Some(last) = page.last() else {
            return out;
        };
        start = format!("({}", last.id);
        out.extend(page);
    }
}

impl RedisSnapshot {
    /// Reads every key of the database at `redis_url` (with `KEYS *`: test data only).
    pub async fn take(redis_url: &str) -> Self {
        let mut conn = connect(redis_url).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .expect("KEYS *");
        let mut snapshot = Self::default();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("TYPE");
            let ttl: i64 = redis::cmd("TTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("TTL");
            let value = match kind.as_str() {
                "string" => KeyValue::String(
                    redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .expect("GET"),
                ),
                "hash" => KeyValue::Hash(
                    redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .expect("HGETALL"),
                ),
                "stream" => KeyValue::Stream(read_stream(&mut conn, &key).await),
                other => KeyValue::Other(other.to_owned()),
            };
            snapshot.keys.insert(key, KeyState { ttl, value });
        }
        snapshot
    }
}
