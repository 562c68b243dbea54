//! The event data: not UTF-8, empty, not JSON, not an object, no or an unknown command.

use serde_json::json;

use super::common::{
    assert_error, assert_logged, assert_refused, call_bytes, event, plugin, raw_event, Host, WARN,
};

#[test]
fn non_utf8_data_gets_a_bad_request_reply() {
    let host = Host::new();
    for (data, at) in [
        (&b"\xff\xfe{}"[..], 0),
        (&b"{\"command\":\"li\xc3st\"}"[..], 14),
    ] {
        let reply = call_bytes(&host, &raw_event(data, "corr-u"));
        assert_error(
            &reply,
            "error",
            "BAD_REQUEST",
            &format!("Failed to parse command JSON: data is not valid UTF-8 (at byte {at})"),
            Some("corr-u"),
        );
    }
    assert!(host.calls().is_empty());
    assert_logged(&host, WARN, "error", Some("corr-u"), "BAD_REQUEST");
}

#[test]
fn empty_data_gets_a_bad_request_reply() {
    let host = Host::new();
    for data in [&b""[..], b"  \n\t "] {
        let reply = call_bytes(&host, &raw_event(data, "corr-e"));
        assert_error(
            &reply,
            "error",
            "BAD_REQUEST",
            "Failed to parse command JSON: the event has no data",
            Some("corr-e"),
        );
    }
    assert!(host.calls().is_empty());
    assert_logged(&host, WARN, "error", Some("corr-e"), "BAD_REQUEST");
}

#[test]
fn invalid_json_gets_a_bad_request_reply() {
    let host = Host::new();
    for (data, detail) in [
        (
            &br#"{"command":"list""#[..],
            "EOF while parsing an object at line 1 column 17",
        ),
        (b"{command:list}", "key must be a string at line 1 column 2"),
        (b"list", "expected value at line 1 column 1"),
    ] {
        let reply = call_bytes(&host, &raw_event(data, "corr-j"));
        assert_error(
            &reply,
            "error",
            "BAD_REQUEST",
            &format!("Failed to parse command JSON: {detail}"),
            Some("corr-j"),
        );
    }
    assert!(host.calls().is_empty());
}

#[test]
fn json_that_is_not_an_object_gets_a_bad_request_reply() {
    let host = Host::new();
    for (data, message) in [
        (
            json!([1, 2]),
            "Failed to parse command JSON: expected a JSON object, got an array",
        ),
        (
            json!(42),
            "Failed to parse command JSON: expected a JSON object, got a number",
        ),
        (
            json!(null),
            "Failed to parse command JSON: expected a JSON object, got null",
        ),
        (
            json!(true),
            "Failed to parse command JSON: expected a JSON object, got a boolean",
        ),
        (
            json!("[1]"),
            "Failed to parse command JSON: expected a JSON object, got an array",
        ),
        (
            json!("\"x\""),
            "Failed to parse command JSON: expected a JSON object, got a string",
        ),
        (
            json!("hello"),
            "Failed to parse command JSON: string data: expected value at line 1 column 1",
        ),
    ] {
        let reply = plugin().call(&host, &event(data.clone(), "corr-n"));
        assert_error(&reply, "error", "BAD_REQUEST", message, Some("corr-n"));
    }
    assert!(host.calls().is_empty());
    assert_logged(&host, WARN, "error", Some("corr-n"), "BAD_REQUEST");
}

#[test]
fn missing_command_gets_a_bad_request_reply() {
    for data in [
        json!({}),
        json!({"command": null}),
        json!({"command": ""}),
        json!({"command": "   "}),
        json!({"url": "wss://x", "cmd": "create"}),
        json!(json!({"id": "c"}).to_string()),
    ] {
        assert_refused(data, "error", "BAD_REQUEST", "Missing 'command' field");
    }
}

#[test]
fn command_that_is_not_a_string_gets_a_bad_request_reply() {
    for (value, kind) in [
        (json!(5), "a number"),
        (json!(["create"]), "an array"),
        (json!({"name": "create"}), "an object"),
        (json!(true), "a boolean"),
    ] {
        assert_refused(
            json!({"command": value}),
            "error",
            "BAD_REQUEST",
            &format!("Field 'command' must be a string, got {kind}"),
        );
    }
}

#[test]
fn unknown_command_gets_an_unknown_command_reply() {
    for name in ["frobnicate", "stoppublish", "create!", "lists", "send raw"] {
        assert_refused(
            json!({"command": name, "id": "c"}),
            "error",
            "UNKNOWN_COMMAND",
            &format!("Unknown command: {name}"),
        );
    }
}
