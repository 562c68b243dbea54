//! `subscribe` / `unsubscribe` with their request ids, and `publish` / `stop_publish`.

use crate::support::ScriptedHost;
use serde_json::{json, Value};

use super::common::{assert_subscription_call, ok, only_call, run, unb64, Host};

// ---------------------------------------------------------------------------------------------
// subscribe / unsubscribe
// ---------------------------------------------------------------------------------------------

#[test]
fn subscribe_sends_a_json_rpc_subscribe_frame_flagged_for_replay() {
    let host = Host::new();
    host.on("SendRaw", ok("{}"));
    let reply = run(
        &host,
        json!({"command":"subscribe","id":"c-1","params":["btcusdt@depth@100ms","ethusdt@trade"]}),
    );
    assert_eq!(
        reply.data,
        json!({"command":"subscribe","success":true,"id":"c-1","request_id":1})
    );
    assert_subscription_call(
        &only_call(&host, "SendRaw"),
        "c-1",
        r#"{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms","ethusdt@trade"],"id":1}"#,
        Some(true),
    );
}

#[test]
fn unsubscribe_sends_a_json_rpc_unsubscribe_frame_flagged_for_replay() {
    let host = Host::new();
    host.on("SendRaw", ok("{}"));
    let reply = run(
        &host,
        json!({"command":"unsubscribe","id":"c-9","params":["btcusdt@depth"]}),
    );
    assert_eq!(
        reply.data,
        json!({"command":"unsubscribe","success":true,"id":"c-9","request_id":1})
    );
    assert_subscription_call(
        &only_call(&host, "SendRaw"),
        "c-9",
        r#"{"method":"UNSUBSCRIBE","params":["btcusdt@depth"],"id":1}"#,
        Some(true),
    );
}

#[test]
fn default_request_ids_increase_per_worker_and_are_independent_between_hosts() {
    let a = Host::new();
    let b = Host::new();
    a.on("SendRaw", ok("{}"));
    b.on("SendRaw", ok("{}"));
    let sub = |host: &ScriptedHost, cmd: &str, stream: &str| {
        let reply = run(host, json!({"command":cmd,"id":"c","params":[stream]}));
        assert!(reply.success(), "{:?}", reply.data);
        let body = only_call(host, "SendRaw");
        let frame: Value =
            serde_json::from_slice(&unb64(body["message"].as_str().unwrap())).unwrap();
        assert_eq!(
            frame["id"], reply.data["request_id"],
            "frame id = reply request_id"
        );
        frame["id"].as_u64().expect("numeric id")
    };
    assert_eq!(sub(&a, "subscribe", "s1"), 1);
    assert_eq!(sub(&a, "unsubscribe", "s1"), 2);
    assert_eq!(sub(&b, "subscribe", "s1"), 1, "second host starts at 1");
    assert_eq!(sub(&a, "subscribe", "s2"), 3);
    assert_eq!(sub(&b, "unsubscribe", "s1"), 2);
}

#[test]
fn explicit_request_id_is_honoured_and_does_not_consume_the_counter() {
    let host = Host::new();
    host.on("SendRaw", ok("{}"));
    let reply = run(
        &host,
        json!({"command":"subscribe","id":"c-1","params":["a"],"request_id":42}),
    );
    assert_eq!(
        reply.data,
        json!({"command":"subscribe","success":true,"id":"c-1","request_id":42})
    );
    assert_subscription_call(
        &only_call(&host, "SendRaw"),
        "c-1",
        r#"{"method":"SUBSCRIBE","params":["a"],"id":42}"#,
        Some(true),
    );
    let reply = run(
        &host,
        json!({"command":"subscribe","id":"c-1","params":["b"]}),
    );
    assert_eq!(reply.data["request_id"], json!(1));
    assert_subscription_call(
        &only_call(&host, "SendRaw"),
        "c-1",
        r#"{"method":"SUBSCRIBE","params":["b"],"id":1}"#,
        Some(true),
    );
}

// ---------------------------------------------------------------------------------------------
// publish / stop_publish
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_starts_publishing_the_connection_to_the_topic() {
    let host = Host::new();
    host.on("StartPublish", ok("{}"));
    let reply = run(
        &host,
        json!({"command":"publish","id":"c-1","topic":"act.exchange.binance.orderbook.update"}),
    );
    assert_eq!(
        reply.data,
        json!({"command":"publish","success":true,"id":"c-1","topic":"act.exchange.binance.orderbook.update"})
    );
    assert_eq!(
        only_call(&host, "StartPublish"),
        json!({"id":"c-1","topic":"act.exchange.binance.orderbook.update"})
    );
}

#[test]
fn stop_publish_is_accepted_in_every_spelling() {
    let host = Host::new();
    host.on("StopPublish", ok("{}"));
    for spelling in [
        "stop_publish",
        "stop-publish",
        "STOP_PUBLISH",
        "Stop-Publish",
    ] {
        let reply = run(&host, json!({"command":spelling,"id":"c-7"}));
        assert_eq!(
            reply.data,
            json!({"command":"stop_publish","success":true,"id":"c-7"}),
            "{spelling}"
        );
        assert_eq!(
            only_call(&host, "StopPublish"),
            json!({"id":"c-7"}),
            "{spelling}"
        );
    }
}

#[test]
fn command_names_are_case_insensitive_with_dash_or_underscore() {
    let host = Host::new();
    host.on("SendRaw", ok("{}"));
    host.on("GetTags", ok(r#"{"tags":{}}"#));
    host.on("List", ok(r#"{"connections":[]}"#));
    let reply = run(&host, json!({"command":"Send-Raw","id":"c","text":"x"}));
    assert_eq!(reply.data["command"], "send_raw");
    assert!(reply.success());
    only_call(&host, "SendRaw");
    let reply = run(&host, json!({"command":"GET-TAGS","id":"c"}));
    assert_eq!(reply.data["command"], "get_tags");
    only_call(&host, "GetTags");
    let reply = run(&host, json!({"command":"LIST"}));
    assert_eq!(reply.data["command"], "list");
    only_call(&host, "List");
}
