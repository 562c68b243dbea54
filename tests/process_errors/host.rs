//! The host: an ABI version other than 1, missing callbacks, bad responses, the log line.

use crate::support::{Canned, Event};
use serde_json::json;

use super::common::{assert_error, assert_logged, event, ok, plugin, Host, ERROR, WARN};

#[test]
fn abi_version_other_than_1_gets_abi_mismatch_and_no_gateway_call() {
    for abi in [2, 0, -1] {
        let host = Host::with_abi(abi);
        host.on("Connect", ok(r#"{"id":"c","status":"connected"}"#));
        let reply = plugin().call(
            &host,
            &event(json!({"command":"create","url":"wss://x"}), "corr-abi"),
        );
        assert_error(
            &reply,
            "error",
            "ABI_MISMATCH",
            &format!("host ABI version {abi} is not supported; this worker speaks ABI version 1"),
            Some("corr-abi"),
        );
        assert!(host.calls().is_empty(), "ABI {abi}: gateway called");
        assert_logged(&host, WARN, "error", Some("corr-abi"), "ABI_MISMATCH");
    }
}

#[test]
fn host_without_gateway_call_gets_a_gateway_error() {
    let mut host = Host::new();
    host.table_mut().gateway_call = None;
    let reply = plugin().call(
        &host,
        &event(json!({"command":"create","url":"wss://x"}), "corr-ng"),
    );
    assert_error(
        &reply,
        "create",
        "GATEWAY_ERROR",
        "gateway call websocketmanager.Connect failed with status -1: the host provides no \
         gateway_call callback",
        Some("corr-ng"),
    );
    assert_logged(&host, ERROR, "create", Some("corr-ng"), "GATEWAY_ERROR");
}

#[test]
fn host_without_log_still_works() {
    let mut host = Host::new();
    host.table_mut().log = None;
    host.on("List", ok(r#"{"connections":[]}"#));
    let reply = plugin().call(&host, &event(json!({"command":"list"}), "corr-nl"));
    assert_eq!(
        reply.data,
        json!({"command":"list","success":true,"connections":[]})
    );
    let reply = plugin().call(&host, &event(json!({"command":"nope"}), "corr-nl"));
    assert_error(
        &reply,
        "error",
        "UNKNOWN_COMMAND",
        "Unknown command: nope",
        Some("corr-nl"),
    );
    host.on("GetTags", Canned::FailNoBody(1));
    let reply = plugin().call(
        &host,
        &event(json!({"command":"get_tags","id":"c"}), "corr-nl"),
    );
    assert_eq!(reply.code(), "GATEWAY_ERROR");
    assert!(host.logs().is_empty());
    assert_eq!(host.calls().len(), 2);
}

#[test]
fn host_without_free_response_still_replies_and_warns() {
    let mut host = Host::new();
    host.leaks = 1;
    host.table_mut().free_response = None;
    host.on("List", ok(r#"{"connections":[]}"#));
    let reply = plugin().call(&host, &event(json!({"command":"list"}), "corr-nf"));
    assert_eq!(
        reply.data,
        json!({"command":"list","success":true,"connections":[]})
    );
    assert_eq!(host.buffers(), (1, 0));
    let logs = host.logs();
    assert_eq!(
        logs.first(),
        Some(&(
            WARN,
            "host provides no free_response callback; a gateway response buffer is leaked"
                .to_owned()
        ))
    );
}

#[test]
fn gateway_response_with_a_negative_length_is_a_gateway_error_and_still_freed() {
    let host = Host::new();
    host.on("List", Canned::NegativeLength(b"{}  ".into()));
    let reply = plugin().call(&host, &event(json!({"command":"list"}), "corr-neg"));
    assert_error(
        &reply,
        "list",
        "GATEWAY_ERROR",
        "gateway call websocketmanager.List failed with status -1: gateway_call returned a \
         negative length -1",
        Some("corr-neg"),
    );
    let (allocated, freed) = host.buffers();
    assert_eq!(
        (allocated, freed),
        (1, 1),
        "the buffer was not handed back exactly once"
    );
}

#[test]
fn log_line_with_a_nul_in_the_correlation_id_is_not_cut_short() {
    let host = Host::new();
    let reply = plugin().call(
        &host,
        &Event::json(&json!({"command":"frobnicate"}))
            .ext("correlationid", "a\0b")
            .encode(),
    );
    // The reply copies the correlation id byte for byte.
    assert_error(
        &reply,
        "error",
        "UNKNOWN_COMMAND",
        "Unknown command: frobnicate",
        Some("a\0b"),
    );
    // The C log line cannot carry the NUL; it is replaced, and the rest of the line survives.
    assert_eq!(
        host.logs(),
        [(
            WARN,
            "command error failed (correlationid a\u{FFFD}b): UNKNOWN_COMMAND: Unknown command: \
             frobnicate; replied with success=false"
                .to_owned()
        )]
    );
}
