//! The `wsm` binary as users run it: `serve`'s flag checks, and every client command against a real
//! server (in this process) and feed. Errors are `error: <CODE>: <message>` with exit code 1.

mod support;

use std::process::{Command, Output};

use feed_server::{FeedConfig, FeedServer};
use support::server::Wsm;

fn wsm(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsm"))
        .args(args)
        .env("WSM_SERVER", server)
        .output()
        .expect("the wsm binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn invalid_serve_flags_exit_1_naming_the_flag() {
    for (args, names) in [
        (&["serve", "--http-port", "70000"][..], "--http-port"),
        (&["serve", "-g", "port"][..], "--grpc-port"),
        (&["serve", "--state", "postgres"][..], "--state"),
        (&["serve", "--pubsub", "kafka"][..], "--pubsub"),
        (
            &["serve", "--record-ttl-seconds", "5"][..],
            "--record-ttl-seconds",
        ),
    ] {
        let out = wsm("http://127.0.0.1:1", args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(names), "{args:?}: {}", stderr(&out));
    }
    // A bad value from the environment names the variable, not a flag nobody typed.
    let out = std::process::Command::new(support::process::wsm_bin())
        .env("WSM_HTTP_PORT", "abc")
        .args(["serve"])
        .output()
        .expect("wsm runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("WSM_HTTP_PORT") && stderr(&out).contains("\"abc\""),
        "{}",
        stderr(&out)
    );
    // Two ports that clash are named as such, not "Address already in use".
    let out = wsm("http://127.0.0.1:1", &["serve", "-s", "5901", "-g", "5901"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("are both 5901: the two ports must differ"),
        "{}",
        stderr(&out)
    );
    // Checked after parsing, before anything starts.
    let out = wsm(
        "http://127.0.0.1:1",
        &[
            "serve",
            "-s",
            "0",
            "-g",
            "0",
            "--allowed-hosts",
            "10.0.0.1/8",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--allowed-hosts") && stderr(&out).contains("10.0.0.0/8"),
        "{}",
        stderr(&out)
    );
    // One late heartbeat must not make peers take over: the threshold is at least twice the
    // interval. And an instance id must not collide with the peer list's key.
    for (args, names) in [
        (
            &[
                "--heartbeat-interval-seconds",
                "10",
                "--stale-threshold-seconds",
                "15",
            ][..],
            "--stale-threshold-seconds",
        ),
        (&["--instance-id", "peers"][..], "--instance-id"),
    ] {
        let serve = [&["serve", "-s", "0", "-g", "0"][..], args].concat();
        let out = wsm("http://127.0.0.1:1", &serve);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(names), "{args:?}: {}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_command_against_a_real_server() {
    let feed = FeedServer::start(FeedConfig {
        rate: 100,
        auto_stream: false,
        ..FeedConfig::default()
    })
    .await
    .expect("the feed server starts");
    let wsm_server = Wsm::start_strict(&["--allowed-hosts", "127.0.0.1"]).await;
    let server = format!("http://{}", wsm_server.grpc);
    let url = feed.url("/ws");

    let run = |args: Vec<String>| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            wsm(&server, &args)
        })
    };
    let ok = |out: &Output| {
        assert!(out.status.success(), "{}", stderr(out));
        stdout(out)
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();

    let out = run(s(&[
        "connect",
        &url,
        "--tag",
        "desk=a",
        "--header",
        "Authorization=Bearer secret-token",
    ]))
    .await
    .unwrap();
    let line = ok(&out);
    let (id, status) = line.trim().split_once(' ').expect("`<id> <status>`");
    assert_eq!(status, "connected");
    let id = id.to_owned();

    let table = ok(&run(s(&["list"])).await.unwrap());
    let mut lines = table.lines();
    let header = lines.next().expect("a header row");
    assert!(header.starts_with("ID") && header.contains("STATUS") && header.contains("TAGS"));
    let row = lines.next().expect("one row");
    assert!(row.starts_with(&id) && row.contains("connected") && row.contains("desk=a"));
    // Columns are aligned: STATUS starts at the same offset in the header and the row.
    assert_eq!(header.find("STATUS"), row.find("connected"));
    assert!(
        !table.contains("secret-token"),
        "List never shows header values"
    );

    let json = ok(&run(s(&["list", "--json", "--tag", "desk=a"]))
        .await
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(v["connections"][0]["id"], id.as_str());
    assert!(!json.contains("secret-token"));
    let none = ok(&run(s(&["list", "--json", "--tag", "desk=b"]))
        .await
        .unwrap());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&none).unwrap()["connections"],
        serde_json::json!([])
    );

    assert_eq!(
        ok(&run(s(&["tag", &id, "env=prod", "owner=md"])).await.unwrap()),
        format!("tagged {id}: env=prod owner=md\n")
    );
    assert_eq!(
        ok(&run(s(&["tag", &id, "env"])).await.unwrap()).trim(),
        "prod"
    );
    // A tag that is not set is said so, and is a failure (not an empty line).
    let missing = run(s(&["tag", &id, "region"])).await.unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing).trim(),
        format!("error: NOT_FOUND: connection {id} has no tag \"region\"")
    );
    assert_eq!(
        ok(&run(s(&["tag", &id])).await.unwrap()),
        "desk=a\nenv=prod\nowner=md\n"
    );

    // tail from before the first frame: seq starts at 1.
    let tail = run(s(&["tail", "md.cli", "--count", "3"]));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        ok(&run(s(&["publish", &id, "md.cli"])).await.unwrap()),
        format!("publishing {id} to md.cli\n")
    );
    assert_eq!(
        ok(&run(s(&[
            "send-raw",
            &id,
            r#"{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}"#,
            "--replay",
        ]))
        .await
        .unwrap()),
        format!("sent 62 bytes to {id}, sent again after every reconnect\n")
    );
    let tailed = tokio::time::timeout(std::time::Duration::from_secs(30), tail)
        .await
        .expect("tail ends after 3 frames")
        .unwrap();
    let tailed = ok(&tailed);
    let seqs: Vec<&str> = tailed
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(seqs, ["seq=1", "seq=2", "seq=3"], "{tailed}");
    assert!(tailed.contains(&format!("connection={id}")));

    let reply = ok(&run(s(&[
        "send",
        &id,
        r#"{"op":"ping"}"#,
        "--timeout-ms",
        "5000",
    ]))
    .await
    .unwrap());
    let reply: serde_json::Value = serde_json::from_str(reply.trim()).expect("the echo is JSON");
    assert_eq!(reply["payload"], serde_json::json!({"op":"ping"}));

    // --quiet: nothing on success.
    assert_eq!(
        ok(&run(s(&["stop-publish", &id, "--quiet"])).await.unwrap()),
        ""
    );
    assert_eq!(
        ok(&run(s(&["disconnect", &id])).await.unwrap()),
        format!("disconnected {id}\n")
    );

    for (args, expected) in [
        (
            s(&["disconnect", &id]),
            "error: NOT_FOUND: Connection not found",
        ),
        (
            s(&["publish", "nope", ""]),
            "error: INVALID_ARGUMENT: Topic is required",
        ),
        (
            s(&["connect", "http://example.com/"]),
            "error: INVALID_ARGUMENT: URL must use ws:// or wss://",
        ),
    ] {
        let out = run(args.clone()).await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).starts_with(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = tokio::task::spawn_blocking(|| wsm("http://127.0.0.1:1", &["list"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: UNAVAILABLE: cannot reach the WebSocket Manager"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn profiles_lists_and_shows_and_a_bad_profiles_file_stops_serve_naming_file_line_and_field() {
    let out = wsm("http://127.0.0.1:1", &["profiles"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let names: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        [
            "binance-spot",
            "binance-usdm",
            "bitfinex",
            "bitmex",
            "bybit",
            "coinbase",
            "deribit",
            "htx",
            "kraken",
            "okx"
        ]
    );
    let out = wsm("http://127.0.0.1:1", &["profiles", "htx"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("decompress = \"gzip\""),
        "{}",
        stdout(&out)
    );
    let out = wsm("http://127.0.0.1:1", &["profiles", "nasdaq"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no profile \"nasdaq\""),
        "{}",
        stderr(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[myvenue]\nabout = \"mine\"\ndecompress = \"zlib\"\n",
    )
    .unwrap();
    let out = wsm(
        "http://127.0.0.1:1",
        &["profiles", "--profiles", good.to_str().unwrap(), "myvenue"],
    );
    assert!(
        stdout(&out).contains("decompress = \"zlib\""),
        "{}",
        stderr(&out)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[myvenue]\nabout = \"mine\"\n\n[other]\nkeepalive = { message = \"ping\", interval_ms = 0 }\n",
    )
    .unwrap();
    let out = wsm(
        "http://127.0.0.1:1",
        &[
            "serve",
            "-s",
            "0",
            "-g",
            "0",
            "--profiles",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml") && err.contains("line 4") && err.contains("keepalive.interval_ms"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_and_the_continuity_flags_of_connect() {
    let feed = FeedServer::start(FeedConfig::default())
        .await
        .expect("the feed server starts");
    let wsm_server = Wsm::start(&[]).await;
    let server = format!("http://{}", wsm_server.grpc);
    let url = feed.url("/ws");
    let run = |args: Vec<String>| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            wsm(&server, &args)
        })
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let connected = |out: &Output| -> String {
        assert!(out.status.success(), "{}", stderr(out));
        let line = stdout(out);
        let (id, status) = line.trim().split_once(' ').expect("`<id> <status>`");
        assert_eq!(status, "connected");
        id.to_owned()
    };
    let stored = |id: &str| {
        let service = wsm_server.running.service.clone();
        let id = id.to_owned();
        async move {
            let record = service.store().get(&id).await.unwrap().expect("a record");
            let venue = record.venue.unwrap_or_default();
            (venue.redundancy, venue.max_lifetime_ms)
        }
    };

    // The flags, the --venue JSON, and both: the flags replace the JSON's values.
    for (args, expected) in [
        (
            s(&["--redundancy", "2", "--max-lifetime-ms", "60000"]),
            (Some(2), Some(60_000)),
        ),
        (
            s(&["--venue", r#"{"redundancy":2,"max_lifetime_ms":60000}"#]),
            (Some(2), Some(60_000)),
        ),
        (
            s(&[
                "--venue",
                r#"{"redundancy":2,"max_lifetime_ms":60000}"#,
                "--redundancy",
                "1",
            ]),
            (Some(1), Some(60_000)),
        ),
    ] {
        let out = run([s(&["connect", &url]), args.clone()].concat())
            .await
            .unwrap();
        let id = connected(&out);
        assert_eq!(stored(&id).await, expected, "{args:?}");
    }
    for (args, expected) in [
        (
            s(&["--redundancy", "3"]),
            "error: INVALID_ARGUMENT: redundancy must be 1 (one leg) or 2",
        ),
        (
            s(&["--max-lifetime-ms", "10"]),
            "error: INVALID_ARGUMENT: max_lifetime_ms must be",
        ),
    ] {
        let out = run([s(&["connect", &url]), args.clone()].concat())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).starts_with(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = run(s(&["connect", &url, "--redundancy", "two"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--redundancy"), "{}", stderr(&out));

    let out = run(s(&["rotate", "00000000-0000-4000-8000-000000000000"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: NOT_FOUND: Connection not found"),
        "{}",
        stderr(&out)
    );

    let id = connected(&run(s(&["connect", &url])).await.unwrap());
    let out = run(s(&["rotate", &id])).await.unwrap();
    if out.status.success() {
        let line = stdout(&out);
        let line = line.trim_end();
        assert!(
            line.starts_with(&format!("rotated {id}: "))
                && (line.ends_with(" ms") || line.ends_with("the epoch moved on)")),
            "{line}"
        );
    } else {
        // Until make-before-break is in the socket task, the new leg never opens.
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).starts_with("error: UNAVAILABLE: the rotation's new leg did not open"),
            "{}",
            stderr(&out)
        );
    }
}

/// `wsm serve` prints its gRPC address as `127.0.0.1:PORT`; `--server` takes it as printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_address_works_as_serve_prints_it_without_a_scheme() {
    let wsm_server = Wsm::start(&[]).await;
    let server = wsm_server.grpc.to_string();
    assert!(!server.contains("://"));
    let out = tokio::task::spawn_blocking(move || wsm(&server, &["list"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
