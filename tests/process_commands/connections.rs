//! `list`, `disconnect`, the tag commands, and `stop` with the worker's connections.

use crate::support::Canned;
use serde_json::{json, Value};

use super::common::{create, ok, only_call, run, take_calls, wsm_error, Host};

// ---------------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------------

#[test]
fn list_sends_filters_as_key_value_pairs_and_returns_every_connection_field() {
    let host = Host::new();
    host.on(
        "List",
        ok(r#"{"connections":[
            {"id":"c-1","url":"wss://a/ws","status":"connected","topic":"t.a","instance_id":"wsm-0",
             "content_type":"application/json","tags":{"venue":"binance","env":"prod"}},
            {"id":"c-2","url":"wss://b/ws","status":"reconnecting"}
        ]}"#),
    );
    let reply = run(
        &host,
        json!({"command":"list","filters":{"venue":"binance","env":"prod"}}),
    );
    assert_eq!(
        reply.data,
        json!({
            "command":"list","success":true,
            "connections":[
                {"id":"c-1","url":"wss://a/ws","status":"connected","topic":"t.a","instance_id":"wsm-0",
                 "tags":{"venue":"binance","env":"prod"}},
                {"id":"c-2","url":"wss://b/ws","status":"reconnecting","topic":"","instance_id":"",
                 "tags":{}},
            ],
        })
    );
    // Filters are ANDed: their order carries no meaning, so compare them as a set.
    let body = only_call(&host, "List");
    assert_eq!(body.as_object().expect("request object").len(), 1, "{body}");
    let mut filters = body["filters"].as_array().expect("filters array").clone();
    filters.sort_by_key(|f| f["key"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        filters,
        [
            json!({"key":"env","value":"prod"}),
            json!({"key":"venue","value":"binance"})
        ]
    );
}

#[test]
fn list_without_filters_sends_an_empty_request_and_accepts_camel_case_instance_id() {
    let host = Host::new();
    host.on(
        "List",
        ok(r#"{"connections":[{"id":"c-3","url":"ws://x","status":"connected","topic":"","instanceId":"wsm-7","tags":{"k":"v"}}]}"#),
    );
    let reply = run(&host, json!({"command":"list"}));
    assert_eq!(
        reply.data,
        json!({
            "command":"list","success":true,
            "connections":[{"id":"c-3","url":"ws://x","status":"connected","topic":"",
                            "instance_id":"wsm-7","tags":{"k":"v"}}],
        })
    );
    assert_eq!(only_call(&host, "List"), json!({}));
}

#[test]
fn list_of_an_empty_response_body_is_an_empty_list() {
    let host = Host::new();
    host.on("List", Canned::OkEmpty);
    let reply = run(&host, json!({"command":"list","filters":{}}));
    assert_eq!(
        reply.data,
        json!({"command":"list","success":true,"connections":[]})
    );
    assert_eq!(only_call(&host, "List"), json!({}));
}

// ---------------------------------------------------------------------------------------------
// disconnect and tags
// ---------------------------------------------------------------------------------------------

#[test]
fn disconnect_calls_disconnect_with_the_id() {
    let host = Host::new();
    host.on("Disconnect", ok("{}"));
    let reply = run(&host, json!({"command":"disconnect","id":"c-5"}));
    assert_eq!(
        reply.data,
        json!({"command":"disconnect","success":true,"id":"c-5"})
    );
    assert_eq!(only_call(&host, "Disconnect"), json!({"id":"c-5"}));
}

#[test]
fn set_tag_sends_id_key_and_value() {
    let host = Host::new();
    host.on("SetTag", ok("{}"));
    let reply = run(
        &host,
        json!({"command":"set_tag","id":"c-1","key":"owner","value":"desk-7"}),
    );
    assert_eq!(
        reply.data,
        json!({"command":"set_tag","success":true,"id":"c-1"})
    );
    assert_eq!(
        only_call(&host, "SetTag"),
        json!({"id":"c-1","key":"owner","value":"desk-7"})
    );
    // An empty value is a value (clearing a tag), not a missing field.
    let reply = run(
        &host,
        json!({"command":"set-tag","id":"c-1","key":"owner","value":""}),
    );
    assert!(reply.success(), "{:?}", reply.data);
    assert_eq!(
        only_call(&host, "SetTag"),
        json!({"id":"c-1","key":"owner","value":""})
    );
}

#[test]
fn get_tag_returns_the_value() {
    let host = Host::new();
    host.on("GetTag", ok(r#"{"value":"desk-7"}"#));
    let reply = run(&host, json!({"command":"get_tag","id":"c-1","key":"owner"}));
    assert_eq!(
        reply.data,
        json!({"command":"get_tag","success":true,"id":"c-1","key":"owner","value":"desk-7"})
    );
    assert_eq!(
        only_call(&host, "GetTag"),
        json!({"id":"c-1","key":"owner"})
    );
}

#[test]
fn set_tags_sends_the_map() {
    let host = Host::new();
    host.on("SetTags", ok("{}"));
    let reply = run(
        &host,
        json!({"command":"set_tags","id":"c-1","tags":{"a":"1","b":"2"}}),
    );
    assert_eq!(
        reply.data,
        json!({"command":"set_tags","success":true,"id":"c-1"})
    );
    assert_eq!(
        only_call(&host, "SetTags"),
        json!({"id":"c-1","tags":{"a":"1","b":"2"}})
    );
    let reply = run(&host, json!({"command":"set_tags","id":"c-1","tags":{}}));
    assert!(reply.success(), "{:?}", reply.data);
    assert_eq!(only_call(&host, "SetTags"), json!({"id":"c-1","tags":{}}));
}

#[test]
fn get_tags_returns_the_map() {
    let host = Host::new();
    host.on(
        "GetTags",
        ok(r#"{"tags":{"venue":"binance","env":"prod"}}"#),
    );
    let reply = run(&host, json!({"command":"get_tags","id":"c-1"}));
    assert_eq!(
        reply.data,
        json!({"command":"get_tags","success":true,"id":"c-1","tags":{"venue":"binance","env":"prod"}})
    );
    assert_eq!(only_call(&host, "GetTags"), json!({"id":"c-1"}));
}

// ---------------------------------------------------------------------------------------------
// stop
// ---------------------------------------------------------------------------------------------

fn disconnected_ids(calls: &[(String, Value)]) -> Vec<String> {
    calls
        .iter()
        .map(|(method, body)| {
            assert_eq!(method, "Disconnect");
            assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
            body["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

#[test]
fn stop_disconnects_exactly_this_workers_connections_in_creation_order() {
    let a = Host::new();
    let b = Host::new();
    create(&a, "a-3");
    create(&b, "b-1");
    create(&a, "a-1");
    create(&a, "a-2");
    a.on("Disconnect", ok("{}"));
    b.on("Disconnect", ok("{}"));
    let reply = run(&a, json!({"command":"stop"}));
    assert_eq!(
        reply.data,
        json!({"command":"stop","success":true,"message":"disconnected 3 connections"})
    );
    assert_eq!(disconnected_ids(&take_calls(&a)), ["a-3", "a-1", "a-2"]);
    assert!(b.calls().is_empty(), "the other worker's host was called");

    // Nothing left for a second stop.
    let reply = run(&a, json!({"command":"stop"}));
    assert_eq!(reply.data["message"], "disconnected 0 connections");
    assert!(take_calls(&a).is_empty());

    // The other worker still has its own.
    let reply = run(&b, json!({"command":"stop"}));
    assert_eq!(reply.data["message"], "disconnected 1 connections");
    assert_eq!(disconnected_ids(&take_calls(&b)), ["b-1"]);
}

#[test]
fn stop_skips_connections_the_worker_already_disconnected() {
    let host = Host::new();
    create(&host, "x-1");
    create(&host, "x-2");
    create(&host, "x-3");
    host.on("Disconnect", ok("{}"));
    let reply = run(&host, json!({"command":"disconnect","id":"x-2"}));
    assert!(reply.success());
    only_call(&host, "Disconnect");
    let reply = run(&host, json!({"command":"stop"}));
    assert_eq!(reply.data["message"], "disconnected 2 connections");
    assert_eq!(disconnected_ids(&take_calls(&host)), ["x-1", "x-3"]);
}

#[test]
fn stop_forgets_connections_wsm_no_longer_knows() {
    let host = Host::new();
    create(&host, "n-1");
    create(&host, "n-2");
    create(&host, "n-3");
    host.on_seq(
        "Disconnect",
        vec![
            ok("{}"),
            wsm_error(5, "NOT_FOUND", "Connection not found"),
            ok("{}"),
        ],
    );
    let reply = run(&host, json!({"command":"stop"}));
    assert_eq!(
        reply.data,
        json!({"command":"stop","success":true,"message":"disconnected 2 connections"})
    );
    assert_eq!(disconnected_ids(&take_calls(&host)), ["n-1", "n-2", "n-3"]);
    let reply = run(&host, json!({"command":"stop"}));
    assert_eq!(reply.data["message"], "disconnected 0 connections");
    assert!(
        take_calls(&host).is_empty(),
        "a NOT_FOUND connection was retried"
    );
}

#[test]
fn stop_failure_yields_an_error_reply_and_is_retried_by_the_next_stop() {
    let host = Host::new();
    create(&host, "f-1");
    create(&host, "f-2");
    create(&host, "f-3");
    host.on_seq(
        "Disconnect",
        vec![
            ok("{}"),
            wsm_error(14, "UNAVAILABLE", "owner unreachable"),
            ok("{}"),
        ],
    );
    let reply = run(&host, json!({"command":"stop"}));
    assert_eq!(
        reply.data,
        json!({
            "command":"stop","success":false,"code":"UNAVAILABLE",
            "message":"disconnected 2 connections; 1 could not be disconnected and stay tracked \
                       for the next stop (f-2: UNAVAILABLE: owner unreachable)",
        })
    );
    assert_eq!(disconnected_ids(&take_calls(&host)), ["f-1", "f-2", "f-3"]);

    let reply = run(&host, json!({"command":"stop"}));
    assert_eq!(
        reply.data,
        json!({"command":"stop","success":true,"message":"disconnected 1 connections"})
    );
    assert_eq!(disconnected_ids(&take_calls(&host)), ["f-2"]);
}
