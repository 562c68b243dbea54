//! A hand-written upstream that sends raw bytes over a tokio `TcpListener`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::support::server::Poll;

/// What the upstream saw, over all its connections.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    /// Accepted connections the client has closed (EOF or reset seen by the reader).
    closed_by_client: AtomicUsize,
    /// Close codes the client sent, in order.
    close_codes: Mutex<Vec<u16>>,
}

/// An upstream that accepts TCP, reads the client's handshake request and then runs a script on
/// the connection (the 101 answer and frames, or hostile bytes), while a reader takes the client's
/// frames and notes its close codes. [`Hostile::stop`] (or dropping it) closes the listener and
/// every connection.
pub(crate) struct Hostile {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Option<oneshot::Sender<()>>,
    accept: JoinHandle<()>,
}

impl Hostile {
    pub(crate) async fn start<F, Fut>(script: F) -> Hostile
    where
        F: Fn(Accepted) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the upstream");
        let addr = listener.local_addr().expect("the upstream's address");
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        let script = Arc::new(script);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let accept = tokio::spawn(async move {
            // Owned here, so ending this task closes every connection too.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { break };
                        let index = shared.accepted.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(serve(tcp, index, Arc::clone(&script), Arc::clone(&shared)));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    _ = &mut stopped => break,
                }
            }
            drop(listener);
            connections.shutdown().await;
        });
        Hostile {
            addr,
            seen,
            stop: Some(stop),
            accept,
        }
    }

    /// Closes the listener (the port refuses from now on) and every connection, and returns once
    /// they are closed and their tasks gone: a count taken next sees none of them.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.accept).await;
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub(crate) fn accepted(&self) -> usize {
        self.seen.accepted.load(Ordering::SeqCst)
    }

    pub(crate) fn close_codes(&self) -> Vec<u16> {
        self.seen.close_codes.lock().unwrap().clone()
    }

    /// Waits until the client has closed every connection this upstream accepted.
    pub(crate) async fn wait_all_closed_by_client(&self) {
        let poll = Poll::new("the client to close every connection the upstream accepted");
        while self.seen.closed_by_client.load(Ordering::SeqCst) < self.accepted() {
            poll.tick().await;
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve<F, Fut>(tcp: TcpStream, index: usize, script: Arc<F>, seen: Arc<Seen>)
where
    F: Fn(Accepted) -> Fut,
    Fut: Future<Output = ()>,
{
    let _ = tcp.set_nodelay(true);
    let (read, out) = tcp.into_split();
    let mut read = BufReader::new(read);
    let Some(key) = read_request(&mut read).await else {
        seen.closed_by_client.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let client = read_client(read, Arc::clone(&seen));
    tokio::pin!(client);
    // A script that returns closes our side (its write half is dropped); the connection counts as
    // closed by the client only once the reader sees the client's EOF or reset.
    let client_first = tokio::select! {
        () = script(Accepted { index, key, out }) => false,
        () = &mut client => true,
    };
    if !client_first {
        client.await;
    }
    seen.closed_by_client.fetch_add(1, Ordering::SeqCst);
}

/// Reads the handshake request's head; its `Sec-WebSocket-Key`, or `None` if the client left.
async fn read_request(read: &mut BufReader<OwnedReadHalf>) -> Option<String> {
    let mut key = String::new();
    for _ in 0..100 {
        let mut line = String::new();
        if read.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some(key);
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("sec-websocket-key") {
                key = value.trim().to_owned();
            }
        }
    }
    None
}

/// Reads the client's (masked) frames until it closes the connection, noting close codes.
async fn read_client(mut read: BufReader<OwnedReadHalf>, seen: Arc<Seen>) {
    loop {
        let mut head = [0u8; 2];
        if read.read_exact(&mut head).await.is_err() {
            return;
        }
        let opcode = head[0] & 0x0f;
        let len = match head[1] & 0x7f {
            126 => match read.read_u16().await {
                Ok(n) => u64::from(n),
                Err(_) => return,
            },
            127 => match read.read_u64().await {
                Ok(n) => n,
                Err(_) => return,
            },
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 && read.read_exact(&mut mask).await.is_err() {
            return;
        }
        if len > 1 << 20 {
            // Not a frame these tests expect from wsm: wait for the client to leave.
            let _ = tokio::io::copy(&mut read, &mut tokio::io::sink()).await;
            return;
        }
        let mut payload = vec![0u8; len as usize];
        if read.read_exact(&mut payload).await.is_err() {
            return;
        }
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        if opcode == 0x8 {
            let code = match payload[..] {
                [hi, lo, ..] => u16::from_be_bytes([hi, lo]),
                _ => 1005,
            };
            seen.close_codes.lock().unwrap().push(code);
        }
    }
}

/// A server frame header (FIN set, unmasked) for a payload of `len` bytes.
fn frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut head = vec![0x80 | opcode];
    if len < 126 {
        head.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        head.push(126);
        head.extend_from_slice(&len.to_be_bytes());
    } else {
        head.push(127);
        head.extend_from_slice(&len.to_be_bytes());
    }
    head
}

/// One accepted connection whose handshake request was read.
pub(crate) struct Accepted {
    /// 0 for the first connection the upstream accepted, 1 for the next, …
    pub(crate) index: usize,
    key: String,
    out: OwnedWriteHalf,
}

impl Accepted {
    /// Completes the handshake.
    pub(crate) async fn accept(&mut self) -> std::io::Result<()> {
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(self.key.as_bytes())
        );
        self.out.write_all(response.as_bytes()).await
    }

    pub(crate) async fn frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut bytes = frame_header(opcode, payload.len() as u64);
        bytes.extend_from_slice(payload);
        self.out.write_all(&bytes).await
    }

    /// `{"n":<n>}` as a text frame: the frames tests count.
    pub(crate) async fn numbered(&mut self, n: u64) -> std::io::Result<()> {
        self.frame(0x1, format!(r#"{{"n":{n}}}"#).as_bytes()).await
    }

    /// Announces a binary frame of `len` bytes and streams its payload until all is sent or the
    /// client goes away; `streamed` counts the payload bytes the socket took.
    pub(crate) async fn stream_huge_frame(&mut self, len: u64, streamed: &AtomicU64) {
        if self.out.write_all(&frame_header(0x2, len)).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0u64;
        while sent < len {
            let n = chunk.len().min((len - sent) as usize);
            if self.out.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            sent += n as u64;
            streamed.store(sent, Ordering::SeqCst);
        }
    }

    /// Keeps the connection open, saying nothing more, until the client leaves.
    pub(crate) async fn hold(self) {
        std::future::pending::<()>().await;
        drop(self);
    }

    /// Answers the handshake one byte every `every`, and never finishes: the status line, then
    /// header bytes forever.
    pub(crate) async fn dribble(mut self, every: Duration) {
        let status = b"HTTP/1.1 101 Switching Protocols\r\n".iter();
        let padding = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n".iter().cycle();
        for &byte in status.chain(padding) {
            if self.out.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    }
}
