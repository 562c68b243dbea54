//! The HTTP port of an in-process `wsm serve`: the probes, `/metrics`, and `POST /v1/invoke/{Method}`
//! (proto3 JSON in and out, errors as `{"code","message"}` with the matching HTTP status).

mod support;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use feed_server::FeedConfig;
use serde_json::{json, Value};
use wsm::server::StartError;
use wsm_testkit::RedisServer;

use support::server::{bounded, dead_port, feed, feed_with, metric, HttpClient, Poll, Wsm, HANG};

/// Connects over `/v1/invoke`; the connection's id.
async fn connect(http: &HttpClient, body: Value) -> String {
    let reply = http.invoke("Connect", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["status"], "connected");
    answer["id"].as_str().expect("an id").to_owned()
}

/// The error body's code and message, after checking the HTTP status.
fn error(reply: &support::server::Reply, status: u16) -> (String, String) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert!(
        reply.content_type.starts_with("application/json"),
        "{}",
        reply.content_type
    );
    let body = reply.json();
    let field = |name: &str| {
        body[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in {body}"))
            .to_owned()
    };
    (field("code"), field("message"))
}

#[tokio::test]
async fn health_is_200_with_the_instance_id() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let reply = wsm.http_client().get("/health").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.json(),
            json!({"status": "ok", "instanceId": "wsm-api-test"})
        );
    })
    .await;
}

#[tokio::test]
async fn ready_is_200_with_memory_backends() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let reply = wsm.http_client().get("/ready").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.json(),
            json!({"status": "ready", "state": "ok", "pubsub": "ok"})
        );
    })
    .await;
}

#[tokio::test]
async fn start_fails_naming_redis_when_redis_is_unreachable() {
    bounded(async {
        let url = format!("redis://127.0.0.1:{}", dead_port());
        let refused = Wsm::try_start(&["--state", "redis", "--redis-url", &url]).await;
        match refused {
            Err(StartError::Backend(reason)) => {
                // Which backend, where it dialled, and why that failed.
                assert!(reason.contains("redis state backend"), "{reason}");
                assert!(
                    reason.contains(&format!("connecting to {url}:")),
                    "{reason}"
                );
                assert!(
                    reason.to_lowercase().contains("connection refused"),
                    "{reason}"
                );
            }
            Err(other) => panic!("expected a backend error, got {other}"),
            Ok(_) => panic!("started without its state store"),
        }
    })
    .await;
}

#[tokio::test]
async fn ready_turns_503_when_redis_goes_away() {
    bounded(async {
        let mut redis = RedisServer::start();
        let url = redis.url();
        let wsm = Wsm::start(&["--state", "redis", "--pubsub", "redis", "--redis-url", &url]).await;
        let http = wsm.http_client();
        let reply = http.get("/ready").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["status"], "ready");

        redis.stop();
        let poll = Poll::new("/ready to report 503");
        let reply = loop {
            let reply = http.get("/ready").await;
            if reply.status == 503 {
                break reply;
            }
            assert_eq!(reply.status, 200, "{}", reply.body);
            poll.tick().await;
        };
        let body = reply.json();
        assert_eq!(body["status"], "not ready", "{body}");
        // /health only says the process answers.
        assert_eq!(http.get("/health").await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn invoke_connect_accepts_snake_case_and_lower_camel_case_bodies() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let http = wsm.http_client();
        let hello = |style: &str| BASE64.encode(format!(r#"{{"hello":"{style}"}}"#));
        let snake = connect(
            &http,
            json!({
                "url": feed.url("/ws"),
                "auto_reconnect": false,
                "tags": {"style": "snake"},
                "ping_interval_ms": 5000,
                "on_connect": [{"message": hello("snake"), "content_type": "application/json"}],
            }),
        )
        .await;
        let camel = connect(
            &http,
            json!({
                "url": feed.url("/ws"),
                "autoReconnect": false,
                "tags": {"style": "camel"},
                "pingIntervalMs": 5000,
                "onConnect": [{"message": hello("camel"), "contentType": "application/json"}],
            }),
        )
        .await;
        assert_ne!(snake, camel);

        for (id, style) in [(&snake, "snake"), (&camel, "camel")] {
            let listed = http
                .invoke(
                    "List",
                    &json!({"filters": [{"key": "style", "value": style}]}),
                )
                .await;
            assert_eq!(listed.status, 200, "{}", listed.body);
            let listed = listed.json();
            assert_eq!(listed["connections"][0]["id"], id.as_str(), "{listed}");
            let text = format!(r#"{{"hello":"{style}"}}"#);
            assert!(
                feed.wait_for_received(HANG, |r| r.message.as_text() == Some(text.as_str()))
                    .await,
                "the {style} on_connect message reached the feed"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn invoke_list_answers_proto3_json_with_every_field() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let http = wsm.http_client();
        let empty = http.post("/v1/invoke/List", "").await;
        assert_eq!(empty.status, 200, "{}", empty.body);
        assert!(empty.content_type.starts_with("application/json"));
        assert_eq!(
            empty.json(),
            json!({"connections": []}),
            "an empty body is the empty request"
        );

        let id = connect(&http, json!({"url": feed.url("/ws"), "tags": {"k": "v"}})).await;
        let listed = http.invoke("List", &json!({})).await.json();
        let connection = &listed["connections"][0];
        let mut fields: Vec<&str> = connection
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "contentType",
                "createdAt",
                "epoch",
                "id",
                "instanceId",
                "status",
                "tags",
                "topic",
                "url"
            ]
        );
        assert_eq!(connection["id"], id.as_str());
        assert_eq!(connection["url"], feed.url("/ws"));
        assert_eq!(connection["status"], "connected");
        assert_eq!(connection["topic"], "");
        assert_eq!(connection["instanceId"], "wsm-api-test");
        assert_eq!(connection["tags"], json!({"k": "v"}));
        assert_eq!(
            connection["epoch"], "1",
            "uint64 is a string in proto3 JSON"
        );
        // The method name is matched case-insensitively.
        let lower = http
            .invoke("list", &json!({"filters": [{"key": "k", "value": "x"}]}))
            .await;
        assert_eq!(lower.status, 200, "{}", lower.body);
        assert_eq!(lower.json(), json!({"connections": []}));
    })
    .await;
}

#[tokio::test]
async fn invoke_send_raw_and_send_carry_base64_messages() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let http = wsm.http_client();
        let id = connect(&http, json!({"url": feed.url("/ws")})).await;

        let raw = r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}"#;
        let reply = http
            .invoke(
                "SendRaw",
                &json!({"id": id, "message": BASE64.encode(raw), "content_type": "application/json"}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json(), json!({}));
        assert!(
            feed.wait_for_received(HANG, |r| r.message.as_text() == Some(raw))
                .await,
            "the decoded message reached the feed"
        );

        let reply = http
            .invoke(
                "Send",
                &json!({"id": id, "message": BASE64.encode(r#"{"q":2}"#), "timeoutMs": 5000}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let response = reply.json()["response"]
            .as_str()
            .expect("response is base64 text")
            .to_owned();
        let response: Value =
            serde_json::from_slice(&BASE64.decode(response).expect("base64")).expect("JSON");
        assert_eq!(response["payload"], json!({"q": 2}));
        assert!(response["id"].is_string());
    })
    .await;
}

#[tokio::test]
async fn invoke_sets_and_gets_tags() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let http = wsm.http_client();
        let id = connect(&http, json!({"url": feed.url("/ws"), "tags": {"a": "1"}})).await;
        let ok = |reply: support::server::Reply| {
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.json()
        };
        let tags = ok(http.invoke("GetTags", &json!({"id": id})).await);
        assert_eq!(tags, json!({"tags": {"a": "1"}}));
        ok(http
            .invoke("SetTag", &json!({"id": id, "key": "b", "value": "2"}))
            .await);
        let tag = ok(http.invoke("GetTag", &json!({"id": id, "key": "b"})).await);
        assert_eq!(tag, json!({"value": "2"}));
        ok(http
            .invoke("SetTags", &json!({"id": id, "tags": {"c": "3"}}))
            .await);
        let tags = ok(http.invoke("GetTags", &json!({"id": id})).await);
        assert_eq!(tags, json!({"tags": {"c": "3"}}));
    })
    .await;
}

#[tokio::test]
async fn invoke_unknown_method_is_501_unimplemented() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let http = wsm.http_client();
        let (code, message) = error(&http.invoke("Frobnicate", &json!({})).await, 501);
        assert_eq!(code, "UNIMPLEMENTED");
        assert!(message.contains("Frobnicate"), "{message}");
        // The streaming method is not served here either.
        let (code, _) = error(&http.invoke("Subscribe", &json!({"topic": "t"})).await, 501);
        assert_eq!(code, "UNIMPLEMENTED");
    })
    .await;
}

#[tokio::test]
async fn invoke_malformed_json_is_400_invalid_argument() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let http = wsm.http_client();
        for body in [
            r#"{"url": "#,
            "not json",
            r#"{"url": "ws://x/"} trailing"#,
            "[]",
        ] {
            let (code, _) = error(&http.post("/v1/invoke/Connect", body).await, 400);
            assert_eq!(code, "INVALID_ARGUMENT", "{body}");
        }
        // A field of the wrong type.
        let (code, message) = error(&http.invoke("Connect", &json!({"url": 42})).await, 400);
        assert_eq!(code, "INVALID_ARGUMENT");
        assert!(message.contains("virtufin.ConnectRequest"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn invoke_unknown_field_is_400_invalid_argument_naming_the_field() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let http = wsm.http_client();
        let (code, message) = error(
            &http
                .invoke(
                    "Connect",
                    &json!({"url": "ws://127.0.0.1:1/", "bogus_field": 1}),
                )
                .await,
            400,
        );
        assert_eq!(code, "INVALID_ARGUMENT");
        assert!(message.contains("bogus_field"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn invoke_unknown_id_is_404_not_found() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let http = wsm.http_client();
        for method in ["GetTags", "Disconnect", "StopPublish", "GetTag"] {
            let (code, message) = error(
                &http
                    .invoke(method, &json!({"id": "no-such-connection"}))
                    .await,
                404,
            );
            assert_eq!(
                (code.as_str(), message.as_str()),
                ("NOT_FOUND", "Connection not found"),
                "{method}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn invoke_errors_use_the_http_status_of_their_code() {
    bounded(async {
        let feed = feed_with(FeedConfig {
            rate: 10,
            echo: false,
            ..FeedConfig::default()
        })
        .await;
        let wsm = Wsm::start(&["--max-connections", "1"]).await;
        let http = wsm.http_client();

        let (code, message) = error(&http.invoke("Connect", &json!({"url": ""})).await, 400);
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("INVALID_ARGUMENT", "URL is required")
        );
        let dead = format!("ws://127.0.0.1:{}/", dead_port());
        let (code, _) = error(&http.invoke("Connect", &json!({"url": dead})).await, 503);
        assert_eq!(code, "UNAVAILABLE");

        let id = connect(&http, json!({"url": feed.url("/ws")})).await;
        let (code, _) = error(
            &http
                .invoke("Connect", &json!({"url": feed.url("/ws")}))
                .await,
            429,
        );
        assert_eq!(code, "RESOURCE_EXHAUSTED");
        let (code, message) = error(
            &http
                .invoke(
                    "Send",
                    &json!({"id": id, "message": BASE64.encode("{}"), "timeout_ms": 200}),
                )
                .await,
            504,
        );
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("DEADLINE_EXCEEDED", "Request timeout")
        );
    })
    .await;
}

#[tokio::test]
async fn metrics_move_with_connections_frames_and_requests() {
    bounded(async {
        let feed = feed(100).await;
        let wsm = Wsm::start(&[]).await;
        let http = wsm.http_client();
        let scrape = || async {
            let reply = http.get("/metrics").await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert!(
                reply.content_type.starts_with("text/plain"),
                "{}",
                reply.content_type
            );
            reply.body
        };
        let connected = r#"wsm_connections{status="connected"}"#;
        let received = "wsm_frames_received_total";
        let published = "wsm_frames_published_total";
        let connect_ok = r#"wsm_requests_total{method="Connect",code="OK"}"#;
        let start_ok = r#"wsm_requests_total{method="StartPublish",code="OK"}"#;
        let not_found = r#"wsm_requests_total{method="GetTags",code="NOT_FOUND"}"#;

        let before = scrape().await;
        assert!(before.contains("# TYPE wsm_frames_published_total counter"));
        assert_eq!(metric(&before, connected), 0.0);

        let id = connect(&http, json!({"url": feed.url("/ws")})).await;
        let reply = http
            .invoke("StartPublish", &json!({"id": id, "topic": "market"}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        error(&http.invoke("GetTags", &json!({"id": "nope"})).await, 404);

        let poll = Poll::new("published frames in /metrics");
        let after = loop {
            let text = scrape().await;
            if metric(&text, published) >= metric(&before, published) + 5.0 {
                break text;
            }
            poll.tick().await;
        };
        assert_eq!(metric(&after, connected), metric(&before, connected) + 1.0);
        assert!(metric(&after, received) >= metric(&after, published));
        assert!(metric(&after, received) > metric(&before, received));
        assert_eq!(
            metric(&after, connect_ok),
            metric(&before, connect_ok) + 1.0
        );
        assert_eq!(metric(&after, start_ok), metric(&before, start_ok) + 1.0);
        assert_eq!(metric(&after, not_found), metric(&before, not_found) + 1.0);
    })
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_named_as_such_and_one_of_the_wrong_shape_names_the_message() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let http = wsm.http_client();
        let (code, message) = error(&http.post("/v1/invoke/Connect", "{url: 1}").await, 400);
        assert_eq!(code, "INVALID_ARGUMENT");
        assert!(
            message.starts_with("the body is not JSON: ") && message.contains("line 1 column 2"),
            "{message}"
        );
        let (code, message) = error(&http.post("/v1/invoke/Connect", r#"{"url": 1}"#).await, 400);
        assert_eq!(code, "INVALID_ARGUMENT");
        assert!(
            message.contains("not a proto3-JSON virtufin.ConnectRequest"),
            "{message}"
        );
    })
    .await;
}
