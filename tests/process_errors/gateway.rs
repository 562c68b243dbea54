//! Every way the gateway can fail: WSM error bodies, plain-text or empty bodies, bad replies.

use crate::support::{Canned, Reply};
use serde_json::{json, Value};

use super::common::{
    assert_error, assert_error_envelope, assert_logged, event, ok, plugin, Host, ERROR, WARN,
};

/// Runs `data` against a host answering `method` with `canned`; returns the reply and the host.
fn through_gateway(data: Value, method: &str, canned: Canned) -> (Reply, Host) {
    let host = Host::new();
    host.on(method, canned);
    let reply = plugin().call(&host, &event(data, "corr-g"));
    let calls = host.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].service, "websocketmanager");
    assert_eq!(calls[0].method, method);
    (reply, host)
}

#[test]
fn wsm_error_body_keeps_its_grpc_code_and_message() {
    let (reply, host) = through_gateway(
        json!({"command":"disconnect","id":"gone"}),
        "Disconnect",
        Canned::Fail(
            5,
            r#"{"code":"NOT_FOUND","message":"Connection not found"}"#.into(),
        ),
    );
    assert_error(
        &reply,
        "disconnect",
        "NOT_FOUND",
        "Connection not found",
        Some("corr-g"),
    );
    assert_logged(&host, WARN, "disconnect", Some("corr-g"), "NOT_FOUND");
}

#[test]
fn wsm_numeric_error_code_is_mapped_to_its_name() {
    let (reply, host) = through_gateway(
        json!({"command":"send_raw","id":"c","text":"x"}),
        "SendRaw",
        Canned::Fail(
            9,
            r#"{"code":9,"message":"WebSocket is not connected"}"#.into(),
        ),
    );
    assert_error(
        &reply,
        "send_raw",
        "FAILED_PRECONDITION",
        "WebSocket is not connected",
        Some("corr-g"),
    );
    assert_logged(
        &host,
        WARN,
        "send_raw",
        Some("corr-g"),
        "FAILED_PRECONDITION",
    );

    let (reply, _host) = through_gateway(
        json!({"command":"send","id":"c","text":"x","timeout_ms":5}),
        "Send",
        Canned::Fail(
            4,
            r#"{"code":"DeadlineExceeded","message":"Request timeout"}"#.into(),
        ),
    );
    assert_error(
        &reply,
        "send",
        "DEADLINE_EXCEEDED",
        "Request timeout",
        Some("corr-g"),
    );

    let (reply, _host) = through_gateway(
        json!({"command":"create","url":"ws://127.0.0.1/"}),
        "Connect",
        Canned::Fail(3, r#"{"code":"INVALID_ARGUMENT"}"#.into()),
    );
    assert_error(
        &reply,
        "create",
        "INVALID_ARGUMENT",
        "websocketmanager.Connect failed with INVALID_ARGUMENT",
        Some("corr-g"),
    );
}

#[test]
fn plain_text_error_body_is_a_gateway_error_naming_the_method() {
    let (reply, host) = through_gateway(
        json!({"command":"publish","id":"c","topic":"t"}),
        "StartPublish",
        Canned::Fail(
            503,
            "upstream connect error or disconnect/reset before headers\n".into(),
        ),
    );
    assert_error(
        &reply,
        "publish",
        "GATEWAY_ERROR",
        "gateway call websocketmanager.StartPublish failed with status 503: upstream connect \
         error or disconnect/reset before headers",
        Some("corr-g"),
    );
    assert_logged(&host, ERROR, "publish", Some("corr-g"), "GATEWAY_ERROR");
}

#[test]
fn json_error_body_without_a_known_code_is_a_gateway_error_quoting_it() {
    let body = r#"{"code":"NOPE","message":"x"}"#;
    let (reply, _host) = through_gateway(
        json!({"command":"get_tags","id":"c"}),
        "GetTags",
        Canned::Fail(7, body.into()),
    );
    assert_error(
        &reply,
        "get_tags",
        "GATEWAY_ERROR",
        &format!("gateway call websocketmanager.GetTags failed with status 7: {body}"),
        Some("corr-g"),
    );
}

#[test]
fn error_without_a_body_is_a_gateway_error() {
    let (reply, host) = through_gateway(
        json!({"command":"get_tag","id":"c","key":"k"}),
        "GetTag",
        Canned::FailNoBody(2),
    );
    assert_error(
        &reply,
        "get_tag",
        "GATEWAY_ERROR",
        "gateway call websocketmanager.GetTag failed with status 2: no error body",
        Some("corr-g"),
    );
    assert_logged(&host, ERROR, "get_tag", Some("corr-g"), "GATEWAY_ERROR");
}

#[test]
fn success_reply_that_is_not_json_is_a_gateway_error() {
    let (reply, host) = through_gateway(
        json!({"command":"list"}),
        "List",
        Canned::Ok("<html>502 Bad Gateway</html>".into()),
    );
    assert_error(
        &reply,
        "list",
        "GATEWAY_ERROR",
        "websocketmanager.List returned a response that is not its proto3-JSON message: \
         expected value at line 1 column 1",
        Some("corr-g"),
    );
    assert_logged(&host, ERROR, "list", Some("corr-g"), "GATEWAY_ERROR");

    let (reply, _host) = through_gateway(
        json!({"command":"list"}),
        "List",
        Canned::Ok(r#"{"connections":"none"}"#.into()),
    );
    assert_eq!(reply.code(), "GATEWAY_ERROR");
    assert!(
        reply.message().starts_with(
            "websocketmanager.List returned a response that is not its proto3-JSON message: "
        ),
        "{}",
        reply.message()
    );
    assert_error_envelope(&reply, Some("corr-g"));
}

#[test]
fn connect_success_without_an_id_is_a_gateway_error_and_not_tracked() {
    let (reply, host) = through_gateway(
        json!({"command":"create","url":"wss://x"}),
        "Connect",
        Canned::Ok(r#"{"status":"connected"}"#.into()),
    );
    assert_error(
        &reply,
        "create",
        "GATEWAY_ERROR",
        "websocketmanager.Connect succeeded but returned no connection id",
        Some("corr-g"),
    );
    host.on("Disconnect", ok("{}"));
    let reply = plugin().call(&host, &event(json!({"command":"stop"}), "s"));
    assert_eq!(reply.data["message"], "disconnected 0 connections");
    assert_eq!(host.calls().len(), 1, "stop disconnected something");
}

#[test]
fn send_response_that_is_not_base64_is_a_gateway_error() {
    let (reply, _host) = through_gateway(
        json!({"command":"send","id":"c","text":"x"}),
        "Send",
        Canned::Ok(r#"{"response":"%%%"}"#.into()),
    );
    assert_error(
        &reply,
        "send",
        "GATEWAY_ERROR",
        "websocketmanager.Send returned a 'response' that is not base64",
        Some("corr-g"),
    );
}
