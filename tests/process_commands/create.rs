//! `create`: every field sent, the defaults, and `on_connect` messages.

use crate::support::Event;
use serde_json::{json, Value};

use super::common::{b64, ok, only_call, run, run_event, unb64, Host};

#[test]
fn create_sends_every_field_and_replies_with_id_status_and_connected() {
    let host = Host::new();
    host.on("Connect", ok(r#"{"id":"c-1","status":"connecting"}"#));
    let reply = run(
        &host,
        json!({
            "command": "create",
            "url": "wss://stream.example.com:9443/stream",
            "auto_reconnect": true,
            "tags": {"venue": "binance", "env": "prod"},
            "headers": {"Authorization": "Bearer t", "X-Client": "virtufin"},
            "subprotocols": ["v1.json", "v2.json"],
            "on_connect": ["ping"],
            "api_host": "http://gateway:5000",
        }),
    );
    assert_eq!(
        reply.data,
        json!({"command":"create","success":true,"id":"c-1","status":"connecting","message":"connected"})
    );
    assert_eq!(
        only_call(&host, "Connect"),
        json!({
            "url": "wss://stream.example.com:9443/stream",
            "auto_reconnect": true,
            "tags": {"venue": "binance", "env": "prod"},
            "headers": {"Authorization": "Bearer t", "X-Client": "virtufin"},
            "subprotocols": ["v1.json", "v2.json"],
            "on_connect": [{"message": b64(b"ping"), "content_type": "text/plain"}],
        })
    );
}

#[test]
fn create_defaults_auto_reconnect_to_false_and_omits_empty_collections() {
    let host = Host::new();
    host.on("Connect", ok(r#"{"id":"c-2","status":"connected"}"#));
    let reply = run(&host, json!({"command":"create","url":"ws://feed:8080/ws"}));
    assert_eq!(
        reply.data,
        json!({"command":"create","success":true,"id":"c-2","status":"connected","message":"connected"})
    );
    assert_eq!(
        only_call(&host, "Connect"),
        json!({"url":"ws://feed:8080/ws","auto_reconnect":false})
    );
}

#[test]
fn create_ignores_api_host() {
    let host = Host::new();
    host.on("Connect", ok(r#"{"id":"c-3","status":"connected"}"#));
    let reply = run(
        &host,
        json!({"command":"create","url":"ws://feed/ws","api_host":"http://elsewhere:1234","auto_reconnect":false}),
    );
    assert!(reply.success(), "{:?}", reply.data);
    let body = only_call(&host, "Connect");
    assert_eq!(body, json!({"url":"ws://feed/ws","auto_reconnect":false}));
    assert!(body.get("api_host").is_none());
}

#[test]
fn create_on_connect_strings_and_objects_become_base64_messages_with_content_types() {
    let host = Host::new();
    host.on("Connect", ok(r#"{"id":"c-4","status":"connected"}"#));
    let subscribe = json!({"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":1});
    let reply = run(
        &host,
        json!({
            "command": "create",
            "url": "wss://x/ws",
            "on_connect": [
                "hello world",
                r#"{"op":"auth","key":"k"}"#,
                subscribe,
                ["a", 1],
            ],
        }),
    );
    assert!(reply.success(), "{:?}", reply.data);
    let body = only_call(&host, "Connect");
    let on_connect = body["on_connect"].as_array().expect("on_connect array");
    assert_eq!(on_connect.len(), 4);
    let decoded: Vec<(String, String)> = on_connect
        .iter()
        .map(|m| {
            assert_eq!(m.as_object().expect("message object").len(), 2, "{m}");
            (
                String::from_utf8(unb64(m["message"].as_str().expect("message"))).unwrap(),
                m["content_type"].as_str().expect("content_type").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        decoded,
        [
            ("hello world".to_owned(), "text/plain".to_owned()),
            (
                r#"{"op":"auth","key":"k"}"#.to_owned(),
                "application/json".to_owned()
            ),
            (subscribe.to_string(), "application/json".to_owned()),
            (r#"["a",1]"#.to_owned(), "application/json".to_owned()),
        ]
    );
    let sent: Value = serde_json::from_str(&decoded[2].0).expect("object item is JSON");
    assert_eq!(sent, subscribe);
}

#[test]
fn create_on_connect_objects_keep_the_callers_key_order() {
    // The data is written by hand: a serde_json `Value` would already sort the keys.
    let host = Host::new();
    host.on("Connect", ok(r#"{"id":"c-5","status":"connected"}"#));
    let data = br#"{"command":"create","url":"wss://x/ws","on_connect":[{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":1},{"op":"login","args":["k"]}]}"#;
    let reply = run_event(&host, &Event::raw(data));
    assert!(reply.success(), "{:?}", reply.data);
    let body = only_call(&host, "Connect");
    let sent: Vec<String> = body["on_connect"]
        .as_array()
        .expect("on_connect array")
        .iter()
        .map(|m| String::from_utf8(unb64(m["message"].as_str().expect("message"))).unwrap())
        .collect();
    // The frames go to the exchange as the caller wrote them (the `subscribe` command keeps the
    // documented method, params, id order for the same reason).
    assert_eq!(
        sent,
        [
            r#"{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":1}"#,
            r#"{"op":"login","args":["k"]}"#,
        ]
    );
}
