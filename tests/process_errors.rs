//! Every error path of `Process` through the real C ABI: bad arguments, bad buffers, bad JSON, bad
//! commands and fields, a host of the wrong ABI version, and every way the gateway can fail. Each
//! error reply is checked for its exact `command`, `code` and `message`, `success:false`, the
//! correlation id (copied whenever the event could be decoded), the gateway calls made (none where
//! none may happen) and the log line.

mod support;

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr;
use std::sync::OnceLock;

use serde_json::{json, Value};
use support::{Canned, Event, Plugin, Reply, ScriptedHost};

const SOURCE: &str = "urn:com.virtufin.worker.websocketmanagercontroller";
const RESPONSE_TYPE: &str = "response.websocketmanagercontroller";
const NOT_A_FLATBUFFER: &str = "the input is not a valid CloudEvent FlatBuffer: ";
const WARN: i32 = 3;
const ERROR: i32 = 4;

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(Plugin::load)
}

/// A scripted host that is never freed, so that no later host inherits its per-worker state by
/// address reuse. Gateway buffers are checked on drop unless `leaks` says how many may leak.
struct Host {
    inner: ManuallyDrop<ScriptedHost>,
    leaks: usize,
}

impl Host {
    fn new() -> Host {
        Host::with_abi(1)
    }

    fn with_abi(abi: i32) -> Host {
        Host {
            inner: ManuallyDrop::new(ScriptedHost::with_abi(abi)),
            leaks: 0,
        }
    }
}

impl Deref for Host {
    type Target = ScriptedHost;
    fn deref(&self) -> &ScriptedHost {
        &self.inner
    }
}

impl DerefMut for Host {
    fn deref_mut(&mut self) -> &mut ScriptedHost {
        &mut self.inner
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let (allocated, freed) = self.buffers();
            assert_eq!(
                allocated,
                freed + self.leaks,
                "gateway buffers leaked or double-freed"
            );
        }
    }
}

fn ok(body: &str) -> Canned {
    Canned::Ok(body.to_owned())
}

/// The command event `data` with correlation id `corr`.
fn event(data: Value, corr: &str) -> Vec<u8> {
    Event::json(&data).ext("correlationid", corr).encode()
}

fn raw_event(data: &[u8], corr: &str) -> Vec<u8> {
    Event::raw(data).ext("correlationid", corr).encode()
}

/// `Process` with an arbitrary byte buffer (copied into its own allocation of exactly its length).
fn call_bytes(host: &ScriptedHost, bytes: &[u8]) -> Reply {
    let owned = bytes.to_vec().into_boxed_slice();
    let (rc, out) = plugin().call_raw(host.table(), owned.as_ptr(), owned.len() as i32);
    assert_eq!(rc, 0, "Process returned {rc}");
    Reply::parse(&out.expect("Process returned 0 without a reply"))
}

/// Checks an error reply completely: data, envelope and correlation id.
fn assert_error(reply: &Reply, command: &str, code: &str, message: &str, corr: Option<&str>) {
    assert_eq!(
        reply.data,
        json!({"command": command, "success": false, "code": code, "message": message}),
    );
    assert_error_envelope(reply, corr);
}

fn assert_error_envelope(reply: &Reply, corr: Option<&str>) {
    let id = reply.id.as_deref().expect("reply id");
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("reply id {id:?}: {e}"));
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(reply.event_type.as_deref(), Some(RESPONSE_TYPE));
    assert_eq!(reply.source.as_deref(), Some(SOURCE));
    assert_eq!(reply.specversion.as_deref(), Some("1.0"));
    assert_eq!(reply.datacontenttype.as_deref(), Some("application/json"));
    assert!(reply
        .time
        .as_deref()
        .is_some_and(|t| t.ends_with('Z') && t.len() >= 20));
    let expected: Vec<(String, String)> = corr
        .map(|c| vec![("correlationid".to_owned(), c.to_owned())])
        .unwrap_or_default();
    assert_eq!(reply.extensions, expected, "correlation id");
    assert_eq!(
        reply.error_message, None,
        "error_message is only for internal errors"
    );
    assert_eq!(reply.data["success"], Value::Bool(false));
}

/// The host's last log line must report the failure at `level`, naming command and correlation.
fn assert_logged(host: &ScriptedHost, level: i32, command: &str, corr: Option<&str>, code: &str) {
    let logs = host.logs();
    let (got_level, line) = logs.last().expect("the failure was logged");
    let correlation = corr
        .map(|c| format!(" (correlationid {c})"))
        .unwrap_or_default();
    let prefix = format!("command {command} failed{correlation}: {code}: ");
    assert!(
        line.starts_with(&prefix),
        "log {line:?} does not start with {prefix:?}"
    );
    assert!(
        line.ends_with("; replied with success=false"),
        "log {line:?}"
    );
    assert_eq!(*got_level, level, "log level of {line:?}");
}

/// A request that must fail before any gateway call: checks reply, calls and log.
fn assert_refused(data: Value, command: &str, code: &str, message: &str) {
    let host = Host::new();
    let reply = plugin().call(&host, &event(data.clone(), "corr-r"));
    assert_error(&reply, command, code, message, Some("corr-r"));
    assert!(
        host.calls().is_empty(),
        "{data}: gateway called: {:?}",
        host.calls()
    );
    assert_logged(&host, WARN, command, Some("corr-r"), code);
}

/// xorshift64*: a small deterministic generator for the random-input test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments and buffers
// ---------------------------------------------------------------------------------------------

#[test]
fn null_host_returns_null_argument_and_no_reply() {
    let buf = event(json!({"command":"list"}), "c");
    let (rc, out) = plugin().call_raw(ptr::null(), buf.as_ptr(), buf.len() as i32);
    assert_eq!(rc, controller::VIRTUFIN_ERR_NULL_ARGUMENT);
    assert_eq!(rc, 1);
    assert!(out.is_none(), "a reply for a NULL host");
}

#[test]
fn null_out_buf_or_out_len_returns_null_argument_without_calling_the_host() {
    let host = Host::new();
    host.on("List", ok(r#"{"connections":[]}"#));
    let buf = event(json!({"command":"list"}), "c");
    let mut out: *mut u8 = ptr::null_mut();
    let mut out_len: i32 = -7;
    // SAFETY: valid host and input; the out-pointers are NULL or our locals.
    let (rc_no_buf, rc_no_len, rc_neither) = unsafe {
        (
            (plugin().process)(
                host.table(),
                buf.as_ptr(),
                buf.len() as i32,
                ptr::null_mut(),
                &mut out_len,
            ),
            (plugin().process)(
                host.table(),
                buf.as_ptr(),
                buf.len() as i32,
                &mut out,
                ptr::null_mut(),
            ),
            (plugin().process)(
                host.table(),
                buf.as_ptr(),
                buf.len() as i32,
                ptr::null_mut(),
                ptr::null_mut(),
            ),
        )
    };
    assert_eq!(rc_no_buf, 1);
    assert_eq!(rc_no_len, 1);
    assert_eq!(rc_neither, 1);
    assert!(out.is_null(), "out_buf set although out_len was NULL");
    assert!(
        host.calls().is_empty(),
        "the command ran: {:?}",
        host.calls()
    );
    assert!(host.logs().is_empty());
}

#[test]
fn null_out_buf_still_resets_a_non_null_out_len() {
    // SPEC 1: a non-zero return means `*out_buf = NULL, *out_len = 0`; the header says the
    // out-pointers are reset "when non-NULL themselves".
    let host = Host::new();
    let buf = event(json!({"command":"list"}), "c");
    let mut out_len: i32 = -7;
    // SAFETY: valid host and input; out_buf NULL on purpose.
    let rc = unsafe {
        (plugin().process)(
            host.table(),
            buf.as_ptr(),
            buf.len() as i32,
            ptr::null_mut(),
            &mut out_len,
        )
    };
    assert_eq!(rc, 1);
    assert_eq!(out_len, 0, "*out_len not reset on a non-zero return");
}

#[test]
fn null_out_len_still_resets_a_non_null_out_buf() {
    let host = Host::new();
    let buf = event(json!({"command":"list"}), "c");
    let mut sentinel = 0u8;
    let mut out: *mut u8 = &mut sentinel;
    // SAFETY: valid host and input; out_len NULL on purpose.
    let rc = unsafe {
        (plugin().process)(
            host.table(),
            buf.as_ptr(),
            buf.len() as i32,
            &mut out,
            ptr::null_mut(),
        )
    };
    assert_eq!(rc, 1);
    assert!(out.is_null(), "*out_buf not reset on a non-zero return");
}

#[test]
fn in_len_zero_gets_a_bad_request_reply() {
    let host = Host::new();
    let buf = event(json!({"command":"list"}), "c");
    for in_buf in [buf.as_ptr(), ptr::null()] {
        let (rc, out) = plugin().call_raw(host.table(), in_buf, 0);
        assert_eq!(rc, 0);
        let reply = Reply::parse(&out.expect("reply"));
        assert_error(
            &reply,
            "error",
            "BAD_REQUEST",
            "the input buffer is empty (in_len 0)",
            None,
        );
    }
    assert!(host.calls().is_empty());
    assert_logged(&host, WARN, "error", None, "BAD_REQUEST");
}

#[test]
fn negative_in_len_gets_a_bad_request_reply() {
    let host = Host::new();
    let buf = event(json!({"command":"list"}), "c");
    for len in [-1, -100, i32::MIN] {
        let (rc, out) = plugin().call_raw(host.table(), buf.as_ptr(), len);
        assert_eq!(rc, 0);
        let reply = Reply::parse(&out.expect("reply"));
        assert_error(
            &reply,
            "error",
            "BAD_REQUEST",
            &format!("in_len is negative ({len})"),
            None,
        );
    }
    assert!(host.calls().is_empty());
}

#[test]
fn null_in_buf_with_a_length_gets_a_bad_request_reply() {
    let host = Host::new();
    let (rc, out) = plugin().call_raw(host.table(), ptr::null(), 16);
    assert_eq!(rc, 0);
    let reply = Reply::parse(&out.expect("reply"));
    assert_error(
        &reply,
        "error",
        "BAD_REQUEST",
        "in_buf is NULL but in_len is 16",
        None,
    );
    assert!(host.calls().is_empty());
    assert_logged(&host, WARN, "error", None, "BAD_REQUEST");
}

#[test]
fn truncated_buffers_get_a_bad_request_reply() {
    let host = Host::new();
    host.on("List", ok(r#"{"connections":[]}"#));
    let full = Event::json(&json!({"command":"list"}))
        .ext("correlationid", "corr-t")
        .subject("subj")
        .encode();
    let whole = call_bytes(&host, &full);
    assert!(whole.success());
    host.take_calls();
    let mut refused = 0;
    for len in 1..full.len() {
        let reply = call_bytes(&host, &full[..len]);
        if reply.success() {
            // Only trailing alignment padding may be cut without losing anything.
            assert!(
                full.len() - len < 8,
                "a {len}-byte prefix of {} was accepted",
                full.len()
            );
            assert_eq!(reply.data, whole.data);
            assert_eq!(reply.extensions, whole.extensions);
            continue;
        }
        refused += 1;
        assert_eq!(reply.data["command"], "error", "prefix {len}");
        assert_eq!(reply.code(), "BAD_REQUEST", "prefix {len}");
        assert!(
            reply.message().starts_with(NOT_A_FLATBUFFER),
            "prefix {len}: {}",
            reply.message()
        );
        assert_error_envelope(&reply, None);
    }
    assert!(
        refused >= full.len() - 8,
        "only {refused} of {} prefixes refused",
        full.len()
    );
    let listed = host.calls().len();
    assert!(listed < 8, "{listed} truncated buffers reached the gateway");
}

#[test]
fn garbage_bytes_get_a_bad_request_reply() {
    let host = Host::new();
    for garbage in [
        &b"hello, this is not a flatbuffer at all"[..],
        &[0xff; 4][..],
        &[0xff; 64][..],
        &[0x00][..],
        &[0x04, 0, 0, 0][..],
        &br#"{"command":"list"}"#[..],
    ] {
        let reply = call_bytes(&host, garbage);
        assert_eq!(reply.data["command"], "error", "{garbage:?}");
        assert_eq!(reply.code(), "BAD_REQUEST", "{garbage:?}");
        assert!(
            reply.message().starts_with(NOT_A_FLATBUFFER),
            "{garbage:?}: {}",
            reply.message()
        );
        assert_error_envelope(&reply, None);
    }
    assert!(host.calls().is_empty());
    assert_logged(&host, WARN, "error", None, "BAD_REQUEST");
}

#[test]
fn random_bytes_get_a_bad_request_reply() {
    let host = Host::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000 {
        let len = 1 + (rng.next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let reply = call_bytes(&host, &bytes);
        assert_eq!(reply.data["command"], "error", "#{i} {bytes:02x?}");
        assert_eq!(reply.code(), "BAD_REQUEST", "#{i} {bytes:02x?}");
        assert!(
            reply.message().starts_with(NOT_A_FLATBUFFER)
                || reply.message().starts_with("Failed to parse command JSON"),
            "#{i}: {}",
            reply.message()
        );
        assert_error_envelope(&reply, None);
    }
    assert!(host.calls().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The data: JSON and the command
// ---------------------------------------------------------------------------------------------

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

#[test]
fn missing_required_fields_get_a_bad_request_reply_naming_the_field() {
    let cases = [
        (json!({"command":"create"}), "create", "Missing 'url' field"),
        (
            json!({"command":"create","url":null}),
            "create",
            "Missing 'url' field",
        ),
        (
            json!({"command":"create","url":" "}),
            "create",
            "Field 'url' must not be empty",
        ),
        (
            json!({"command":"subscribe","id":"c"}),
            "subscribe",
            "Field 'params' must list at least one stream",
        ),
        (
            json!({"command":"unsubscribe","id":"c","params":[]}),
            "unsubscribe",
            "Field 'params' must list at least one stream",
        ),
        (
            json!({"command":"subscribe","params":["a"]}),
            "subscribe",
            "Missing 'id' field",
        ),
        (
            json!({"command":"unsubscribe","params":["a"],"id":null}),
            "unsubscribe",
            "Missing 'id' field",
        ),
        (
            json!({"command":"publish","id":"c"}),
            "publish",
            "Missing 'topic' field",
        ),
        (
            json!({"command":"publish","topic":"t"}),
            "publish",
            "Missing 'id' field",
        ),
        (
            json!({"command":"publish","id":"c","topic":""}),
            "publish",
            "Field 'topic' must not be empty",
        ),
        (
            json!({"command":"stop_publish"}),
            "stop_publish",
            "Missing 'id' field",
        ),
        (
            json!({"command":"send_raw","text":"x"}),
            "send_raw",
            "Missing 'id' field",
        ),
        (
            json!({"command":"send_raw","id":"c"}),
            "send_raw",
            "Missing 'message' (base64) or 'text' field",
        ),
        (
            json!({"command":"send","id":"c","timeout_ms":10}),
            "send",
            "Missing 'message' (base64) or 'text' field",
        ),
        (
            json!({"command":"send","text":"x"}),
            "send",
            "Missing 'id' field",
        ),
        (
            json!({"command":"disconnect"}),
            "disconnect",
            "Missing 'id' field",
        ),
        (
            json!({"command":"disconnect","id":""}),
            "disconnect",
            "Field 'id' must not be empty",
        ),
        (
            json!({"command":"set_tag","id":"c","key":"k"}),
            "set_tag",
            "Missing 'value' field",
        ),
        (
            json!({"command":"set_tag","id":"c","value":"v"}),
            "set_tag",
            "Missing 'key' field",
        ),
        (
            json!({"command":"set_tag","key":"k","value":"v"}),
            "set_tag",
            "Missing 'id' field",
        ),
        (
            json!({"command":"get_tag","id":"c"}),
            "get_tag",
            "Missing 'key' field",
        ),
        (
            json!({"command":"get_tag","key":"k"}),
            "get_tag",
            "Missing 'id' field",
        ),
        (
            json!({"command":"set_tags","id":"c"}),
            "set_tags",
            "Missing 'tags' field",
        ),
        (
            json!({"command":"set_tags","id":"c","tags":null}),
            "set_tags",
            "Missing 'tags' field",
        ),
        (
            json!({"command":"set_tags","tags":{}}),
            "set_tags",
            "Missing 'id' field",
        ),
        (
            json!({"command":"get_tags"}),
            "get_tags",
            "Missing 'id' field",
        ),
    ];
    for (data, command, message) in cases {
        assert_refused(data, command, "BAD_REQUEST", message);
    }
}

#[test]
fn wrong_field_types_get_a_bad_request_reply_naming_the_field() {
    let cases = [
        (
            json!({"command":"create","url":"wss://x","auto_reconnect":"yes"}),
            "create",
            "Field 'auto_reconnect' must be a boolean, got a string",
        ),
        (
            json!({"command":"create","url":"wss://x","auto_reconnect":1}),
            "create",
            "Field 'auto_reconnect' must be a boolean, got a number",
        ),
        (
            json!({"command":"create","url":5}),
            "create",
            "Field 'url' must be a string, got a number",
        ),
        (
            json!({"command":"create","url":"wss://x","tags":{"venue":"b","n":1}}),
            "create",
            "Field 'tags.n' must be a string, got a number",
        ),
        (
            json!({"command":"create","url":"wss://x","tags":["a"]}),
            "create",
            "Field 'tags' must be an object of strings, got an array",
        ),
        (
            json!({"command":"create","url":"wss://x","headers":{"h":true}}),
            "create",
            "Field 'headers.h' must be a string, got a boolean",
        ),
        (
            json!({"command":"create","url":"wss://x","subprotocols":"v1"}),
            "create",
            "Field 'subprotocols' must be an array of strings, got a string",
        ),
        (
            json!({"command":"create","url":"wss://x","subprotocols":["v1",2]}),
            "create",
            "Field 'subprotocols[1]' must be a string, got a number",
        ),
        (
            json!({"command":"create","url":"wss://x","on_connect":"hello"}),
            "create",
            "Field 'on_connect' must be an array of messages, got a string",
        ),
        (
            json!({"command":"create","url":"wss://x","on_connect":["ok",5]}),
            "create",
            "Field 'on_connect[1]' must be a string or a JSON object, got a number",
        ),
        (
            json!({"command":"subscribe","id":"c","params":"btcusdt@depth"}),
            "subscribe",
            "Field 'params' must be an array of strings, got a string",
        ),
        (
            json!({"command":"subscribe","id":"c","params":["a",{"b":1}]}),
            "subscribe",
            "Field 'params[1]' must be a string, got an object",
        ),
        (
            json!({"command":"subscribe","id":"c","params":["a"],"request_id":-1}),
            "subscribe",
            "Field 'request_id' must be an integer from 0 to 9223372036854775807, got -1",
        ),
        (
            json!({"command":"subscribe","id":"c","params":["a"],"request_id":"7"}),
            "subscribe",
            "Field 'request_id' must be an integer from 0 to 9223372036854775807, got \"7\"",
        ),
        (
            json!({"command":"subscribe","id":"c","params":["a"],"request_id":1.5}),
            "subscribe",
            "Field 'request_id' must be an integer from 0 to 9223372036854775807, got 1.5",
        ),
        (
            json!({"command":"subscribe","id":7,"params":["a"]}),
            "subscribe",
            "Field 'id' must be a string, got a number",
        ),
        (
            json!({"command":"send","id":"c","text":"x","timeout_ms":-1}),
            "send",
            "Field 'timeout_ms' must be an integer from 0 to 2147483647, got -1",
        ),
        (
            json!({"command":"send","id":"c","text":"x","timeout_ms":2_147_483_648_i64}),
            "send",
            "Field 'timeout_ms' must be an integer from 0 to 2147483647, got 2147483648",
        ),
        (
            json!({"command":"send","id":"c","text":"x","timeout_ms":"100"}),
            "send",
            "Field 'timeout_ms' must be an integer from 0 to 2147483647, got \"100\"",
        ),
        (
            json!({"command":"send_raw","id":"c","text":5}),
            "send_raw",
            "Field 'text' must be a string, got a number",
        ),
        (
            json!({"command":"send_raw","id":"c","message":[1,2]}),
            "send_raw",
            "Field 'message' must be a string, got an array",
        ),
        (
            json!({"command":"send_raw","id":"c","text":"x","content_type":5}),
            "send_raw",
            "Field 'content_type' must be a string, got a number",
        ),
        (
            json!({"command":"list","filters":{"venue":1}}),
            "list",
            "Field 'filters.venue' must be a string, got a number",
        ),
        (
            json!({"command":"list","filters":[{"key":"a","value":"b"}]}),
            "list",
            "Field 'filters' must be an object of strings, got an array",
        ),
        (
            json!({"command":"publish","id":"c","topic":["t"]}),
            "publish",
            "Field 'topic' must be a string, got an array",
        ),
        (
            json!({"command":"set_tag","id":"c","key":"k","value":3}),
            "set_tag",
            "Field 'value' must be a string, got a number",
        ),
        (
            json!({"command":"set_tags","id":"c","tags":"a=b"}),
            "set_tags",
            "Field 'tags' must be an object of strings, got a string",
        ),
        (
            json!({"command":"set_tags","id":"c","tags":{"a":null}}),
            "set_tags",
            "Field 'tags.a' must be a string, got null",
        ),
    ];
    for (data, command, message) in cases {
        assert_refused(data, command, "BAD_REQUEST", message);
    }
}

#[test]
fn invalid_base64_message_gets_a_bad_request_reply() {
    for command in ["send_raw", "send"] {
        for message in ["not base64!", "a", "a===", "€", "aGk=aGk=", "aGk*"] {
            assert_refused(
                json!({"command": command, "id": "c", "message": message}),
                command,
                "BAD_REQUEST",
                "Field 'message' must be base64",
            );
        }
    }
}

#[test]
fn both_message_and_text_get_a_bad_request_reply() {
    for command in ["send_raw", "send"] {
        assert_refused(
            json!({"command": command, "id": "c", "message": "aGk=", "text": "hi"}),
            command,
            "BAD_REQUEST",
            "Fields 'message' and 'text' are mutually exclusive; send one",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ABI version
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------------------------

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
