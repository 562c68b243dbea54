//! The `feed-server` binary: its `listening` line, streaming, the HTTP control endpoint, its TLS
//! flags, and a clean exit on SIGTERM.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tokio::time::timeout;

/// The running binary; killed on drop if the test did not stop it.
struct FeedProcess {
    child: Child,
    /// `None` only while a line is being read on a blocking thread.
    stdout: Option<BufReader<ChildStdout>>,
}

impl FeedProcess {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_feed-server"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn feed-server");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Self {
            child,
            stdout: Some(stdout),
        }
    }

    /// The next stdout line (blocking read bounded by a thread + timeout).
    async fn line(&mut self) -> String {
        let mut stdout = self.stdout.take().expect("stdout reader");
        let read = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            stdout.read_line(&mut line).map(|_| (line, stdout))
        });
        let (line, stdout) = timeout(LONG, read)
            .await
            .expect("no stdout line in time")
            .expect("reader thread")
            .expect("read stdout");
        self.stdout = Some(stdout);
        line.trim_end().to_owned()
    }

    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "feed-server did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FeedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn binary_prints_its_listening_line_streams_and_exits_on_sigterm() {
    let mut feed =
        FeedProcess::spawn(&["--listen", "127.0.0.1:0", "--rate", "100", "--size", "120"]);
    let line = feed.line().await;
    let url = line
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");

    let mut client = connect(&format!("{url}/stream?count=5")).await;
    for expected in 1..=5 {
        let frame = next_text(&mut client).await;
        assert_eq!(frame.len(), 120);
        assert_eq!(seq(&frame), expected);
    }
    assert!(feed.terminate().success());
}

#[tokio::test]
async fn control_endpoint_serves_stats_and_drops_connections() {
    let mut feed = FeedProcess::spawn(&["--rate", "10", "--control-port", "0"]);
    let ws = feed.line().await;
    let control = feed.line().await;
    let ws = ws
        .strip_prefix("listening ")
        .expect("listening line")
        .to_owned();
    let control = control
        .strip_prefix("control http://")
        .unwrap_or_else(|| panic!("unexpected second line: {control}"))
        .to_owned();

    let mut client = connect(&format!("{ws}/stream")).await;
    send_text(
        &mut client,
        r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":5}"#,
    )
    .await;
    assert_eq!(next_reply(&mut client).await, r#"{"result":null,"id":5}"#);

    let (status, stats) = http(&control, "GET", "/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["accepted_total"], 1);
    assert_eq!(stats["received_total"], 1);
    assert_eq!(stats["sessions"][0]["subscriptions"][0], "ethusdt@depth");
    assert_eq!(stats["sessions"][0]["path"], "/stream");

    let (status, received) = http(&control, "GET", "/received").await;
    assert_eq!(status, 200);
    assert_eq!(received[0]["connection"], 1);
    assert!(received[0]["text"].as_str().unwrap().contains("SUBSCRIBE"));

    let (status, stalled) = http(&control, "POST", "/stall?ms=50").await;
    assert_eq!((status, &stalled["stalled"]), (200, &Value::from(1)));

    let (status, dropped) = http(&control, "POST", "/drop").await;
    assert_eq!((status, &dropped["dropped"]), (200, &Value::from(1)));
    // The client sees its connection end without a close frame.
    loop {
        match timeout(LONG, futures_util::StreamExt::next(&mut client))
            .await
            .expect("connection did not end")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => {
                panic!("got a close frame after /drop")
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    let (_, stats) = http(&control, "GET", "/stats").await;
    assert_eq!(stats["connections"], 0);

    assert_eq!(http(&control, "GET", "/nope").await.0, 404);
    assert_eq!(http(&control, "GET", "/drop").await.0, 405);
    assert_eq!(http(&control, "POST", "/stall").await.0, 400);
    assert!(feed.terminate().success());
}

/// Runs the binary to its exit (for flags it refuses); returns whether it succeeded and stderr.
fn run_to_exit(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_feed-server"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run feed-server");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn binary_serves_wss_with_the_given_certificate_and_client_ca() {
    let ca = wsm_testkit::tls::TestCa::new("feed test CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = ca.issue(&["localhost"]).write(dir.path(), "server");
    let client_ca = ca.write_ca_file(dir.path());
    let (cert, key, client_ca) = (
        cert.to_str().expect("path"),
        key.to_str().expect("path"),
        client_ca.to_str().expect("path"),
    );
    let mut feed = FeedProcess::spawn(&[
        "--rate",
        "100",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-versions",
        "1.3",
        "--tls-client-ca",
        client_ca,
    ]);
    let line = feed.line().await;
    let addr = line
        .strip_prefix("listening wss://")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .parse()
        .expect("a socket address");

    let identity = ca.issue_client("wsm-client");
    let tls13 = tls::client_config(ca.ca_pem(), tls::TLS13, Some(&identity));
    let mut client = tls::connect_tls(addr, "/ws?count=3", tls13)
        .await
        .expect("served over TLS 1.3 with a client certificate");
    for expected in 1..=3 {
        assert_eq!(seq(&next_text(&mut client).await), expected);
    }
    let tls12 = tls::client_config(ca.ca_pem(), tls::TLS12, Some(&identity));
    tls::connect_tls(addr, "/ws", tls12)
        .await
        .expect_err("--tls-versions 1.3 refuses TLS 1.2");
    let anonymous = tls::client_config(ca.ca_pem(), tls::TLS13, None);
    tls::connect_tls(addr, "/ws", anonymous)
        .await
        .expect_err("--tls-client-ca wants a client certificate");
    assert!(feed.terminate().success());
}

#[test]
fn binary_refuses_tls_flags_that_do_not_make_a_server() {
    let ca = wsm_testkit::tls::TestCa::new("feed test CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = ca.issue(&["localhost"]).write(dir.path(), "server");
    let (_, other_key) = ca.issue(&["localhost"]).write(dir.path(), "other");
    let (cert, key, other_key) = (
        cert.to_str().expect("path"),
        key.to_str().expect("path"),
        other_key.to_str().expect("path"),
    );

    let (ok, stderr) = run_to_exit(&["--tls-cert", cert]);
    assert!(!ok && stderr.contains("--tls-key"), "{stderr}");
    let (ok, stderr) = run_to_exit(&["--tls-key", key]);
    assert!(!ok && stderr.contains("--tls-cert"), "{stderr}");
    let (ok, stderr) = run_to_exit(&["--tls-versions", "1.3"]);
    assert!(!ok && stderr.contains("--tls-cert"), "{stderr}");
    let (ok, stderr) = run_to_exit(&[
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-versions",
        "1.1",
    ]);
    assert!(!ok && stderr.contains("all, 1.2 or 1.3"), "{stderr}");
    let (ok, stderr) = run_to_exit(&["--tls-cert", cert, "--tls-key", other_key]);
    assert!(!ok && stderr.contains("do not go together"), "{stderr}");
    let (ok, stderr) = run_to_exit(&["--tls-cert", key, "--tls-key", key]);
    assert!(!ok && stderr.contains("no PEM certificate"), "{stderr}");
    let missing = dir.path().join("missing.crt");
    let missing = missing.to_str().expect("path");
    let (ok, stderr) = run_to_exit(&["--tls-cert", missing, "--tls-key", key]);
    assert!(
        !ok && stderr.contains("cannot read") && stderr.contains("missing.crt"),
        "{stderr}"
    );
}
