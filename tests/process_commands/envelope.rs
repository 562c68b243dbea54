//! The reply envelope, `wsm_compat=base`, data given as a string, and what is logged.

use crate::support::Event;
use serde_json::{json, Value};

use super::common::{
    assert_envelope, assert_subscription_call, ok, only_call, parse_rfc3339_utc, run, run_event,
    take_calls, Host, RESPONSE_TYPE,
};

// ---------------------------------------------------------------------------------------------
// the reply envelope
// ---------------------------------------------------------------------------------------------

#[test]
fn reply_envelope_carries_every_field() {
    let host = Host::new();
    host.on("List", ok(r#"{"connections":[]}"#));
    let event = Event::json(&json!({"command":"list"}))
        .ext("correlationid", "corr-42")
        .subject("orders/7");
    let reply = run_event(&host, &event);
    assert_envelope(&reply, RESPONSE_TYPE, Some("orders/7"), Some("corr-42"));
    assert_eq!(
        reply.data,
        json!({"command":"list","success":true,"connections":[]})
    );
}

#[test]
fn reply_has_no_subject_and_no_correlationid_when_the_request_had_none() {
    let host = Host::new();
    host.on("List", ok(r#"{"connections":[]}"#));
    let reply = run(&host, json!({"command":"list"}));
    assert_envelope(&reply, RESPONSE_TYPE, None, None);
    assert!(reply.extensions.is_empty());
}

#[test]
fn reply_copies_only_the_correlationid_extension_first_one_wins() {
    let host = Host::new();
    host.on("List", ok(r#"{"connections":[]}"#));
    let event = Event::json(&json!({"command":"list"}))
        .ext("traceparent", "00-abc-def-01")
        .ext("correlationid", "first")
        .ext("correlationid", "second");
    let reply = run_event(&host, &event);
    assert_envelope(&reply, RESPONSE_TYPE, None, Some("first"));
}

#[test]
fn reply_ids_are_fresh_for_every_call() {
    let host = Host::new();
    host.on("List", ok(r#"{"connections":[]}"#));
    let event = Event::json(&json!({"command":"list"})).ext("correlationid", "same");
    let ids: Vec<String> = (0..20)
        .map(|_| {
            let reply = run_event(&host, &event);
            assert_envelope(&reply, RESPONSE_TYPE, None, Some("same"));
            reply.id.unwrap()
        })
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "reply ids repeat: {ids:?}");
    assert!(!ids.contains(&"evt-1".to_owned()), "request id reused");
}

#[test]
fn response_type_extension_overrides_the_reply_type() {
    let host = Host::new();
    host.on("GetTags", ok(r#"{"tags":{}}"#));
    let event = Event::json(&json!({"command":"get_tags","id":"c"}))
        .ext("response_type", "response.custom.controller")
        .ext("correlationid", "c-1")
        .subject("s");
    let reply = run_event(&host, &event);
    assert_envelope(&reply, "response.custom.controller", Some("s"), Some("c-1"));
    // A blank override falls back to the default type.
    let event = Event::json(&json!({"command":"get_tags","id":"c"})).ext("response_type", "  ");
    let reply = run_event(&host, &event);
    assert_envelope(&reply, RESPONSE_TYPE, None, None);
}

#[test]
fn response_type_also_applies_to_error_replies() {
    let host = Host::new();
    let event = Event::json(&json!({"command":"frobnicate"}))
        .ext("response_type", "response.custom.controller")
        .ext("correlationid", "c-2");
    let reply = run_event(&host, &event);
    assert_envelope(&reply, "response.custom.controller", None, Some("c-2"));
    assert_eq!(reply.code(), "UNKNOWN_COMMAND");
}

// ---------------------------------------------------------------------------------------------
// wsm_compat=base and string data
// ---------------------------------------------------------------------------------------------

#[test]
fn wsm_compat_base_omits_replay_on_reconnect_on_subscribe() {
    let host = Host::new();
    host.on("SendRaw", ok("{}"));
    let event = Event::json(&json!({"command":"subscribe","id":"c-1","params":["a"]}))
        .ext("wsm_compat", "base");
    let reply = run_event(&host, &event);
    assert_eq!(
        reply.data,
        json!({"command":"subscribe","success":true,"id":"c-1","request_id":1})
    );
    assert_subscription_call(
        &only_call(&host, "SendRaw"),
        "c-1",
        r#"{"method":"SUBSCRIBE","params":["a"],"id":1}"#,
        None,
    );
}

#[test]
fn wsm_compat_base_create_sends_base_fields_only() {
    let host = Host::new();
    host.on("Connect", ok(r#"{"id":"c-b","status":"connected"}"#));
    let event = Event::json(&json!({
        "command":"create","url":"wss://x/ws","auto_reconnect":true,"tags":{"k":"v"},
        "headers":{}, "subprotocols":[], "on_connect":[],
    }))
    .ext("wsm_compat", "BASE");
    let reply = run_event(&host, &event);
    assert!(reply.success(), "{:?}", reply.data);
    assert_eq!(
        only_call(&host, "Connect"),
        json!({"url":"wss://x/ws","auto_reconnect":true,"tags":{"k":"v"}})
    );
}

#[test]
fn wsm_compat_base_refuses_extended_create_fields_naming_the_field() {
    let host = Host::new();
    host.on("Connect", ok(r#"{"id":"c-b","status":"connected"}"#));
    for (field, value) in [
        ("headers", json!({"Authorization":"Bearer t"})),
        ("subprotocols", json!(["v1"])),
        ("on_connect", json!(["hello"])),
    ] {
        let mut data = json!({"command":"create","url":"wss://x/ws"});
        data[field] = value;
        let event = Event::json(&data)
            .ext("correlationid", "cb")
            .ext("wsm_compat", "base");
        let reply = run_event(&host, &event);
        assert_envelope(&reply, RESPONSE_TYPE, None, Some("cb"));
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

#[test]
fn extended_mode_sends_replay_on_reconnect_only_for_subscriptions() {
    let host = Host::new();
    host.on("SendRaw", ok("{}"));
    let event = Event::json(&json!({"command":"send_raw","id":"c","text":"x"}))
        .ext("wsm_compat", "extended");
    run_event(&host, &event);
    assert!(
        only_call(&host, "SendRaw")
            .get("replay_on_reconnect")
            .is_none(),
        "a plain send_raw is not replayed"
    );

    // The other half: a subscription in the same mode is flagged for replay.
    let host = Host::new();
    host.on("SendRaw", ok("{}"));
    let event = Event::json(&json!({"command":"subscribe","id":"c","params":["a@trade"]}))
        .ext("wsm_compat", "extended");
    let reply = run_event(&host, &event);
    assert!(reply.success(), "{:?}", reply.data);
    assert_eq!(
        only_call(&host, "SendRaw").get("replay_on_reconnect"),
        Some(&json!(true)),
        "a subscription is replayed after a reconnect"
    );
}

#[test]
fn command_data_given_as_a_json_string_holding_the_object_is_accepted() {
    let host = Host::new();
    host.on("StartPublish", ok("{}"));
    let inner = json!({"command":"publish","id":"c-1","topic":"t"}).to_string();
    let reply = run(&host, Value::String(inner));
    assert_eq!(
        reply.data,
        json!({"command":"publish","success":true,"id":"c-1","topic":"t"})
    );
    assert_eq!(
        only_call(&host, "StartPublish"),
        json!({"id":"c-1","topic":"t"})
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let host = Host::new();
    host.on("Disconnect", ok("{}"));
    let reply = run(
        &host,
        json!({"command":"disconnect","id":"c-1","future_field":{"x":[1,2]},"reason":"done"}),
    );
    assert_eq!(
        reply.data,
        json!({"command":"disconnect","success":true,"id":"c-1"})
    );
    assert_eq!(only_call(&host, "Disconnect"), json!({"id":"c-1"}));
}

#[test]
fn successes_are_not_logged() {
    let host = Host::new();
    host.on("List", ok(r#"{"connections":[]}"#));
    let event = Event::json(&json!({"command":"list"})).ext("correlationid", "log-1");
    let reply = run_event(&host, &event);
    assert!(reply.success(), "{:?}", reply.data);
    let logs = host.logs();
    assert!(logs.is_empty(), "{logs:?}");
}

#[test]
fn parse_rfc3339_utc_is_strict() {
    assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_rfc3339_utc("2000-02-29T12:34:56.000007Z"),
        Some(951_827_696)
    );
    assert_eq!(
        parse_rfc3339_utc("2026-11-24T03:28:51.123456Z"),
        Some(1_795_490_931)
    );
    assert_eq!(parse_rfc3339_utc("2026-11-24T03:28:51+00:00"), None);
    assert_eq!(parse_rfc3339_utc("2026-11-24 03:28:51Z"), None);
    assert_eq!(parse_rfc3339_utc("2026-13-24T03:28:51Z"), None);
    assert_eq!(parse_rfc3339_utc("2026-11-24T03:28:51.Z"), None);
}
