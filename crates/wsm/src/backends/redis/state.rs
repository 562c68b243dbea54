//! Key/value state laid out as Dapr's Redis state store lays it out (see [`super`]'s docs).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{RedisError, Script, Value};

use super::{error, is_wrong_type, ping, RedisConfig, BACKEND};
use crate::backends::{dapr_ttl_seconds, BackendError, Concurrency, StateStore, Versioned};
use crate::gojson::canonical_state_value;

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
    pub(crate) fn redis_key(&self, key: &str) -> Result<String, BackendError> {
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
