//! Redis backends that leave exactly what Dapr's Redis components leave, so WSM and Dapr apps share
//! the data and a deployment can switch between `redis` and `dapr` without migrating anything.
//!
//! **State** (components-contrib `state/redis`): key `<key_prefix>||<key>` holding a hash
//! `{data, version}` plus `first-write` once a first-write (`IfAbsent`) write happened. Writes and
//! deletes run Dapr's Lua scripts unchanged in their checks, so the ETag (`version`) and
//! first-write rules are Dapr's:
//!
//! - `IfAbsent` is Dapr's first-write without an ETag: it succeeds if the key is absent *or was
//!   only ever written last-write*, and it marks the key. From then on every write must carry the
//!   current ETag (`IfMatch`); a `LastWrite` to a marked key is refused like Dapr refuses it, and
//!   reported as [`BackendError::Conflict`].
//! - `IfMatch(etag)` passes the ETag as Dapr does after `strconv.Atoi` (`""` means none).
//! - The TTL is applied in the same script (Dapr sends `EXPIRE`/`PERSIST` right after); `None`
//!   persists the key, as Dapr does for `ttlInSeconds: -1`. Doing it in the script keeps a refused
//!   write from touching the TTL and saves a round trip; the stored result is the same.
//!
//! **What is stored as `data`.** daprd re-encodes a JSON value posted to its HTTP state API
//! (sorted keys, jsoniter's escaping, numbers through `float64` with 6 decimals; see
//! [`super::cloudevent`]). This store writes JSON values the same way, so the `redis` and `dapr`
//! backends leave identical hashes and `get` returns the same bytes on both. Values that are not
//! JSON are stored verbatim, as daprd's gRPC API would (the `dapr` backend refuses them: its HTTP
//! API cannot carry them).
//!
//! **Publishing** (components-contrib `pubsub/redis`): `XADD <topic> [MAXLEN ~ n] * data
//! <envelope> metadata {}` per event, in order, all events of a batch pipelined on one connection
//! (no round trip per event; see [`RedisPublisher`]). The envelope is the event re-encoded as daprd
//! would ([`EnvelopeWriter`]); the `metadata` field is what daprd's HTTP publish always adds (the
//! request's metadata map, empty). An event that is not a JSON object stops its batch: the events
//! before it are published, the error says how many. An error reply that names a passing server
//! state (`LOADING` after a restart, `BUSY`, `OOM`, `READONLY`, `MASTERDOWN`, ...) makes the batch
//! `Unavailable`, so the publisher retries it; other error replies are `Rejected`. A publishing
//! connection sends nothing before Redis answers `PING`, so no batch meets a Redis still loading.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{dapr_ttl_seconds, BackendError, Concurrency, Publisher, StateStore, Versioned};
use crate::gojson::write::push_u64;
use crate::gojson::{canonical_state_value, JsonError};
use crate::publish::encode::daprd::EnvelopeWriter;
use crate::publish::encode::envelope::FrameEnvelope;
use crate::publish::FrameBatch;

const BACKEND: &str = "redis";

/// About how many lifecycle events the Redis stream keeps.
pub const DEFAULT_LIFECYCLE_MAX_LEN: u64 = 100_000;

/// How to reach Redis and how to lay data out in it. Defaults match a Dapr Redis component for the
/// app id `websocketmanager`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (`rediss://` is not supported: no TLS is built in).
    pub url: String,
    /// Dapr's `keyPrefix`: keys are stored as `<prefix>||<key>`; `None` is Dapr's `none` (bare keys).
    /// Dapr's default is the app id, so instances share records only under the same prefix.
    pub key_prefix: Option<String>,
    /// The pub/sub component name daprd would write into each envelope's `pubsubname`.
    pub pubsub_name: String,
    /// Dapr's `maxLenApprox`: `XADD … MAXLEN ~ n` trims streams to about `n` entries.
    pub max_len_approx: Option<u64>,
    /// The same for the lifecycle topic alone (default 100,000): nobody trims it otherwise, and
    /// it grows with every reconnect of every connection.
    pub lifecycle_max_len: Option<u64>,
    /// Limit for opening a connection.
    pub connect_timeout: Duration,
    /// Limit for one answer; a publish batch counts as one, so allow for the largest batch.
    pub response_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: Some("websocketmanager".to_owned()),
            pubsub_name: "pubsub".to_owned(),
            max_len_approx: None,
            lifecycle_max_len: Some(DEFAULT_LIFECYCLE_MAX_LEN),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(10),
        }
    }
}

/// A Redis URL as errors and logs show it: without its password (or user), cut short.
fn shown(url: &str) -> String {
    crate::text::excerpt(
        &crate::security::UrlRedactor::default().redact(url),
        crate::text::SHORT,
    )
}

impl RedisConfig {
    /// Opens a reconnecting multiplexed connection. After a dropped connection, calls fail fast
    /// with `Unavailable` while the connection is re-established in the background.
    async fn connect(&self) -> Result<ConnectionManager, BackendError> {
        let client =
            redis::Client::open(self.url.as_str()).map_err(|e| BackendError::Rejected {
                backend: BACKEND,
                reason: format!("invalid Redis URL {:?}: {e}", shown(&self.url)),
            })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| unavailable(format!("connecting to {}", shown(&self.url)), &e))
    }
}

/// Dapr's Redis `Set` script (components-contrib `setDefaultQuery`), its checks unchanged, with the
/// TTL step added and a distinct error code for a refused write.
/// KEYS[1] key; ARGV: etag ("0" = none), data, first-write ("0" = yes), ttl seconds (≤ 0 persists).
const SET_SCRIPT: &str = r#"
local etag = redis.pcall("HGET", KEYS[1], "version");
if type(etag) == "table" then
  redis.call("DEL", KEYS[1]);
end;
local fwr = redis.pcall("HGET", KEYS[1], "first-write");
if not etag or type(etag)=="table" or etag == "" or etag == ARGV[1] or (not fwr and ARGV[1] == "0") then
  redis.call("HSET", KEYS[1], "data", ARGV[2]);
  if ARGV[3] == "0" then
    redis.call("HSET", KEYS[1], "first-write", 0);
  end;
  local version = redis.call("HINCRBY", KEYS[1], "version", 1);
  if tonumber(ARGV[4]) > 0 then
    redis.call("EXPIRE", KEYS[1], ARGV[4]);
  else
    redis.call("PERSIST", KEYS[1]);
  end;
  return version
else
  return redis.error_reply("WSMCONFLICT failed to set key " .. KEYS[1])
end"#;

/// Dapr's Redis `Delete` script (`delDefaultQuery`) with a distinct error code.
/// KEYS[1] key; ARGV[1] etag ("0" = none).
const DELETE_SCRIPT: &str = r#"
local etag = redis.pcall("HGET", KEYS[1], "version");
if not etag or type(etag)=="table" or etag == ARGV[1] or etag == "" or ARGV[1] == "0" then
  return redis.call("DEL", KEYS[1])
else
  return redis.error_reply("WSMCONFLICT failed to delete " .. KEYS[1])
end"#;

/// The error code our scripts answer with when the ETag/first-write check refuses.
const CONFLICT_CODE: &str = "WSMCONFLICT";

/// Key/value state in Redis, laid out as Dapr's Redis state store lays it out (module docs).
#[derive(Clone)]
pub struct RedisStateStore {
    conn: ConnectionManager,
    key_prefix: Option<String>,
    set_script: Script,
    delete_script: Script,
}

impl std::fmt::Debug for RedisStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStateStore")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStateStore {
    /// Connects to `config.url`; fails if Redis cannot be reached now.
    pub async fn connect(config: &RedisConfig) -> Result<Self, BackendError> {
        Ok(Self {
            conn: config.connect().await?,
            key_prefix: config.key_prefix.clone(),
            set_script: Script::new(SET_SCRIPT),
            delete_script: Script::new(DELETE_SCRIPT),
        })
    }

    /// The Redis key holding `key`: Dapr's `GetModifiedStateKey`, which refuses empty keys and keys
    /// containing `||`.
    pub fn redis_key(&self, key: &str) -> Result<String, BackendError> {
        if key.is_empty() || key.contains("||") {
            return Err(BackendError::Rejected {
                backend: BACKEND,
                reason: format!("state key {key:?} is empty or contains '||' (Dapr refuses both)"),
            });
        }
        Ok(match &self.key_prefix {
            Some(prefix) => format!("{prefix}||{key}"),
            None => key.to_owned(),
        })
    }

    /// A value and ETag from an `HGETALL` reply; `None` for an empty reply (no such key).
    fn versioned(key: &str, reply: Value) -> Result<Option<Versioned>, BackendError> {
        let pairs: Vec<(Value, Value)> = match reply {
            Value::Nil => return Ok(None),
            Value::Map(pairs) => pairs,
            Value::Array(items) => {
                let mut items = items.into_iter();
                let mut pairs = Vec::with_capacity(items.len() / 2);
                while let (Some(field), Some(value)) = (items.next(), items.next()) {
                    pairs.push((field, value));
                }
                pairs
            }
            other => {
                return Err(BackendError::Rejected {
                    backend: BACKEND,
                    reason: format!("reading key {key}: unexpected HGETALL reply {other:?}"),
                })
            }
        };
        if pairs.is_empty() {
            return Ok(None);
        }
        let (mut data, mut version) = (None, None);
        for (field, value) in pairs {
            match (field, value) {
                (Value::BulkString(f), Value::BulkString(v)) if f == b"data" => data = Some(v),
                (Value::BulkString(f), Value::BulkString(v)) if f == b"version" => {
                    version = Some(String::from_utf8_lossy(&v).into_owned())
                }
                _ => {}
            }
        }
        match (data, version) {
            (Some(value), Some(etag)) => Ok(Some(Versioned { value, etag })),
            _ => Err(BackendError::Rejected {
                backend: BACKEND,
                reason: format!(
                    "key {key} is a hash without 'data' and 'version' (not Dapr's layout)"
                ),
            }),
        }
    }

    /// Dapr's fallback for a key that is not a hash (values written before ETags existed): the plain
    /// string, with no ETag.
    async fn get_legacy_string(&self, key: &str) -> Result<Option<Versioned>, BackendError> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| error(format!("reading key {key}"), &e))?;
        Ok(value.map(|value| Versioned {
            value,
            etag: String::new(),
        }))
    }
}

/// The ETag argument Dapr's Redis store passes for `etag`: `strconv.Atoi` of it, `0` for none.
fn etag_arg(key: &str, etag: &str) -> Result<String, BackendError> {
    if etag.is_empty() {
        return Ok("0".to_owned());
    }
    let digits = etag.strip_prefix(['+', '-']).unwrap_or(etag);
    let parsed = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| etag.parse::<i64>().ok())
        .flatten();
    parsed
        .map(|v| v.to_string())
        .ok_or_else(|| BackendError::Rejected {
            backend: BACKEND,
            reason: format!(
                "ETag {etag:?} for key {key} is not a number (Dapr's Redis ETags are versions)"
            ),
        })
}

#[async_trait]
impl StateStore for RedisStateStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, BackendError> {
        let key = self.redis_key(key)?;
        let reply: Result<Value, RedisError> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await;
        match reply {
            Ok(reply) => Self::versioned(&key, reply),
            Err(e) if is_wrong_type(&e) => self.get_legacy_string(&key).await,
            Err(e) => Err(error(format!("reading key {key}"), &e)),
        }
    }

    async fn get_bulk(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let redis_keys = keys
            .iter()
            .map(|key| self.redis_key(key))
            .collect::<Result<Vec<_>, _>>()?;
        let mut pipe = redis::Pipeline::with_capacity(keys.len());
        pipe.ignore_errors();
        for key in &redis_keys {
            pipe.cmd("HGETALL").arg(key);
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| error(format!("reading {} keys in bulk", keys.len()), &e))?;
        if replies.len() != redis_keys.len() {
            return Err(BackendError::Unavailable {
                backend: BACKEND,
                reason: format!(
                    "reading {} keys in bulk: {} replies came back",
                    keys.len(),
                    replies.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(keys.len());
        for (key, reply) in redis_keys.iter().zip(replies) {
            out.push(match reply {
                Value::ServerError(e) if e.code() == "WRONGTYPE" => {
                    self.get_legacy_string(key).await?
                }
                Value::ServerError(e) => {
                    return Err(BackendError::Rejected {
                        backend: BACKEND,
                        reason: format!("reading key {key}: {e}"),
                    })
                }
                reply => Self::versioned(key, reply)?,
            });
        }
        Ok(out)
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        concurrency: Concurrency<'_>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let logical = key;
        let key = self.redis_key(logical)?;
        let (etag, first_write) = match concurrency {
            Concurrency::LastWrite => ("0".to_owned(), "1"),
            Concurrency::IfMatch(etag) => (etag_arg(&key, etag)?, "1"),
            Concurrency::IfAbsent => ("0".to_owned(), "0"),
        };
        let mut data = Vec::with_capacity(value.len());
        if canonical_state_value(value, &mut data).is_err() {
            data.clear();
            data.extend_from_slice(value);
        }
        let reply: Result<i64, RedisError> = self
            .set_script
            .key(&key)
            .arg(etag)
            .arg(data)
            .arg(first_write)
            .arg(dapr_ttl_seconds(ttl))
            .invoke_async(&mut self.conn.clone())
            .await;
        match reply {
            Ok(_version) => Ok(()),
            Err(e) if e.code() == Some(CONFLICT_CODE) => Err(BackendError::Conflict {
                key: logical.to_owned(),
            }),
            Err(e) => Err(error(format!("writing key {key}"), &e)),
        }
    }

    async fn delete(&self, key: &str, concurrency: Concurrency<'_>) -> Result<(), BackendError> {
        let logical = key;
        let key = self.redis_key(logical)?;
        let etag = match concurrency {
            Concurrency::LastWrite => "0",
            // Dapr passes the If-Match header through as it is.
            Concurrency::IfMatch(etag) => etag,
            Concurrency::IfAbsent => {
                // Deleting "only if absent" deletes nothing; it conflicts if the key exists.
                let exists: bool = redis::cmd("EXISTS")
                    .arg(&key)
                    .query_async(&mut self.conn.clone())
                    .await
                    .map_err(|e| error(format!("checking key {key}"), &e))?;
                return if exists {
                    Err(BackendError::Conflict {
                        key: logical.to_owned(),
                    })
                } else {
                    Ok(())
                };
            }
        };
        let reply: Result<i64, RedisError> = self
            .delete_script
            .key(&key)
            .arg(etag)
            .invoke_async(&mut self.conn.clone())
            .await;
        match reply {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(CONFLICT_CODE) => Err(BackendError::Conflict {
                key: logical.to_owned(),
            }),
            Err(e) => Err(error(format!("deleting key {key}"), &e)),
        }
    }

    async fn ping(&self) -> Result<(), BackendError> {
        ping(&self.conn).await
    }
}

/// Where the publisher connects and as whom: the redis crate's reading of the URL.
#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    port: u16,
    db: i64,
    username: Option<String>,
    password: Option<String>,
}

impl Endpoint {
    fn from_url(url: &str) -> Result<Self, BackendError> {
        let rejected = |reason: String| BackendError::Rejected {
            backend: BACKEND,
            reason,
        };
        let client = redis::Client::open(url)
            .map_err(|e| rejected(format!("invalid Redis URL {:?}: {e}", shown(url))))?;
        let info = client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(rejected(format!(
                "Redis URL {:?}: only redis:// over TCP is supported for publishing",
                shown(url)
            )));
        };
        let settings = info.redis_settings();
        Ok(Self {
            host: host.clone(),
            port: *port,
            db: settings.db(),
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
        })
    }
}

/// One publishing connection, kept between batches.
#[derive(Debug)]
struct StreamConn {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    line: Vec<u8>,
}

/// Bytes of commands collected before they are handed to the socket, so encoding the rest of a
/// batch overlaps with Redis executing the first part.
const WRITE_CHUNK: usize = 64 * 1024;

/// Publishes CloudEvents to Redis Streams as Dapr's Redis pub/sub component does (module docs).
///
/// It writes the `XADD` commands itself, on a connection of its own. Through the redis crate every
/// event costs a `Cmd` and a reply `Value`, and a batch is encoded before any of it is sent; on a
/// 2-core machine that stayed well below what Redis accepts (about 260k events/s for 300-byte
/// entries). Here each envelope is written straight into the outgoing buffer, 64 KiB chunks go out
/// while the rest of the batch is encoded, and replies are only counted (the first error reply is
/// kept), so the rate matches redis-benchmark's for entries of the same size: Redis is the limit.
/// Batches on one publisher go out one at a time, in call order; a connection that failed is
/// replaced on the next call. Only `redis://` over TCP (with user, password and database) is
/// supported here.
#[derive(Clone)]
pub struct RedisPublisher {
    endpoint: Arc<Endpoint>,
    pubsub_name: Arc<str>,
    max_len_approx: Option<u64>,
    lifecycle_max_len: Option<u64>,
    connect_timeout: Duration,
    response_timeout: Duration,
    conn: Arc<Mutex<Option<StreamConn>>>,
}

impl std::fmt::Debug for RedisPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPublisher")
            .field("host", &self.endpoint.host)
            .field("port", &self.endpoint.port)
            .field("pubsub_name", &self.pubsub_name)
            .field("max_len_approx", &self.max_len_approx)
            .field("lifecycle_max_len", &self.lifecycle_max_len)
            .finish_non_exhaustive()
    }
}

/// A RESP bulk string.
fn push_bulk(buf: &mut Vec<u8>, arg: &[u8]) {
    buf.push(b'$');
    push_u64(buf, arg.len() as u64);
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(arg);
    buf.extend_from_slice(b"\r\n");
}

/// Writes the envelope of a batch's `n`th event.
type WriteEvent<'a> = dyn FnMut(usize, &mut Vec<u8>) -> Result<(), JsonError> + Send + 'a;

/// A RESP command.
fn push_command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.push(b'*');
    push_u64(buf, args.len() as u64);
    buf.extend_from_slice(b"\r\n");
    for arg in args {
        push_bulk(buf, arg);
    }
}

/// One reply, as far as publishing cares.
enum Reply {
    Ok,
    Error(String),
}

impl StreamConn {
    async fn open(endpoint: &Endpoint) -> std::io::Result<Self> {
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut conn = Self {
            read: BufReader::with_capacity(64 * 1024, read),
            write,
            line: Vec::with_capacity(64),
        };
        let mut hello = Vec::new();
        let mut sent = Vec::new();
        if let Some(password) = &endpoint.password {
            match &endpoint.username {
                Some(user) => {
                    push_command(&mut hello, &[b"AUTH", user.as_bytes(), password.as_bytes()])
                }
                None => push_command(&mut hello, &[b"AUTH", password.as_bytes()]),
            }
            sent.push("AUTH");
        }
        if endpoint.db != 0 {
            push_command(&mut hello, &[b"SELECT", endpoint.db.to_string().as_bytes()]);
            sent.push("SELECT");
        }
        // A restarted Redis accepts connections while it loads its data set, and answers every
        // command with LOADING until it is done. Only a PONG shows it takes writes: a batch sent
        // before could be refused in part (LOADING for the first events, stored for the rest once
        // loading ended) and its retry would put the first events after the rest.
        push_command(&mut hello, &[b"PING"]);
        sent.push("PING");
        conn.write.write_all(&hello).await?;
        for command in sent {
            if let Reply::Error(e) = conn.reply().await? {
                return Err(std::io::Error::other(format!(
                    "Redis answered {command} with {e}"
                )));
            }
        }
        Ok(conn)
    }

    async fn reply(&mut self) -> std::io::Result<Reply> {
        read_reply(&mut self.read, &mut self.line).await
    }
}

/// Reads one reply; only the kinds XADD, PING, AUTH and SELECT answer with are expected.
async fn read_reply(
    read: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> std::io::Result<Reply> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    line.clear();
    read.read_until(b'\n', line).await?;
    if !line.ends_with(b"\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of a reply",
        ));
    }
    if line.len() < 3 {
        return Err(invalid("an empty reply line"));
    }
    let body = &line[1..line.len() - 2];
    match line[0] {
        b'+' | b':' => Ok(Reply::Ok),
        b'-' => Ok(Reply::Error(String::from_utf8_lossy(body).into_owned())),
        b'$' => {
            let len: i64 = std::str::from_utf8(body)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| invalid("bad bulk length in a reply"))?;
            if len >= 0 {
                // The payload (a stream ID) and its CRLF.
                let mut left = len as usize + 2;
                while left > 0 {
                    let available = read.fill_buf().await?;
                    if available.is_empty() {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    let take = available.len().min(left);
                    read.consume(take);
                    left -= take;
                }
            }
            Ok(Reply::Ok)
        }
        _ => Err(invalid("unexpected reply type")),
    }
}

impl RedisPublisher {
    /// Connects to `config.url` on a connection of its own (so large batches never delay state
    /// calls); fails if Redis cannot be reached now.
    pub async fn connect(config: &RedisConfig) -> Result<Self, BackendError> {
        let publisher = Self {
            endpoint: Arc::new(Endpoint::from_url(&config.url)?),
            pubsub_name: config.pubsub_name.as_str().into(),
            max_len_approx: config.max_len_approx,
            lifecycle_max_len: config.lifecycle_max_len,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            conn: Arc::new(Mutex::new(None)),
        };
        let mut conn = publisher.conn.lock().await;
        *conn = Some(publisher.open("connecting").await?);
        drop(conn);
        Ok(publisher)
    }

    async fn open(&self, what: &str) -> Result<StreamConn, BackendError> {
        let endpoint = &self.endpoint;
        let opened = tokio::time::timeout(self.connect_timeout, StreamConn::open(endpoint)).await;
        let reason = match opened {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no connection within {:?}", self.connect_timeout),
        };
        Err(BackendError::Unavailable {
            backend: BACKEND,
            reason: format!(
                "{what}: connecting to {}:{}: {reason}",
                endpoint.host, endpoint.port
            ),
        })
    }

    /// Writes the batch's XADDs in chunks while reading their replies. Returns how many events
    /// were sent, the first error reply, and the first invalid event (encoding stops there).
    async fn send_batch(
        &self,
        conn: &mut StreamConn,
        topic: &str,
        count: usize,
        write_event: &mut WriteEvent<'_>,
    ) -> std::io::Result<(usize, Option<String>, Option<(usize, JsonError)>)> {
        // Everything before the envelope is the same for every event of the batch.
        let max_len = if topic == crate::lifecycle::LIFECYCLE_TOPIC {
            self.lifecycle_max_len.or(self.max_len_approx)
        } else {
            self.max_len_approx
        };
        let max_len = max_len.map(|n| n.to_string());
        let mut head = Vec::with_capacity(64 + topic.len());
        let argc = if max_len.is_some() { 10 } else { 7 };
        head.extend_from_slice(format!("*{argc}\r\n").as_bytes());
        push_bulk(&mut head, b"XADD");
        push_bulk(&mut head, topic.as_bytes());
        if let Some(max_len) = &max_len {
            push_bulk(&mut head, b"MAXLEN");
            push_bulk(&mut head, b"~");
            push_bulk(&mut head, max_len.as_bytes());
        }
        push_bulk(&mut head, b"*");
        push_bulk(&mut head, b"data");
        let mut tail = Vec::with_capacity(24);
        push_bulk(&mut tail, b"metadata");
        push_bulk(&mut tail, b"{}");

        let (counts_tx, mut counts_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let StreamConn { read, write, line } = conn;
        let writing = async {
            let mut envelope = Vec::with_capacity(1024);
            let mut buf = Vec::with_capacity(WRITE_CHUNK + 4096);
            let (mut sent, mut in_buf) = (0, 0);
            let mut invalid = None;
            for n in 0..count {
                envelope.clear();
                if let Err(e) = write_event(n, &mut envelope) {
                    invalid = Some((n, e));
                    break;
                }
                buf.extend_from_slice(&head);
                push_bulk(&mut buf, &envelope);
                buf.extend_from_slice(&tail);
                in_buf += 1;
                if buf.len() >= WRITE_CHUNK {
                    write.write_all(&buf).await?;
                    let _ = counts_tx.send(in_buf);
                    sent += in_buf;
                    buf.clear();
                    in_buf = 0;
                }
            }
            if in_buf > 0 {
                write.write_all(&buf).await?;
                let _ = counts_tx.send(in_buf);
                sent += in_buf;
            }
            drop(counts_tx);
            Ok::<_, std::io::Error>((sent, invalid))
        };
        let reading = async {
            let mut first_error = None;
            while let Some(count) = counts_rx.recv().await {
                for _ in 0..count {
                    if let Reply::Error(e) = read_reply(read, line).await? {
                        first_error.get_or_insert(e);
                    }
                }
            }
            Ok::<_, std::io::Error>(first_error)
        };
        let (written, read) = tokio::join!(writing, reading);
        let (sent, invalid) = written?;
        Ok((sent, read?, invalid))
    }
}

impl RedisPublisher {
    /// Publishes `count` events whose envelopes `write_event` writes, in order, on the publishing
    /// connection (opened again if the last call lost it).
    async fn publish_with(
        &self,
        topic: &str,
        count: usize,
        write_event: &mut WriteEvent<'_>,
    ) -> Result<(), BackendError> {
        if count == 0 {
            return Ok(());
        }
        if topic.is_empty() {
            return Err(BackendError::Rejected {
                backend: BACKEND,
                reason: "publishing to an empty topic name".to_owned(),
            });
        }
        let what = format!("publishing {count} events to stream {topic}");
        let mut guard = self.conn.lock().await;
        let mut conn = match guard.take() {
            Some(conn) => conn,
            None => self.open(&what).await?,
        };
        let outcome = tokio::time::timeout(
            self.response_timeout,
            self.send_batch(&mut conn, topic, count, write_event),
        )
        .await;
        let (sent, refused, invalid) = match outcome {
            Ok(Ok(result)) => result,
            // The connection's state is unknown: drop it, the next call opens a new one.
            Ok(Err(e)) => {
                return Err(BackendError::Unavailable {
                    backend: BACKEND,
                    reason: format!("{what}: {e}"),
                })
            }
            Err(_) => {
                return Err(BackendError::Unavailable {
                    backend: BACKEND,
                    reason: format!("{what}: no answer within {:?}", self.response_timeout),
                })
            }
        };
        if let Some(e) = refused.as_deref().filter(|e| transient_reply(e)) {
            // Redis is in a passing state (loading, a busy script, out of memory, a replica...):
            // the batch is retried, not dropped. The connection is not kept, so the retry opens
            // a new one and sends nothing before Redis answers PING.
            return Err(BackendError::Unavailable {
                backend: BACKEND,
                reason: format!("{what}: Redis cannot take writes now: {e}"),
            });
        }
        *guard = Some(conn);
        if let Some((n, e)) = invalid {
            return Err(BackendError::Rejected {
                backend: BACKEND,
                reason: format!(
                    "event {n} of {count} for topic {topic} is not a CloudEvent JSON object ({e}); \
                     the {sent} events before it were published"
                ),
            });
        }
        match refused {
            None => Ok(()),
            Some(e) => Err(BackendError::Rejected {
                backend: BACKEND,
                reason: format!("{what}: Redis refused: {e}"),
            }),
        }
    }
}

#[async_trait]
impl Publisher for RedisPublisher {
    async fn publish(&self, topic: &str, events: &[Vec<u8>]) -> Result<(), BackendError> {
        let mut writer = EnvelopeWriter::new(&self.pubsub_name);
        let mut write_event = |n: usize, out: &mut Vec<u8>| writer.write(&events[n], topic, out);
        self.publish_with(topic, events.len(), &mut write_event)
            .await
    }

    /// Frames skip the generic re-encoding: [`FrameEnvelope`] writes Dapr's envelope directly.
    async fn publish_frames(
        &self,
        topic: &str,
        batch: &Arc<FrameBatch>,
    ) -> Result<(), BackendError> {
        let mut envelope = FrameEnvelope::new(&batch.source, &self.pubsub_name, topic);
        let mut write_event = |n: usize, out: &mut Vec<u8>| {
            envelope.write(&batch.frames[n], out);
            Ok(())
        };
        self.publish_with(topic, batch.frames.len(), &mut write_event)
            .await
    }

    async fn ping(&self) -> Result<(), BackendError> {
        let what = "PING";
        let mut guard = self.conn.lock().await;
        let mut conn = match guard.take() {
            Some(conn) => conn,
            None => self.open(what).await?,
        };
        let exchange = async {
            conn.write.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
            conn.reply().await
        };
        match tokio::time::timeout(self.response_timeout, exchange).await {
            Ok(Ok(Reply::Ok)) => {
                *guard = Some(conn);
                Ok(())
            }
            Ok(Ok(Reply::Error(e))) => {
                *guard = Some(conn);
                Err(BackendError::Unavailable {
                    backend: BACKEND,
                    reason: format!("{what}: {e}"),
                })
            }
            Ok(Err(e)) => Err(BackendError::Unavailable {
                backend: BACKEND,
                reason: format!("{what}: {e}"),
            }),
            Err(_) => Err(BackendError::Unavailable {
                backend: BACKEND,
                reason: format!("{what}: no answer within {:?}", self.response_timeout),
            }),
        }
    }
}

/// Whether an error reply describes the server's state rather than the request (its first word
/// is the error code): such a state passes, so a batch answered with one must be retried, never
/// dropped as refused.
fn transient_reply(reply: &str) -> bool {
    matches!(
        reply.split_whitespace().next().unwrap_or(""),
        "LOADING"
            | "BUSY"
            | "TRYAGAIN"
            | "CLUSTERDOWN"
            | "MASTERDOWN"
            | "READONLY"
            | "NOREPLICAS"
            | "OOM"
            | "MISCONF"
    )
}

async fn ping(conn: &ConnectionManager) -> Result<(), BackendError> {
    let _: String = redis::cmd("PING")
        .query_async(&mut conn.clone())
        .await
        .map_err(|e| error("PING".to_owned(), &e))?;
    Ok(())
}

fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

fn unavailable(what: String, e: &RedisError) -> BackendError {
    BackendError::Unavailable {
        backend: BACKEND,
        reason: format!("{what}: {e}"),
    }
}

/// Connection trouble and transient server states may pass with a retry (`Unavailable`); anything
/// else the server refused for this request (`Rejected`).
fn error(what: String, e: &RedisError) -> BackendError {
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Io
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        );
    if transient {
        unavailable(what, e)
    } else {
        BackendError::Rejected {
            backend: BACKEND,
            reason: format!("{what}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{transient_reply, BackendError, RedisConfig, RedisPublisher};

    /// A restarted Redis that is still loading answers PING with LOADING: the publisher does not
    /// take that connection for publishing, and says why.
    /// A server on a free loopback port that reads one request and answers `reply`, then keeps
    /// the connection a moment; its task returns the request. The publisher's config for it.
    async fn one_reply_server(
        reply: &'static [u8],
    ) -> (RedisConfig, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("a client");
            let mut asked = vec![0u8; 64];
            let n = socket.read(&mut asked).await.expect("a request");
            asked.truncate(n);
            socket
                .write_all(reply)
                .await
                .expect("the answer is written");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            asked
        });
        let config = RedisConfig {
            url: format!("redis://127.0.0.1:{port}"),
            ..RedisConfig::default()
        };
        (config, server)
    }

    #[tokio::test]
    async fn a_publishing_connection_is_used_only_after_a_pong() {
        let (config, server) =
            one_reply_server(b"-LOADING Redis is loading the dataset in memory\r\n").await;
        let error = RedisPublisher::connect(&config)
            .await
            .expect_err("a loading Redis is not ready for publishing");
        assert!(matches!(error, BackendError::Unavailable { .. }), "{error}");
        assert!(error.to_string().contains("PING with LOADING"), "{error}");
        assert_eq!(
            server.await.expect("the fake server"),
            b"*1\r\n$4\r\nPING\r\n"
        );
    }

    /// A bare CRLF where a reply belongs is a broken reply, not a panic of the publisher.
    #[tokio::test]
    async fn an_empty_reply_line_is_an_error() {
        let (config, server) = one_reply_server(b"\r\n").await;
        let error = RedisPublisher::connect(&config)
            .await
            .expect_err("a broken reply");
        assert!(error.to_string().contains("empty reply line"), "{error}");
        assert_eq!(
            server.await.expect("the fake server"),
            b"*1\r\n$4\r\nPING\r\n"
        );
    }

    #[test]
    fn server_states_are_transient_and_request_errors_are_not() {
        for reply in [
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "READONLY You can't write against a read only replica.",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
            "NOREPLICAS Not enough good replicas to write.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
        ] {
            assert!(transient_reply(reply), "{reply}");
        }
        for reply in [
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "ERR The ID specified in XADD is equal or smaller than the target stream top item",
            "ERR wrong number of arguments for 'xadd' command",
            "NOPERM User has no permissions to run the 'xadd' command",
            "",
        ] {
            assert!(!transient_reply(reply), "{reply}");
        }
    }
}
