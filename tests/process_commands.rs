//! Every command of SPEC section 3 through the real C ABI: `dlopen` of the built plugin, a scripted
//! host, FlatBuffer events in and `WorkerResponse`s out. Each test checks the WSM request body the
//! plugin sent and the reply it built, field by field.

mod support;

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};
use support::{Canned, Event, Plugin, Reply, ScriptedHost};

const SOURCE: &str = "urn:com.virtufin.worker.websocketmanagercontroller";
const RESPONSE_TYPE: &str = "response.websocketmanagercontroller";

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(Plugin::load)
}

/// A scripted host that is never freed. The plugin keys per-worker state (request ids, created
/// connections) by the host table's address, so a host freed by one test could hand its state to
/// the next host allocated at the same address. Gateway buffers are still checked on drop.
struct Host(ManuallyDrop<ScriptedHost>);

impl Host {
    fn new() -> Host {
        Host(ManuallyDrop::new(ScriptedHost::new()))
    }
}

impl Deref for Host {
    type Target = ScriptedHost;
    fn deref(&self) -> &ScriptedHost {
        &self.0
    }
}

impl DerefMut for Host {
    fn deref_mut(&mut self) -> &mut ScriptedHost {
        &mut self.0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let (allocated, freed) = self.buffers();
            assert_eq!(allocated, freed, "gateway buffers leaked or double-freed");
        }
    }
}

fn ok(body: &str) -> Canned {
    Canned::Ok(body.to_owned())
}

fn wsm_error(status: i32, code: &str, message: &str) -> Canned {
    Canned::Fail(
        status,
        json!({"code": code, "message": message}).to_string(),
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("not standard base64 {text:?}: {e}"))
}

/// Runs one command (`data` as the event's JSON data) with no extensions.
fn run(host: &ScriptedHost, data: Value) -> Reply {
    plugin().call(host, &Event::json(&data).encode())
}

fn run_event(host: &ScriptedHost, event: &Event) -> Reply {
    plugin().call(host, &event.encode())
}

/// The calls since the last take, as (method, body); every one must go to `websocketmanager`.
fn take_calls(host: &ScriptedHost) -> Vec<(String, Value)> {
    host.take_calls()
        .into_iter()
        .map(|c| {
            assert_eq!(
                c.service, "websocketmanager",
                "gateway service of {}",
                c.method
            );
            (c.method, c.body)
        })
        .collect()
}

/// Exactly one gateway call since the last take, of `method`; returns its JSON body.
fn only_call(host: &ScriptedHost, method: &str) -> Value {
    let calls = take_calls(host);
    assert_eq!(calls.len(), 1, "expected exactly one call, got {calls:?}");
    let (got, body) = calls.into_iter().next().unwrap();
    assert_eq!(got, method);
    body
}

/// Seconds since the Unix epoch of a `YYYY-MM-DDTHH:MM:SS[.fraction]Z` timestamp.
fn parse_rfc3339_utc(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &text[19..text.len() - 1];
    if !rest.is_empty() {
        let frac = rest.strip_prefix('.')?;
        if frac.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    // Days from civil (H. Hinnant), independent of the plugin's own formatter.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Checks every envelope field of a reply event.
fn assert_envelope(
    reply: &Reply,
    event_type: &str,
    subject: Option<&str>,
    correlation: Option<&str>,
) {
    let id = reply.id.as_deref().expect("reply id");
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("reply id {id:?}: {e}"));
    assert_eq!(uuid.get_version_num(), 4, "reply id {id} is not a v4 UUID");
    assert_eq!(
        id,
        uuid.hyphenated().to_string(),
        "reply id in hyphenated lowercase form"
    );
    assert_eq!(reply.event_type.as_deref(), Some(event_type));
    assert_eq!(reply.source.as_deref(), Some(SOURCE));
    assert_eq!(reply.specversion.as_deref(), Some("1.0"));
    assert_eq!(reply.datacontenttype.as_deref(), Some("application/json"));
    let time = reply.time.as_deref().expect("reply time");
    let secs =
        parse_rfc3339_utc(time).unwrap_or_else(|| panic!("time {time:?} is not RFC 3339 UTC"));
    assert!(
        (secs - now_secs()).abs() <= 60,
        "reply time {time} is not now"
    );
    assert_eq!(reply.subject.as_deref(), subject);
    let expected: Vec<(String, String)> = correlation
        .map(|c| vec![("correlationid".to_owned(), c.to_owned())])
        .unwrap_or_default();
    assert_eq!(reply.extensions, expected);
    assert_eq!(reply.error_message, None);
}

// ---------------------------------------------------------------------------------------------
// create
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// subscribe / unsubscribe
// ---------------------------------------------------------------------------------------------

fn assert_subscription_call(body: &Value, id: &str, message: &str, replay: Option<bool>) {
    let mut expected = json!({
        "id": id,
        "message": b64(message.as_bytes()),
        "content_type": "application/json",
    });
    if let Some(replay) = replay {
        expected["replay_on_reconnect"] = replay.into();
    }
    assert_eq!(body, &expected);
    let sent = unb64(body["message"].as_str().unwrap());
    assert_eq!(
        String::from_utf8(sent).unwrap(),
        message,
        "exact JSON-RPC frame"
    );
}

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

// ---------------------------------------------------------------------------------------------
// send_raw / send
// ---------------------------------------------------------------------------------------------

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

fn create(host: &ScriptedHost, id: &str) {
    host.on(
        "Connect",
        Canned::Ok(json!({"id":id,"status":"connected"}).to_string()),
    );
    let reply = run(host, json!({"command":"create","url":"wss://x/ws"}));
    assert_eq!(reply.data["id"], id, "{:?}", reply.data);
    only_call(host, "Connect");
}

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
