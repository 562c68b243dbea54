//! Accepting clients on the two ports, with limits that hold against idle and half-open sockets:
//! without them, a few hundred sockets that never send a byte take every file descriptor, and
//! `/health`, the API and every upstream Connect go down with them.
//!
//! - **A connection cap per port** (`--http-max-connections`, `--grpc-max-connections`). At the
//!   cap the port stops accepting; new clients wait in the kernel's backlog until a slot frees.
//! - **A first-bytes deadline**: an HTTP client must send its request headers within
//!   `--http-header-timeout-ms`, and the same bound applies while a keep-alive connection waits
//!   for its next request; a gRPC client must send the HTTP/2 preface within
//!   `--grpc-handshake-timeout-ms`. So a slot held by a silent socket frees itself.
//! - On gRPC, HTTP/2 limits: `--grpc-max-concurrent-streams` per connection, and keepalive pings
//!   that close a connection whose peer stopped answering.
//!
//! Every accepted socket carries its peer's address, for the logs of refused calls.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use futures_util::Stream;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes a gRPC client sends first: the HTTP/2 connection preface (24) and a SETTINGS frame
/// header (9).
const H2_OPENING: usize = 24 + 9;

/// One port's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortLimits {
    /// Most open client connections.
    pub max_connections: usize,
    /// How long a new client may take to send its first request (HTTP: its headers; gRPC: the
    /// HTTP/2 preface).
    pub first_bytes_within: Duration,
}

/// An accepted client socket: holds its slot of the port's cap until dropped, and fails its reads
/// with `TimedOut` when the client has not sent its opening bytes in time.
pub(crate) struct Admitted {
    tcp: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// Bytes still expected before the deadline is lifted, and the deadline.
    opening: Option<(usize, Pin<Box<Sleep>>)>,
    _slot: OwnedSemaphorePermit,
}

impl Admitted {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if let Some((expected, _)) = &mut this.opening {
                    *expected = expected.saturating_sub(read);
                    if *expected == 0 || read == 0 {
                        this.opening = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let expired = match &mut this.opening {
                    Some((_, deadline)) => deadline.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if !expired {
                    return Poll::Pending;
                }
                tracing::debug!(peer = %this.peer, "client sent too little in time; closing its connection");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not open its connection in time",
                )))
            }
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.peer),
        }
    }
}

/// Accepts within the cap: waits for a free slot before each accept, so at the cap new clients
/// wait in the backlog instead of taking descriptors.
struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limits: PortLimits,
    port: &'static str,
    /// When the port was last said to be full (at most once per [`FULL_LOG_EVERY`]).
    full_logged: std::sync::Mutex<Option<tokio::time::Instant>>,
}

const FULL_LOG_EVERY: Duration = Duration::from_secs(10);

impl Acceptor {
    fn new(listener: TcpListener, limits: PortLimits, port: &'static str) -> Acceptor {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            port,
            full_logged: std::sync::Mutex::new(None),
        }
    }

    fn full_log_due(&self) -> bool {
        let mut last = self
            .full_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < FULL_LOG_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The next admitted client; `opening` is how many bytes it owes before the deadline.
    async fn next(&self, opening: usize) -> Admitted {
        let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
            // The semaphore is never closed; stand still rather than spin if it were.
            return std::future::pending().await;
        };
        if self.slots.available_permits() == 0 && self.full_log_due() {
            tracing::warn!(
                port = self.port,
                max = self.limits.max_connections,
                "the port holds its maximum of client connections; new clients wait until one \
                 closes or times out"
            );
        }
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "TCP_NODELAY not set on a client connection");
                    }
                    let deadline = Box::pin(tokio::time::sleep(self.limits.first_bytes_within));
                    return Admitted {
                        local: tcp.local_addr().ok(),
                        tcp,
                        peer,
                        opening: Some((opening, deadline)),
                        _slot: slot,
                    };
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning; the
                    // deadlines free descriptors held by silent clients.
                    tracing::warn!(port = self.port, error = %e, "accepting a client failed; retrying in 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// The gRPC port's clients, for tonic's `serve_with_incoming_shutdown`.
pub(crate) fn grpc_incoming(
    listener: TcpListener,
    limits: PortLimits,
) -> impl Stream<Item = Result<Admitted, io::Error>> + Send + 'static {
    let acceptor = Arc::new(Acceptor::new(listener, limits, "gRPC"));
    futures_util::stream::unfold(acceptor, |acceptor| async move {
        let admitted = acceptor.next(H2_OPENING).await;
        Some((Ok(admitted), acceptor))
    })
}

/// Serves `router` on the HTTP port until `stop` resolves, then lets open requests finish (the
/// caller bounds how long).
pub(crate) async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: PortLimits,
    stop: impl Future<Output = ()>,
) {
    let acceptor = Acceptor::new(listener, limits, "HTTP");
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // Also bounds how long a keep-alive connection may wait for its next request.
        .header_read_timeout(limits.first_bytes_within)
        .max_headers(100);
    let mut stop = std::pin::pin!(stop);
    loop {
        let admitted = tokio::select! {
            _ = &mut stop => break,
            admitted = acceptor.next(1) => admitted,
        };
        let peer = admitted.peer();
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                tower::ServiceExt::oneshot(router.clone(), request)
            },
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(admitted), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "HTTP client connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}
