//! `send_raw` and `send`: content types, timeouts, and the response as base64 and text.

use crate::support::Canned;
use serde_json::json;

use super::common::{b64, ok, only_call, run, unb64, Host};

#[test]
fn send_raw_text_defaults_to_application_json_and_is_not_replayed() {
    let host = Host::new();
    host.on("SendRaw", ok("{}"));
    let text = r#"{"method":"LIST_SUBSCRIPTIONS","id":3} ünï"#;
    let reply = run(&host, json!({"command":"send_raw","id":"c-1","text":text}));
    assert_eq!(
        reply.data,
        json!({"command":"send_raw","success":true,"id":"c-1"})
    );
    let body = only_call(&host, "SendRaw");
    assert_eq!(
        body,
        json!({"id":"c-1","message":b64(text.as_bytes()),"content_type":"application/json"})
    );
    assert_eq!(unb64(body["message"].as_str().unwrap()), text.as_bytes());
}

#[test]
fn send_raw_base64_message_defaults_to_octet_stream() {
    let host = Host::new();
    host.on("SendRaw", ok("{}"));
    let bytes = [0u8, 1, 2, 0xfe, 0xff, b'x'];
    let reply = run(
        &host,
        json!({"command":"send_raw","id":"c-2","message":b64(&bytes)}),
    );
    assert_eq!(
        reply.data,
        json!({"command":"send_raw","success":true,"id":"c-2"})
    );
    let body = only_call(&host, "SendRaw");
    assert_eq!(
        body,
        json!({"id":"c-2","message":b64(&bytes),"content_type":"application/octet-stream"})
    );
    assert_eq!(unb64(body["message"].as_str().unwrap()), bytes);
}

#[test]
fn send_raw_explicit_content_type_wins_and_an_empty_one_means_the_default() {
    let host = Host::new();
    host.on("SendRaw", ok("{}"));
    run(
        &host,
        json!({"command":"send_raw","id":"c","text":"hi","content_type":"text/plain"}),
    );
    assert_eq!(
        only_call(&host, "SendRaw"),
        json!({"id":"c","message":b64(b"hi"),"content_type":"text/plain"})
    );
    run(
        &host,
        json!({"command":"send_raw","id":"c","message":b64(b"{}"),"content_type":"application/json"}),
    );
    assert_eq!(
        only_call(&host, "SendRaw"),
        json!({"id":"c","message":b64(b"{}"),"content_type":"application/json"})
    );
    run(
        &host,
        json!({"command":"send_raw","id":"c","message":b64(b"\x01"),"content_type":""}),
    );
    assert_eq!(
        only_call(&host, "SendRaw"),
        json!({"id":"c","message":b64(b"\x01"),"content_type":"application/octet-stream"})
    );
}

#[test]
fn send_passes_timeout_and_returns_response_base64_and_text() {
    let host = Host::new();
    let answer = r#"{"result":null,"id":5}"#;
    host.on(
        "Send",
        Canned::Ok(json!({"response": b64(answer.as_bytes())}).to_string()),
    );
    let reply = run(
        &host,
        json!({"command":"send","id":"c-1","text":"{\"method\":\"PING\"}","timeout_ms":1500}),
    );
    assert_eq!(
        reply.data,
        json!({
            "command":"send","success":true,"id":"c-1",
            "response": b64(answer.as_bytes()),
            "response_text": answer,
        })
    );
    assert_eq!(
        only_call(&host, "Send"),
        json!({
            "id":"c-1",
            "message": b64(br#"{"method":"PING"}"#),
            "timeout_ms": 1500,
            "content_type": "application/json",
        })
    );
}

#[test]
fn send_omits_absent_timeout_and_response_text_when_the_response_is_not_utf8() {
    let host = Host::new();
    let answer = [0xffu8, 0x00, 0x80, 0x41];
    host.on(
        "Send",
        Canned::Ok(json!({"response": b64(&answer)}).to_string()),
    );
    let reply = run(
        &host,
        json!({"command":"send","id":"c-2","message":b64(b"\x00\x01"),"content_type":"application/x-bin"}),
    );
    assert_eq!(
        reply.data,
        json!({"command":"send","success":true,"id":"c-2","response": b64(&answer)})
    );
    assert!(reply.data.get("response_text").is_none());
    assert_eq!(
        only_call(&host, "Send"),
        json!({"id":"c-2","message":b64(b"\x00\x01"),"content_type":"application/x-bin"})
    );
}

#[test]
fn send_with_an_empty_response_returns_empty_response_and_text() {
    let host = Host::new();
    host.on("Send", ok("{}"));
    let reply = run(
        &host,
        json!({"command":"send","id":"c-3","text":"x","timeout_ms":0}),
    );
    assert_eq!(
        reply.data,
        json!({"command":"send","success":true,"id":"c-3","response":"","response_text":""})
    );
    assert_eq!(
        only_call(&host, "Send"),
        json!({"id":"c-3","message":b64(b"x"),"timeout_ms":0,"content_type":"application/json"})
    );
}
