//! The fixtures themselves: a redis-server that stops and restarts on its port, and a sidecar that
//! answers health checks and injects faults.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use wsm_testkit::{DaprSidecar, RedisServer};

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// The status code of `GET path` on the sidecar, over plain HTTP/1.1.
async fn status(sidecar: &DaprSidecar, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", sidecar.port()))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response[9..12].parse().unwrap()
}

#[test]
fn redis_server_stops_and_restarts_on_the_same_port() {
    let mut server = RedisServer::start();
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert!(ping(port));
    server.stop();
    assert!(!server.is_running());
    assert!(!ping(port));
    server.restart();
    assert_eq!(server.port(), port);
    assert!(ping(port));
    drop(server);
    assert!(!ping(port));
}

#[tokio::test]
async fn sidecar_answers_health_checks_and_injects_faults() {
    let redis = RedisServer::start();
    let sidecar = DaprSidecar::start(&redis.url(), "app", "statestore", "pubsub").await;
    assert_eq!(status(&sidecar, "/v1.0/healthz").await, 204);
    assert_eq!(
        status(&sidecar, "/v1.0/state/statestore/missing").await,
        204
    );
    assert_eq!(status(&sidecar, "/v1.0/state/other/missing").await, 400);
    sidecar.set_failing(true);
    assert_eq!(status(&sidecar, "/v1.0/healthz").await, 500);
    sidecar.set_failing(false);
    sidecar.set_delay(Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_eq!(status(&sidecar, "/v1.0/healthz").await, 204);
    assert!(started.elapsed() >= Duration::from_millis(200));
}
