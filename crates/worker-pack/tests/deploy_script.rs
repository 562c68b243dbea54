//! Runs `scripts/deploy_worker.sh` against a stand-in WorkManager: a tiny HTTP/1.1 responder on a free
//! port that records each request and answers from a script of canned responses.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use base64::Engine as _;
use common::{repo_root, TempDir};

/// One request as the responder saw it.
#[derive(Debug)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Serves `responses` in order, one connection each, then stops accepting.
struct Responder {
    url: String,
    requests: Receiver<Recorded>,
}

impl Responder {
    fn start(responses: Vec<(u16, &'static str)>) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, requests) = mpsc::channel();
        std::thread::spawn(move || {
            for (status, body) in responses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                // Recorded before answering, so everything the script saw answered is in the channel
                // by the time the script exits.
                match serve_one(stream, status, body, |req| {
                    let _ = tx.send(req);
                }) {
                    Ok(()) => {}
                    Err(err) => eprintln!("responder: {err}"),
                }
            }
        });
        Responder { url, requests }
    }

    fn recorded(&self) -> Vec<Recorded> {
        self.requests.try_iter().collect()
    }
}

fn serve_one(
    stream: TcpStream,
    status: u16,
    body: &str,
    record: impl FnOnce(Recorded),
) -> std::io::Result<()> {
    // Only guards against a hung test; curl sends everything at once.
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();

    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((key, value)) = header.split_once(':') {
            headers.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(key, _): &&(String, String)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    let mut writer = stream;
    if find("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let length: usize = find("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body_in = vec![0; length];
    reader.read_exact(&mut body_in)?;

    record(Recorded {
        method,
        path,
        headers,
        body: body_in,
    });
    let reason = if status < 400 { "OK" } else { "Error" };
    write!(
        writer,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    writer.flush()
}

/// Runs the deploy script with a clean environment for the knobs it reads.
fn deploy(zip: &std::path::Path, url: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command
        .arg(repo_root().join("scripts/deploy_worker.sh"))
        .arg(zip)
        .env("WORKMANAGER_URL", url)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    for var in [
        "MIME_TYPE",
        "TOPIC",
        "GROUP",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(var);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn fake_zip(dir: &TempDir) -> (std::path::PathBuf, Vec<u8>) {
    // Every byte value, so base64 padding and non-UTF-8 content are both exercised.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    (dir.write("worker.zip", &bytes), bytes)
}

const WORKER_ID: &str = "3f2c9a8e-5b1d-4c7e-9f00-1234567890ab";

#[test]
fn deploy_creates_then_starts_and_prints_only_the_id() {
    let dir = TempDir::new("deploy-ok");
    let (zip, bytes) = fake_zip(&dir);
    let server = Responder::start(vec![
        (200, r#"{"id":"3f2c9a8e-5b1d-4c7e-9f00-1234567890ab"}"#),
        (200, "{}"),
    ]);

    let output = deploy(&zip, &server.url, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{WORKER_ID}\n")
    );

    let requests = server.recorded();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let (create, start) = (&requests[0], &requests[1]);
    assert_eq!(
        (create.method.as_str(), create.path.as_str()),
        ("POST", "/v1/workers")
    );
    assert_eq!(
        (start.method.as_str(), start.path.as_str()),
        ("POST", format!("/v1/workers/{WORKER_ID}/start").as_str())
    );
    assert_eq!(create.header("content-type"), Some("application/json"));

    let body: serde_json::Value = serde_json::from_slice(&create.body).unwrap();
    assert_eq!(body["mime_type"], "application/x-nativedll");
    assert_eq!(body["topic"], "command.websocketmanagercontroller");
    assert_eq!(body["group"], "websocketmanagercontroller");
    let content = body["code_source"]["content"].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(content)
        .unwrap();
    assert_eq!(decoded, bytes);
}

#[test]
fn deploy_honours_mime_type_topic_and_group_overrides() {
    let dir = TempDir::new("deploy-env");
    let (zip, _) = fake_zip(&dir);
    let server = Responder::start(vec![(201, r#"{"id": "w-1"}"#), (204, "")]);

    let output = deploy(
        &zip,
        &format!("{}/", server.url),
        &[
            ("MIME_TYPE", "application/x-native-dll"),
            ("TOPIC", "command.other"),
            ("GROUP", ""),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"w-1\n");

    let requests = server.recorded();
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["mime_type"], "application/x-native-dll");
    assert_eq!(body["topic"], "command.other");
    assert!(
        body.get("group").is_none(),
        "empty GROUP leaves the field out: {body}"
    );
    assert_eq!(requests[1].path, "/v1/workers/w-1/start");
}

#[test]
fn deploy_fails_with_the_body_when_create_answers_500() {
    let dir = TempDir::new("deploy-500");
    let (zip, _) = fake_zip(&dir);
    let server = Responder::start(vec![(
        500,
        r#"{"code":"EngineNotFoundException","message":"no engine for application/x-nativedll"}"#,
    )]);

    let output = deploy(&zip, &server.url, &[]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "no id on failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("create worker"), "names the step: {stderr}");
    assert!(stderr.contains("HTTP 500"), "{stderr}");
    assert!(
        stderr.contains("no engine for application/x-nativedll"),
        "carries the body: {stderr}"
    );
    assert_eq!(server.recorded().len(), 1, "start is not attempted");
}

#[test]
fn deploy_fails_naming_the_start_step_when_start_is_refused() {
    let dir = TempDir::new("deploy-start");
    let (zip, _) = fake_zip(&dir);
    let server = Responder::start(vec![
        (200, r#"{"id":"w-2"}"#),
        (404, r#"{"message":"worker not found"}"#),
    ]);

    let output = deploy(&zip, &server.url, &[]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("start worker w-2"), "{stderr}");
    assert!(
        stderr.contains("HTTP 404") && stderr.contains("worker not found"),
        "{stderr}"
    );
}

#[test]
fn deploy_fails_when_the_create_response_has_no_id() {
    let dir = TempDir::new("deploy-noid");
    let (zip, _) = fake_zip(&dir);
    let server = Responder::start(vec![(200, r#"{"status":"ok"}"#)]);

    let output = deploy(&zip, &server.url, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no \"id\"") && stderr.contains(r#"{"status":"ok"}"#),
        "{stderr}"
    );
    assert_eq!(server.recorded().len(), 1);
}

#[test]
fn deploy_fails_before_any_request_when_the_zip_is_missing() {
    let dir = TempDir::new("deploy-nozip");
    let server = Responder::start(vec![]);
    let output = deploy(&dir.path().join("absent.zip"), &server.url, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no worker zip at"), "{stderr}");
}
