//! `rotate` (SPEC 8, the operator's trigger): `Rotate` with the id, and how the rotation went in
//! the reply; and the continuity options `create` forwards to Connect.

use crate::support::{Canned, Event};
use serde_json::json;

use super::common::{ok, only_call, run, run_event, take_calls, wsm_error, Host};

#[test]
fn rotate_calls_rotate_with_the_id_and_replies_with_overlap_duplicates_and_took_ms() {
    let host = Host::new();
    // As WSM's /v1/invoke writes it: lowerCamelCase, uint64 as strings.
    host.on(
        "Rotate",
        ok(r#"{"overlap":true,"duplicates":"12","tookMs":"143"}"#),
    );
    let reply = run(&host, json!({"command":"Rotate","id":"c-1"}));
    assert_eq!(
        reply.data,
        json!({"command":"rotate","success":true,"id":"c-1","overlap":true,"duplicates":12,"took_ms":143})
    );
    assert_eq!(only_call(&host, "Rotate"), json!({"id":"c-1"}));
}

#[test]
fn rotate_without_an_overlap_reads_snake_case_numbers_and_defaults() {
    let host = Host::new();
    host.on_seq(
        "Rotate",
        vec![
            ok(r#"{"overlap":false,"duplicates":0,"took_ms":10012}"#),
            // proto3 JSON may leave every default out.
            ok("{}"),
            Canned::OkEmpty,
        ],
    );
    let reply = run(&host, json!({"command":"rotate","id":"c-2"}));
    assert_eq!(
        reply.data,
        json!({"command":"rotate","success":true,"id":"c-2","overlap":false,"duplicates":0,"took_ms":10012})
    );
    for _ in 0..2 {
        let reply = run(&host, json!({"command":"rotate","id":"c-2"}));
        assert_eq!(
            reply.data,
            json!({"command":"rotate","success":true,"id":"c-2","overlap":false,"duplicates":0,"took_ms":0})
        );
    }
    assert_eq!(take_calls(&host).len(), 3);
}

#[test]
fn rotate_failures_keep_wsms_code_and_message() {
    for (status, code, message) in [
        (5, "NOT_FOUND", "Connection not found"),
        (9, "FAILED_PRECONDITION", "WebSocket is not connected"),
        (9, "FAILED_PRECONDITION", "a rotation is already under way"),
        (
            14,
            "UNAVAILABLE",
            "the rotation's new leg did not open (dial failed); the old leg goes on serving",
        ),
    ] {
        let host = Host::new();
        host.on("Rotate", wsm_error(status, code, message));
        let reply = run(&host, json!({"command":"rotate","id":"c-3"}));
        assert_eq!(
            reply.data,
            json!({"command":"rotate","success":false,"code":code,"message":message})
        );
        assert_eq!(only_call(&host, "Rotate"), json!({"id":"c-3"}));
    }
}

#[test]
fn rotate_answers_that_are_not_its_message_are_gateway_errors() {
    let host = Host::new();
    host.on("Rotate", ok(r#"{"overlap":true,"duplicates":"many"}"#));
    let reply = run(&host, json!({"command":"rotate","id":"c-4"}));
    assert_eq!(reply.code(), "GATEWAY_ERROR", "{:?}", reply.data);
    assert!(
        reply.message().starts_with(
            "websocketmanager.Rotate returned a response that is not its proto3-JSON message"
        ),
        "{}",
        reply.message()
    );
}

#[test]
fn rotate_under_wsm_compat_base_is_refused_without_a_call() {
    let host = Host::new();
    host.on("Rotate", ok("{}"));
    let event = Event::json(&json!({"command":"rotate","id":"c-5"})).ext("wsm_compat", "base");
    let reply = run_event(&host, &event);
    assert_eq!(
        reply.data,
        json!({
            "command":"rotate","success":false,"code":"BAD_REQUEST",
            "message":"Command 'rotate' needs the extended WSM API (RPC Rotate), but this worker \
                       is configured with wsm_compat=base",
        })
    );
    assert!(take_calls(&host).is_empty());
}

#[test]
fn create_forwards_redundancy_and_max_lifetime_ms_as_numbers() {
    let host = Host::new();
    host.on("Connect", ok(r#"{"id":"c-6","status":"connected"}"#));
    let reply = run(
        &host,
        json!({"command":"create","url":"wss://x/ws","profile":"binance-spot",
               "redundancy":2,"max_lifetime_ms":60000}),
    );
    assert!(reply.success(), "{:?}", reply.data);
    assert_eq!(
        only_call(&host, "Connect"),
        json!({"url":"wss://x/ws","auto_reconnect":false,"profile":"binance-spot",
               "redundancy":2,"max_lifetime_ms":60000})
    );
    // null is absent, as for every field.
    let reply = run(
        &host,
        json!({"command":"create","url":"wss://x/ws","redundancy":null,"max_lifetime_ms":null}),
    );
    assert!(reply.success(), "{:?}", reply.data);
    assert_eq!(
        only_call(&host, "Connect"),
        json!({"url":"wss://x/ws","auto_reconnect":false})
    );
}

#[test]
fn create_under_wsm_compat_base_refuses_the_continuity_options_naming_them() {
    let host = Host::new();
    host.on("Connect", ok(r#"{"id":"c-7","status":"connected"}"#));
    for (field, value) in [("redundancy", json!(2)), ("max_lifetime_ms", json!(60000))] {
        let mut data = json!({"command":"create","url":"wss://x/ws"});
        data[field] = value;
        let reply = run_event(&host, &Event::json(&data).ext("wsm_compat", "base"));
        assert_eq!(
            reply.data,
            json!({
                "command":"create","success":false,"code":"BAD_REQUEST",
                "message": format!("Field '{field}' needs the extended WSM API, but this worker is \
                                    configured with wsm_compat=base"),
            }),
            "{field}"
        );
        assert!(take_calls(&host).is_empty(), "{field}: Connect was called");
    }
}
