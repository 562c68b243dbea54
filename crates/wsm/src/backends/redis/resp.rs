//! The publisher's own Redis connection: RESP commands written straight into the outgoing buffer,
//! replies only counted (see [`super::RedisPublisher`] for why).

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::{shown, BACKEND};
use crate::backends::BackendError;
use crate::gojson::write::push_u64;
use crate::gojson::JsonError;

/// Where the publisher connects and as whom: the redis crate's reading of the URL.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) db: i64,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl Endpoint {
    pub(crate) fn from_url(url: &str) -> Result<Self, BackendError> {
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
pub(crate) struct StreamConn {
    pub(crate) read: BufReader<OwnedReadHalf>,
    pub(crate) write: OwnedWriteHalf,
    pub(crate) line: Vec<u8>,
}

/// Bytes of commands collected before they are handed to the socket, so encoding the rest of a
/// batch overlaps with Redis executing the first part.
pub(crate) const WRITE_CHUNK: usize = 64 * 1024;

/// A RESP bulk string.
pub(crate) fn push_bulk(buf: &mut Vec<u8>, arg: &[u8]) {
    buf.push(b'$');
    push_u64(buf, arg.len() as u64);
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(arg);
    buf.extend_from_slice(b"\r\n");
}

/// Writes the envelope of a batch's `n`th event.
pub(crate) type WriteEvent<'a> =
    dyn FnMut(usize, &mut Vec<u8>) -> Result<(), JsonError> + Send + 'a;

/// A RESP command.
pub(crate) fn push_command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.push(b'*');
    push_u64(buf, args.len() as u64);
    buf.extend_from_slice(b"\r\n");
    for arg in args {
        push_bulk(buf, arg);
    }
}

/// One reply, as far as publishing cares.
pub(crate) enum Reply {
    Ok,
    Error(String),
}

impl StreamConn {
    pub(crate) async fn open(endpoint: &Endpoint) -> std::io::Result<Self> {
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

    pub(crate) async fn reply(&mut self) -> std::io::Result<Reply> {
        read_reply(&mut self.read, &mut self.line).await
    }
}

/// Reads one reply; only the kinds XADD, PING, AUTH and SELECT answer with are expected.
pub(crate) async fn read_reply(
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

/// Whether an error reply describes the server's state rather than the request (its first word
/// is the error code): such a state passes, so a batch answered with one must be retried, never
/// dropped as refused.
pub(crate) fn transient_reply(reply: &str) -> bool {
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
