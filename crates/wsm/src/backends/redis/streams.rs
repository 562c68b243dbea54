//! Publishing to Redis Streams as Dapr's Redis pub/sub component does (see [`super`]'s docs).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::resp::*;
use super::{RedisConfig, BACKEND};
use crate::backends::{BackendError, Publisher};
use crate::gojson::JsonError;
use crate::publish::encode::daprd::EnvelopeWriter;
use crate::publish::encode::envelope::FrameEnvelope;
use crate::publish::FrameBatch;

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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::resp::transient_reply;
    use super::{BackendError, RedisConfig, RedisPublisher};

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
