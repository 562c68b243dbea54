//! The named seeds of the fuzz corpus (`seed-*`): every command of SPEC §3 as WorkManager sends it,
//! gateway failures and odd hosts for the `process` target; correlation sequences for the
//! `correlation` target. They are made here so that they stay in the corpus whatever
//! `cargo fuzz cmin` drops: `tests/fuzz_corpus.rs` checks they are there, and
//! `cargo run --example fuzz_seeds` (re)writes them.
//!
//! Included with `#[path]` by both, next to `process_check`, `correlation_check` and the tests'
//! `support` module.
#![allow(dead_code)] // each includer uses a different part

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::correlation_check::{ops, ID_AS_SENT};
use crate::process_check::{Answer, Case, FLAG_ABI_MISMATCH, FLAG_NO_GATEWAY, FLAG_NO_LOG};
use crate::support::Event;

/// The committed corpus directory of `target`.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

/// Named corpus files: `(file name, bytes)`.
pub type Seeds = Vec<(String, Vec<u8>)>;

/// Every target's named seeds.
pub fn all() -> [(&'static str, Seeds); 2] {
    [
        ("process", process_seeds()),
        ("correlation", correlation_seeds()),
    ]
}

fn ok(body: &str) -> Answer {
    Answer::Ok(body.as_bytes().to_vec())
}

fn fail(status: i32, body: &str) -> Answer {
    Answer::Fail(status, body.as_bytes().to_vec())
}

/// Every command of SPEC §3 as WorkManager sends it, answered by WSM's success, its NOT_FOUND,
/// a plain-text gateway failure and a body that is not JSON; then odd hosts and broken events.
fn process_seeds() -> Vec<(String, Vec<u8>)> {
    let commands: [(&str, Value); 21] = [
        (
            "create",
            json!({"command":"create","url":"wss://stream.example.com:9443/stream",
                   "auto_reconnect":true,"tags":{"venue":"binance"},"headers":{"X-K":"v"},
                   "subprotocols":["v1"],
                   "on_connect":["hello",{"method":"SUBSCRIBE","params":["a"],"id":1}],
                   "api_host":"h"}),
        ),
        (
            "create-minimal",
            json!({"command":"create","url":"ws://feed/ws"}),
        ),
        (
            "subscribe",
            json!({"command":"subscribe","id":"c-1","params":["btcusdt@depth","ethusdt@trade"]}),
        ),
        (
            "unsubscribe",
            json!({"command":"unsubscribe","id":"c-1","params":["btcusdt@depth"],"request_id":7}),
        ),
        (
            "publish",
            json!({"command":"publish","id":"c-1","topic":"act.exchange.binance.orderbook.update"}),
        ),
        ("stop-publish", json!({"command":"stop-publish","id":"c-1"})),
        (
            "send-raw-text",
            json!({"command":"send_raw","id":"c-1","text":"{\"method\":\"PING\"}"}),
        ),
        (
            "send-raw-binary",
            json!({"command":"send_raw","id":"c-1","message":"AAEC/w==",
                   "content_type":"application/x-bin"}),
        ),
        (
            "send",
            json!({"command":"send","id":"c-1","text":"ping","timeout_ms":1500}),
        ),
        (
            "list-filtered",
            json!({"command":"list","filters":{"venue":"binance","env":"prod"}}),
        ),
        ("list", json!({"command":"list"})),
        ("disconnect", json!({"command":"disconnect","id":"c-1"})),
        (
            "set-tag",
            json!({"command":"set_tag","id":"c-1","key":"k","value":"v"}),
        ),
        ("get-tag", json!({"command":"get_tag","id":"c-1","key":"k"})),
        (
            "set-tags",
            json!({"command":"set_tags","id":"c-1","tags":{"a":"1","b":"2"}}),
        ),
        ("get-tags", json!({"command":"get_tags","id":"c-1"})),
        ("rotate", json!({"command":"rotate","id":"c-1"})),
        (
            "create-continuity",
            json!({"command":"create","url":"wss://x/ws","redundancy":2,"max_lifetime_ms":60000}),
        ),
        ("stop", json!({"command":"stop"})),
        ("unknown", json!({"command":"frobnicate"})),
        (
            "string-data",
            json!(json!({"command":"get_tags","id":"c-2"}).to_string()),
        ),
    ];
    let not_found = r#"{"code":"NOT_FOUND","message":"Connection not found"}"#;
    let mut seeds = Vec::new();
    for (name, data) in &commands {
        let event = Event::json(data)
            .ext("correlationid", &format!("corr-{name}"))
            .subject("subject/7")
            .encode();
        let replies: [(&str, Vec<Answer>); 4] = [
            ("ok", vec![]),
            ("not-found", vec![fail(5, not_found)]),
            ("gateway-text", vec![fail(14, "upstream connect error")]),
            ("not-json", vec![ok("<html>not json</html>")]),
        ];
        for (outcome, script) in replies {
            seeds.push((
                format!("seed-{name}-{outcome}"),
                Case::encode(0, &script, &event),
            ));
        }
    }
    let event = |data: Value| Event::json(&data).encode();
    let stop = event(json!({"command":"stop"}));
    seeds.push((
        "seed-stop-three-created-mixed".into(),
        Case::encode(
            3 << 3,
            &[ok("{}"), fail(5, not_found), Answer::FailNull(2)],
            &stop,
        ),
    ));
    seeds.push((
        "seed-stop-seven-created".into(),
        Case::encode(7 << 3, &[], &stop),
    ));
    let list = event(json!({"command":"list"}));
    seeds.push((
        "seed-abi-mismatch".into(),
        Case::encode(FLAG_ABI_MISMATCH, &[], &list),
    ));
    seeds.push((
        "seed-no-gateway".into(),
        Case::encode(FLAG_NO_GATEWAY, &[], &list),
    ));
    seeds.push((
        "seed-no-log".into(),
        Case::encode(FLAG_NO_LOG, &[Answer::FailNull(2)], &list),
    ));
    seeds.push((
        "seed-list-negative-length".into(),
        Case::encode(0, &[Answer::NegativeLength(b"{}".to_vec())], &list),
    ));
    seeds.push((
        "seed-list-empty-body".into(),
        Case::encode(0, &[Answer::OkNull], &list),
    ));
    seeds.push((
        "seed-list-wsm-internal".into(),
        Case::encode(
            0,
            &[fail(13, r#"{"code":13,"message":"store unavailable"}"#)],
            &list,
        ),
    ));
    // Not found by libFuzzer in its runs, but by a probe of the same checks: a failed call whose
    // body said code OK (0) became a failure reply with code "OK".
    seeds.push((
        "regression-failure-code-ok-number".into(),
        Case::encode(0, &[fail(5, r#"{"code":0,"message":"fine"}"#)], &list),
    ));
    seeds.push((
        "regression-failure-code-ok-name".into(),
        Case::encode(0, &[fail(2, r#"{"code":"OK"}"#)], &list),
    ));
    seeds.push((
        "seed-create-empty-body".into(),
        Case::encode(
            0,
            &[Answer::OkNull],
            &event(json!({"command":"create","url":"ws://feed/ws"})),
        ),
    ));
    seeds.push((
        "seed-send-bad-base64".into(),
        Case::encode(
            0,
            &[ok(r#"{"response":"not base64!"}"#)],
            &event(json!({"command":"send","id":"c-1","text":"ping"})),
        ),
    ));
    seeds.push((
        "seed-compat-base".into(),
        Case::encode(
            0,
            &[],
            &Event::json(&json!({"command":"create","url":"ws://feed/ws","headers":{"a":"b"}}))
                .ext("wsm_compat", "base")
                .ext("response_type", "response.custom")
                .encode(),
        ),
    ));
    seeds.push((
        "seed-event-not-flatbuffer".into(),
        Case::encode(0, &[], b"{\"command\":\"list\"}"),
    ));
    seeds.push(("seed-event-empty".into(), Case::encode(0, &[], b"")));
    seeds.push((
        "seed-event-no-data".into(),
        Case::encode(0, &[], &Event::default().encode()),
    ));
    seeds
}

/// Correlated requests as WSM makes them (SPEC §5): echoes of JSON, text and binary requests,
/// responses by id, frames that name no request, cancels and a clear.
fn correlation_seeds() -> Vec<(String, Vec<u8>)> {
    let seq = |parts: &[Vec<u8>]| parts.concat();
    let reply = |text: &str, k: u8| ops::text(&ops::template(text, ID_AS_SENT, k));
    vec![
        (
            "seed-echo-json".into(),
            seq(&[ops::register(), ops::echo_text(0, br#"{"op":"ping"}"#)]),
        ),
        (
            "seed-echo-text".into(),
            seq(&[ops::register(), ops::echo_text(0, b"hello \"x\"")]),
        ),
        (
            "seed-echo-binary".into(),
            seq(&[ops::register(), ops::echo_binary(0, &[1, 2, 3])]),
        ),
        (
            "seed-response-by-id".into(),
            seq(&[
                ops::register(),
                ops::register(),
                reply(r#"{"payload":{"ok":true},"id":"@"}"#, 1),
                reply(r#"{"id":"@","result":null}"#, 1),
                reply(r#"{"id":"@","result":null}"#, 0),
            ]),
        ),
        (
            "seed-frames-naming-no-request".into(),
            seq(&[
                ops::register(),
                reply(r#"{"stream":"x","data":{"id":"@"}}"#, 0),
                ops::text(b"{\"id\":1,\"result\":null}"),
                ops::text(b"not json"),
                ops::text(b"{\"id\":\"6f1c2c1e-0b8e-4d5e-9a4b-2f1d3c4b5a69\"}"),
                ops::binary(None, b"short"),
                ops::binary(None, b"0123456789abcdef and more"),
            ]),
        ),
        (
            "seed-binary-response".into(),
            seq(&[
                ops::register(),
                ops::binary(Some(0), b"resp"),
                ops::binary(Some(0), b"again"),
            ]),
        ),
        (
            "seed-cancel".into(),
            seq(&[
                ops::register(),
                ops::register(),
                ops::cancel(0),
                ops::echo_text(0, b"{}"),
                ops::cancel(9),
                ops::echo_binary(1, b"x"),
            ]),
        ),
        // Not found by libFuzzer in its runs, but by a probe of the same checks: an array whose
        // first element is a pending id matched it (serde reads a struct from an array too).
        (
            "regression-array-frame".into(),
            seq(&[
                ops::register(),
                reply(r#"["@"]"#, 0),
                reply(r#" [ "@", {"id":"@"} ]"#, 0),
            ]),
        ),
        (
            "seed-clear".into(),
            seq(&[
                ops::register(),
                ops::register(),
                ops::register(),
                ops::clear(),
                ops::echo_text(1, b"[1,2]"),
                ops::register(),
                ops::echo_text(3, b"  {\"a\": [true, null]}  "),
            ]),
        ),
    ]
}
