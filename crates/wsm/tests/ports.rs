//! The server's own ports against idle, silent and half-open clients: a real `wsm serve` process
//! under a low open-file limit, hundreds of sockets that never send a byte, a keep-alive
//! connection left idle, a dribbled body, and one HTTP/2 connection holding many streams open.
//! `/health` and gRPC must keep answering.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::process::{Spawn, WsmProcess};
use support::server::HANG;

/// Opens `n` TCP connections to `addr` that never send anything.
async fn idle_sockets(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        // At the cap the server stops accepting, but the kernel still completes handshakes
        // into its backlog.
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(socket)) => sockets.push(socket),
            _ => break,
        }
    }
    sockets
}

/// `/health` answers within `within`, on a fresh connection.
async fn health_answers(http: &str, within: Duration) -> bool {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(within)
        .build()
        .expect("client");
    let started = Instant::now();
    while started.elapsed() < within {
        if let Ok(response) = client.get(format!("http://{http}/health")).send().await {
            return response.status().is_success();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_sockets_do_not_take_health_or_grpc_down() {
    let wsm = WsmProcess::spawn_with(
        &[
            "--http-max-connections",
            "64",
            "--grpc-max-connections",
            "64",
            "--http-header-timeout-ms",
            "1000",
            "--grpc-handshake-timeout-ms",
            "1000",
            "--max-connections",
            "50",
        ],
        &Spawn {
            open_files: Some(256),
            ..Spawn::default()
        },
    );
    // 300 + 300 silent sockets: more than the 256 descriptors the process has.
    let http_idle = idle_sockets(&wsm.http, 300).await;
    let grpc_idle = idle_sockets(&wsm.grpc, 300).await;
    assert!(
        http_idle.len() >= 64 && grpc_idle.len() >= 64,
        "the sockets opened"
    );
    assert!(
        health_answers(&wsm.http, Duration::from_secs(20)).await,
        "/health answers while idle sockets hold the port"
    );
    let listed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let attempt = tokio::time::timeout(Duration::from_secs(5), wsm.list()).await;
            if let Ok(listed) = attempt {
                return listed;
            }
        }
    })
    .await
    .expect("gRPC List answers while idle sockets hold the port");
    assert!(listed.is_empty());
    drop((http_idle, grpc_idle));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_and_a_silent_one_are_closed_after_the_header_timeout() {
    let wsm = WsmProcess::spawn(&["--http-header-timeout-ms", "500"]);
    // A request, then silence on the same connection.
    let mut keep_alive = TcpStream::connect(&wsm.http).await.expect("connect");
    keep_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: wsm\r\n\r\n")
        .await
        .expect("request");
    let mut silent = TcpStream::connect(&wsm.http).await.expect("connect");
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Reads the answer to the request, then EOF when the server closes the idle connection.
    loop {
        let n = tokio::time::timeout(HANG, keep_alive.read(&mut buf))
            .await
            .expect("the server closes the idle connection")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    let n = tokio::time::timeout(HANG, silent.read(&mut buf))
        .await
        .expect("the server closes the silent connection")
        .unwrap_or(0);
    assert!(
        n == 0 || buf[..n].starts_with(b"HTTP/1.1 408"),
        "closed without a request"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_dribbled_request_body_ends_at_the_body_timeout() {
    let wsm = WsmProcess::spawn(&["--http-body-timeout-ms", "500"]);
    let mut socket = TcpStream::connect(&wsm.http).await.expect("connect");
    socket
        .write_all(
            b"POST /v1/invoke/List HTTP/1.1\r\nHost: wsm\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .await
        .expect("request head");
    let mut answer = Vec::new();
    tokio::time::timeout(HANG, socket.read_to_end(&mut answer))
        .await
        .expect("answered, not left hanging")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("--http-body-timeout-ms"), "{answer}");
}

/// The server's HTTP/2 SETTINGS, read off the wire after sending the client preface.
async fn server_settings(addr: &str) -> Vec<(u16, u32)> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface and empty SETTINGS");
    loop {
        let mut head = [0u8; 9];
        tokio::time::timeout(HANG, tcp.read_exact(&mut head))
            .await
            .expect("a frame in time")
            .expect("a frame header");
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.expect("the payload");
        let (kind, flags) = (head[3], head[4]);
        if kind == 0x4 && flags & 0x1 == 0 {
            return payload
                .chunks_exact(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect();
        }
    }
}

#[tokio::test]
async fn grpc_limits_streams_per_connection_and_other_connections_still_answer() {
    let wsm = WsmProcess::spawn(&["--grpc-max-concurrent-streams", "32"]);
    let settings = server_settings(&wsm.grpc).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3).
    assert!(settings.contains(&(0x3, 32)), "{settings:?}");

    // One connection holding 200 half-open calls (headers sent, the body never ended): the
    // server lets 32 of them open, and every other client is still served.
    let tcp = TcpStream::connect(&wsm.grpc).await.expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut open = Vec::new();
    for _ in 0..200 {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{}/virtufin.WebSocketManager/List",
                wsm.grpc
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        match h2.send_request(request, false) {
            Ok(sent) => open.push(sent),
            Err(e) => panic!("h2 refused a request: {e}"),
        }
    }
    let listed = tokio::time::timeout(Duration::from_secs(10), wsm.list())
        .await
        .expect("another connection is served");
    assert!(listed.is_empty());
    drop(open);
    driver.abort();
}
