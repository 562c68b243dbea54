//! The C host harness (`tests/harness/`, SPEC section 6): compiles `host_sim` with the system C
//! compiler and drives the built `libcontroller` through it, the way WorkManager's NativeDllEngine
//! does — `dlopen`, the raw C ABI, FlatBuffers encoded and decoded by the harness's own C code.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use serde_json::{json, Value};

mod support;

use support::host_sim::{recorded, run, stderr, stdout_lines, work_dir, write_file};
use support::live_wsm::LiveWsm;

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

const SCRIPT: &str = r#"# canned replies per method: Method STATUS BODY (the last one for a method repeats)
Connect 0 {"id":"c1","status":"connected"}
Connect 0 {"id":"c2","status":"connected"}
SendRaw 0 {}
StartPublish 0 {"topic":"t1"}
StopPublish 0 {}
Send 0 {"response":"aGVsbG8="}
List 0 {"connections":[{"id":"c1","url":"ws://a","status":"connected","topic":"t1","instance_id":"i1","tags":{"k":"v"}}]}
Disconnect 0 {}
Disconnect 5 {"code":"NOT_FOUND","message":"Connection not found"}
SetTag 0 {}
GetTag 0 {"value":"v"}
SetTags 0 {}
GetTags 0 {"tags":{"a":"1"}}
Rotate 0 {"overlap":true,"duplicates":"12","tookMs":"143"}
"#;

const EVENTS: &str = r#"# every controller command, in the order a caller would use them
@correlationid=corr-1 @subject=feed {"command":"create","url":"ws://a","auto_reconnect":true,"tags":{"k":"v"}}
{"command":"subscribe","id":"c1","params":["btcusdt@depth"]}
{"command":"Unsubscribe","id":"c1","params":["btcusdt@depth"]}
@ext.response_type=custom.reply {"command":"publish","id":"c1","topic":"t1"}
{"command":"stop-publish","id":"c1"}
{"command":"send_raw","id":"c1","text":"hi"}
{"command":"send","id":"c1","text":"ping","timeout_ms":500}
{"command":"list","filters":{"k":"v"}}
{"command":"set_tag","id":"c1","key":"k","value":"v"}
{"command":"get_tag","id":"c1","key":"k"}
{"command":"set_tags","id":"c1","tags":{"a":"1"}}
{"command":"get_tags","id":"c1"}
{"command":"rotate","id":"c1"}
{"command":"disconnect","id":"c1"}
{"command":"create","url":"ws://b"}
{"command":"stop"}
"#;

fn expected_replies() -> Vec<Value> {
    vec![
        json!({"command":"create","success":true,"id":"c1","status":"connected","message":"connected"}),
        json!({"command":"subscribe","success":true,"id":"c1","request_id":1}),
        json!({"command":"unsubscribe","success":true,"id":"c1","request_id":2}),
        json!({"command":"publish","success":true,"id":"c1","topic":"t1"}),
        json!({"command":"stop_publish","success":true,"id":"c1"}),
        json!({"command":"send_raw","success":true,"id":"c1"}),
        json!({"command":"send","success":true,"id":"c1","response":"aGVsbG8=","response_text":"hello"}),
        json!({"command":"list","success":true,"connections":[{"id":"c1","url":"ws://a","status":"connected","topic":"t1","instance_id":"i1","tags":{"k":"v"}}]}),
        json!({"command":"set_tag","success":true,"id":"c1"}),
        json!({"command":"get_tag","success":true,"id":"c1","key":"k","value":"v"}),
        json!({"command":"set_tags","success":true,"id":"c1"}),
        json!({"command":"get_tags","success":true,"id":"c1","tags":{"a":"1"}}),
        json!({"command":"rotate","success":true,"id":"c1","overlap":true,"duplicates":12,"took_ms":143}),
        json!({"command":"disconnect","success":true,"id":"c1"}),
        json!({"command":"create","success":true,"id":"c2","status":"connected","message":"connected"}),
        // c1 was disconnected explicitly; stop disconnects c2, which the script answers NOT_FOUND
        // (the second Disconnect line): forgotten quietly, so 0 counted.
        json!({"command":"stop","success":true,"message":"disconnected 0 connections"}),
    ]
}

fn expected_calls() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Connect",
            json!({"url":"ws://a","auto_reconnect":true,"tags":{"k":"v"}}),
        ),
        (
            "SendRaw",
            json!({"id":"c1","message":b64(r#"{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":1}"#),
                   "content_type":"application/json","replay_on_reconnect":true}),
        ),
        (
            "SendRaw",
            json!({"id":"c1","message":b64(r#"{"method":"UNSUBSCRIBE","params":["btcusdt@depth"],"id":2}"#),
                   "content_type":"application/json","replay_on_reconnect":true}),
        ),
        ("StartPublish", json!({"id":"c1","topic":"t1"})),
        ("StopPublish", json!({"id":"c1"})),
        (
            "SendRaw",
            json!({"id":"c1","message":b64("hi"),"content_type":"application/json"}),
        ),
        (
            "Send",
            json!({"id":"c1","message":b64("ping"),"timeout_ms":500,"content_type":"application/json"}),
        ),
        ("List", json!({"filters":[{"key":"k","value":"v"}]})),
        ("SetTag", json!({"id":"c1","key":"k","value":"v"})),
        ("GetTag", json!({"id":"c1","key":"k"})),
        ("SetTags", json!({"id":"c1","tags":{"a":"1"}})),
        ("GetTags", json!({"id":"c1"})),
        ("Rotate", json!({"id":"c1"})),
        ("Disconnect", json!({"id":"c1"})),
        ("Connect", json!({"url":"ws://b","auto_reconnect":false})),
        ("Disconnect", json!({"id":"c2"})),
    ]
}

/// Runs every controller command in script mode and checks replies and recorded gateway calls.
fn every_command(prefix: &[&str], tag: &str) {
    let script = write_file(&format!("script-{tag}.txt"), SCRIPT);
    let events = write_file(&format!("events-{tag}.txt"), EVENTS);
    let record = work_dir().join(format!("record-{tag}.txt"));
    let gw = format!("script:{}", script.display());
    let out = run(
        prefix,
        &[
            "--gateway",
            &gw,
            "--record",
            record.to_str().unwrap(),
            "--verbose",
            "--events",
            events.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "host_sim failed:\n{err}");
    assert_eq!(stdout_lines(&out), expected_replies(), "stderr:\n{err}");
    assert!(
        err.contains("16 calls, 16 replies ok, 0 bad; 16 results freed; 16 gateway calls, 16 buffers allocated, 16 freed"),
        "{err}"
    );
    // The reply envelope (printed by --verbose): correlation id and subject echoed, response_type honoured.
    assert!(err.contains("subject=feed"), "{err}");
    assert!(err.contains("ext correlationid=corr-1"), "{err}");
    assert!(err.contains("type=custom.reply"), "{err}");
    assert!(
        err.contains("type=response.websocketmanagercontroller source=urn:com.virtufin.worker.websocketmanagercontroller"),
        "{err}"
    );
    let calls = recorded(&record);
    let want = expected_calls();
    assert_eq!(calls.len(), want.len(), "{calls:?}");
    for ((service, method, body), (want_method, want_body)) in calls.iter().zip(want) {
        assert_eq!(service, "websocketmanager");
        assert_eq!(method, want_method);
        assert_eq!(body, &want_body, "{method}");
    }
}

/// Error replies: unknown command, bad JSON, gateway failures with and without a WSM body, ABI 2.
fn error_replies(prefix: &[&str], tag: &str) {
    let script = write_file(
        &format!("errors-{tag}.txt"),
        "Disconnect 5 {\"code\":\"NOT_FOUND\",\"message\":\"Connection not found\"}\n\
         Connect 14 upstream connect error\n\
         GetTag 13 <null>\n",
    );
    let gw = format!("script:{}", script.display());
    let record = work_dir().join(format!("errors-record-{tag}.txt"));
    let out = run(
        prefix,
        &[
            "--gateway",
            &gw,
            "--record",
            record.to_str().unwrap(),
            r#"{"command":"frobnicate"}"#,
            "not json at all",
            r#"{"command":"disconnect","id":"gone"}"#,
            r#"@correlationid=e1 {"command":"create","url":"ws://x"}"#,
            r#"{"command":"get_tag","id":"c1","key":"k"}"#,
            r#"{"command":"subscribe","id":"c1"}"#,
            r#"{"command":"set_tags","id":"c1","tags":{}}"#,
        ],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let replies = stdout_lines(&out);
    assert_eq!(replies.len(), 7, "{replies:?}");
    assert_eq!(
        replies[0],
        json!({"command":"error","success":false,"code":"UNKNOWN_COMMAND","message":"Unknown command: frobnicate"})
    );
    assert_eq!(replies[1]["command"], "error");
    assert_eq!(replies[1]["code"], "BAD_REQUEST");
    assert!(replies[1]["message"]
        .as_str()
        .unwrap()
        .starts_with("Failed to parse command JSON"));
    assert_eq!(
        replies[2],
        json!({"command":"disconnect","success":false,"code":"NOT_FOUND","message":"Connection not found"})
    );
    assert_eq!(replies[3]["code"], "GATEWAY_ERROR");
    assert!(
        replies[3]["message"]
            .as_str()
            .unwrap()
            .contains("upstream connect error"),
        "{}",
        replies[3]
    );
    assert_eq!(replies[4]["code"], "GATEWAY_ERROR", "{}", replies[4]);
    assert_eq!(replies[5]["code"], "BAD_REQUEST", "{}", replies[5]);
    assert_eq!(replies[6]["success"], false, "{}", replies[6]);
    assert!(
        err.contains("[WARN] "),
        "log lines carry level names: {err}"
    );
    assert!(
        err.contains("[ERROR] "),
        "log lines carry level names: {err}"
    );
    let methods: Vec<String> = recorded(&record).into_iter().map(|c| c.1).collect();
    assert_eq!(methods[..3], ["Disconnect", "Connect", "GetTag"]);

    // ABI version 2: an ABI_MISMATCH reply and no gateway call at all.
    let record2 = work_dir().join(format!("abi-record-{tag}.txt"));
    let out = run(
        prefix,
        &[
            "--abi",
            "2",
            "--gateway",
            &gw,
            "--record",
            record2.to_str().unwrap(),
            r#"{"command":"disconnect","id":"c1"}"#,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let replies = stdout_lines(&out);
    assert_eq!(replies[0]["command"], "error");
    assert_eq!(replies[0]["code"], "ABI_MISMATCH");
    assert_eq!(std::fs::read_to_string(&record2).unwrap(), "");
}

#[test]
fn self_test_flatbuffers_and_bad_input_corpus() {
    let out = run(&[], &["--self-test"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("FlatBuffers self-test: 0 failure(s)"), "{err}");
    assert!(
        err.contains("plugin bad-input corpus: 0 failure(s)"),
        "{err}"
    );
}

#[test]
fn script_mode_every_command() {
    every_command(&[], "plain");
}

#[test]
fn script_mode_error_replies() {
    error_replies(&[], "plain");
}

#[test]
fn entry_point_names_are_overridable_and_failures_exit_non_zero() {
    let ok = run(
        &[],
        &[
            "--entry",
            "Process",
            "--free",
            "FreeResult",
            r#"{"command":"nope"}"#,
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let missing = run(&[], &["--entry", "NoSuchExport", r#"{"command":"list"}"#]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("NoSuchExport"));
    // A reply that does not say what the caller expects makes the run fail.
    let unexpected = run(
        &[],
        &["--expect", "\"success\":true", r#"{"command":"nope"}"#],
    );
    assert!(!unexpected.status.success(), "{}", stderr(&unexpected));
    assert!(stderr(&unexpected).contains("0 replies ok, 1 bad"));
}

#[test]
fn eight_threads_ten_thousand_calls_each() {
    let script = write_file("script-threads.txt", SCRIPT);
    let events = write_file(
        "events-threads.txt",
        "@correlationid=t1 {\"command\":\"get_tag\",\"id\":\"c1\",\"key\":\"k\"}\n\
         @subject=s2 {\"command\":\"list\"}\n\
         {\"command\":\"publish\",\"id\":\"c1\",\"topic\":\"t1\"}\n\
         @correlationid=t4 @subject=s4 {\"command\":\"set_tag\",\"id\":\"c1\",\"key\":\"k\",\"value\":\"v\"}\n",
    );
    let gw = format!("script:{}", script.display());
    let started = Instant::now();
    let out = run(
        &[],
        &[
            "--gateway",
            &gw,
            "--threads",
            "8",
            "--repeat",
            "2500",
            "--expect",
            "\"success\":true",
            "--events",
            events.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("80000 calls, 80000 replies ok, 0 bad; 80000 results freed; 80000 gateway calls, 80000 buffers allocated, 80000 freed"),
        "{err}"
    );
    let replies = stdout_lines(&out);
    assert_eq!(replies.len(), 80_000);
    let mut per_command = std::collections::HashMap::new();
    for r in &replies {
        assert_eq!(r["success"], true, "{r}");
        *per_command
            .entry(r["command"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    for command in ["get_tag", "list", "publish", "set_tag"] {
        assert_eq!(per_command[command], 20_000, "{command}");
    }
    eprintln!("8 threads x 10k calls in {:?}", started.elapsed());
}

#[test]
fn bench_mode_reports_rate_and_percentiles() {
    let script = write_file("script-bench.txt", SCRIPT);
    let gw = format!("script:{}", script.display());
    let out = run(
        &[],
        &[
            "--gateway",
            &gw,
            "--bench",
            "--repeat",
            "500",
            r#"{"command":"get_tag","id":"c1","key":"k"}"#,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("bench: 500 calls, 1 thread(s), ")
            && text.contains("calls/s, median ")
            && text.contains(" us, p99 "),
        "{text}"
    );
}

/// One request as the loopback responder saw it.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

fn serve(stream: TcpStream, seen: &Seen) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    seen.lock().unwrap().push((
        request_line.trim().to_owned(),
        String::from_utf8(body).unwrap(),
    ));
    let mut stream = stream;
    let response = match path.as_str() {
        "/v1/invoke/Connect" => {
            let body = r#"{"id":"h1","status":"connected"}"#;
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
        "/v1/invoke/GetTags" => {
            // chunked, in two chunks
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"tags\":\r\n9\r\n{\"x\":\"y\"}\r\n1\r\n}\r\n0\r\n\r\n"
                .to_owned()
        }
        "/v1/invoke/Disconnect" => {
            let body = r#"{"code":"NOT_FOUND","message":"Connection not found"}"#;
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
        _ => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown".to_owned(),
    };
    stream.write_all(response.as_bytes()).unwrap();
}

#[test]
fn http_mode_against_a_loopback_responder() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(s) => serve(s, &seen2),
                Err(_) => break,
            }
        }
    });
    let gw = format!("http://127.0.0.1:{port}");
    let out = run(
        &[],
        &[
            "--gateway",
            &gw,
            r#"{"command":"create","url":"ws://feed"}"#,
            r#"{"command":"get_tags","id":"h1"}"#,
            r#"{"command":"disconnect","id":"h1"}"#,
            r#"{"command":"publish","id":"h1","topic":"t"}"#,
        ],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let replies = stdout_lines(&out);
    assert_eq!(
        replies[0],
        json!({"command":"create","success":true,"id":"h1","status":"connected","message":"connected"})
    );
    assert_eq!(
        replies[1],
        json!({"command":"get_tags","success":true,"id":"h1","tags":{"x":"y"}})
    );
    assert_eq!(
        replies[2],
        json!({"command":"disconnect","success":false,"code":"NOT_FOUND","message":"Connection not found"})
    );
    assert_eq!(replies[3]["code"], "GATEWAY_ERROR", "{}", replies[3]);
    assert!(
        replies[3]["message"].as_str().unwrap().contains("503"),
        "{}",
        replies[3]
    );
    let seen = seen.lock().unwrap();
    let lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        lines,
        [
            "POST /v1/invoke/Connect HTTP/1.1",
            "POST /v1/invoke/GetTags HTTP/1.1",
            "POST /v1/invoke/Disconnect HTTP/1.1",
            "POST /v1/invoke/StartPublish HTTP/1.1",
        ]
    );
    let body: Value = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(body, json!({"url":"ws://feed","auto_reconnect":false}));

    // Nobody listening: a gateway error reply, not a crash.
    drop(seen);
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let out = run(
        &[],
        &[
            "--gateway",
            &format!("http://127.0.0.1:{dead_port}"),
            r#"{"command":"list"}"#,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_lines(&out)[0]["code"], "GATEWAY_ERROR");
}

#[test]
fn script_mode_suite_under_valgrind() {
    let available = Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        available,
        "valgrind is not on PATH: the memory-checked run needs it (scripts/test.sh installs it with \
         apt-get; or `apt-get install valgrind`)"
    );
    let vg = [
        "valgrind",
        "--leak-check=full",
        "--error-exitcode=1",
        "--errors-for-leak-kinds=definite",
        "-q",
    ];
    every_command(&vg, "valgrind");
    error_replies(&vg, "valgrind");
    let out = run(&vg, &["--self-test"]);
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "valgrind run of --self-test failed:\n{err}"
    );
    assert!(
        err.contains("plugin bad-input corpus: 0 failure(s)"),
        "{err}"
    );
    // Several hosts from several threads. `--keep-loaded`: the plugin keeps one registry entry per
    // host table in a static for the life of the process (docs/controller.md: the ABI has no unload
    // hook), so after `dlclose` unmaps the library valgrind counts that map (≈150 bytes per host)
    // as definitely lost. Kept loaded it is reachable, and anything else lost still fails the run.
    let out = run(
        &vg,
        &[
            "--keep-loaded",
            "--gateway",
            &format!(
                "script:{}",
                write_file("script-vg-threads.txt", SCRIPT).display()
            ),
            "--threads",
            "4",
            "--repeat",
            "50",
            "--quiet",
            r#"{"command":"get_tag","id":"c1","key":"k"}"#,
        ],
    );
    assert!(
        out.status.success(),
        "valgrind threaded run failed:\n{}",
        stderr(&out)
    );
}

#[test]
fn http_mode_against_the_real_wsm_server() {
    use wsm::proto::{web_socket_manager_client::WebSocketManagerClient, SubscribeRequest};

    let live = LiveWsm::start(&[]);
    let url = live.feed.url("/ws");
    let create = format!(r#"{{"command":"create","url":"{url}","tags":{{"desk":"demo"}}}}"#);
    let out = run(&[], &["--gateway", &live.http, &create]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reply = &stdout_lines(&out)[0];
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["status"], "connected", "{reply}");
    let id = reply["id"]
        .as_str()
        .expect("create names the connection")
        .to_owned();

    // Read the topic from the start, over gRPC, while the harness drives the rest.
    let mut events = live.runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(live.grpc.clone())
            .unwrap()
            .connect()
            .await
            .expect("the gRPC port accepts");
        WebSocketManagerClient::new(channel)
            .subscribe(SubscribeRequest {
                topic: "md.btcusdt".into(),
            })
            .await
            .expect("Subscribe opens")
            .into_inner()
    });
    let commands = [
        format!(r#"{{"command":"subscribe","id":"{id}","params":["btcusdt@depth@100ms"]}}"#),
        format!(r#"{{"command":"publish","id":"{id}","topic":"md.btcusdt"}}"#),
        r#"{"command":"list","filters":{"desk":"demo"}}"#.to_owned(),
        format!(r#"{{"command":"get_tags","id":"{id}"}}"#),
        r#"{"command":"disconnect","id":"no-such-id"}"#.to_owned(),
    ];
    let args: Vec<&str> = ["--gateway", live.http.as_str()]
        .into_iter()
        .chain(commands.iter().map(String::as_str))
        .collect();
    let out = run(&[], &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let replies = stdout_lines(&out);
    assert_eq!(
        replies[0],
        json!({"command":"subscribe","success":true,"id":id,"request_id":1})
    );
    assert_eq!(
        replies[1],
        json!({"command":"publish","success":true,"id":id,"topic":"md.btcusdt"})
    );
    let rows = replies[2]["connections"].as_array().expect("list rows");
    assert_eq!(rows.len(), 1, "{}", replies[2]);
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["status"], "connected");
    assert_eq!(rows[0]["topic"], "md.btcusdt");
    assert_eq!(replies[3]["tags"], json!({"desk":"demo"}));
    assert_eq!(
        replies[4],
        json!({"command":"disconnect","success":false,"code":"NOT_FOUND","message":"Connection not found"})
    );

    // The SUBSCRIBE reached the upstream, and its frames are published in order.
    let subscribed = live.feed.subscriptions();
    assert_eq!(
        subscribed.values().next(),
        Some(&vec!["btcusdt@depth@100ms".to_owned()]),
        "{subscribed:?}"
    );
    let seqs: Vec<u64> = live.runtime.block_on(async {
        let mut seqs = Vec::new();
        while seqs.len() < 3 {
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.message())
                .await
                .expect("frames arrive within 10 s")
                .expect("the stream stays open")
                .expect("the stream does not end");
            assert_eq!(event.connection_id, id);
            seqs.push(event.seq);
        }
        seqs
    });
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive seqs: {seqs:?}"
    );

    // WSM's proto3 JSON (uint64 strings) as numbers, or UNAVAILABLE before make-before-break.
    let rotate = format!(r#"{{"command":"rotate","id":"{id}"}}"#);
    let unknown = r#"{"command":"rotate","id":"no-such-id"}"#;
    let rotated = stdout_lines(&run(&[], &["--gateway", &live.http, unknown, &rotate]));
    assert_eq!(
        rotated[0],
        json!({"command":"rotate","success":false,"code":"NOT_FOUND","message":"Connection not found"})
    );
    let r = &rotated[1];
    let numbers = r["overlap"].is_boolean() && r["duplicates"].is_u64() && r["took_ms"].is_u64();
    let ok = r["success"] == true && r["id"] == id.as_str() && numbers;
    assert!(ok || r["code"] == "UNAVAILABLE", "{r}");

    // `stop` disconnects what this worker created (a worker lives for one host process).
    let create_and_stop = [create.as_str(), r#"{"command":"stop"}"#];
    let args: Vec<&str> = ["--gateway", live.http.as_str()]
        .into_iter()
        .chain(create_and_stop)
        .collect();
    let out = run(&[], &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let replies = stdout_lines(&out);
    assert_eq!(
        replies[1]["message"], "disconnected 1 connections",
        "{}",
        replies[1]
    );
    let list = run(&[], &["--gateway", &live.http, r#"{"command":"list"}"#]);
    let rows = stdout_lines(&list)[0]["connections"].clone();
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(1),
        "only the first connection is left: {rows}"
    );
}
