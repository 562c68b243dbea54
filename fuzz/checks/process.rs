//! What the `process` fuzz target checks, in one place: the libFuzzer target, the stable corpus
//! replay (tests/fuzz_corpus.rs) and the home-grown mutation fuzzer (tests/process_fuzz.rs) include
//! this file with `#[path]`, so each checks exactly the same contract.
//!
//! One input is one `Process` call through the plugin's real export, with a host whose gateway
//! answers from a script that the input itself carries, so that the reply-decoding path is fuzzed as
//! well as the event and command parsing:
//!
//! ```text
//! byte 0      flags: bit 0  host abi_version 2 (must get ABI_MISMATCH and no gateway call)
//!                    bit 1  host without a log callback
//!                    bit 2  host without a gateway_call callback
//!                    bits 3-5  connections this worker already created (0-7), so `stop` has work
//! byte 1      number of scripted gateway replies (low 4 bits)
//! per reply   tag (u8), body length (u16 LE), body (cut short at the end of the input)
//!               tag & 7: 0 status 0 + body      1 status 0 + NULL body
//!                        2 status s + body      3 status s + NULL body
//!                        4 status 0 + body with a negative length; 5-7 as 0
//!               s = tag >> 3, or -1 when that is 0
//! rest        the CloudEvent FlatBuffer, passed to `Process` exactly as the host passes it
//! ```
//!
//! Gateway calls beyond the script get a canned success per method. The host is the tests' scripted
//! host, tests/support/host.rs, which every includer provides as `crate::host` (the tests through
//! their `support` module, the fuzz target with `#[path]`); it calls the linked `Process`. The checks:
//! `Process` returns 0 with a reply (the arguments are always valid), never panics (libFuzzer aborts
//! on any panic, even a caught one; the replay sees the panic reply's `error_message`), the reply is a
//! well-formed `WorkerResponse` whose event follows SPEC §3 (see [`check`]), `FreeResult` releases it,
//! the host finds no ABI problem (every callback gets `engine_ptr` as its context, every log line is a
//! level 0-4 UTF-8 string, every gateway request has a JSON body), every gateway request is
//! `websocketmanager.<Method>`, and every gateway buffer is handed back exactly once.
//!
//! The code tables below (commands, the plugin's codes, gRPC's) are this oracle's own on purpose: it
//! checks the plugin against SPEC §3, not against the plugin's own lists.
#![allow(dead_code)] // each includer uses a different part

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use controller::generated::{CloudEvent, WorkerResponse};
use serde_json::Value;

use crate::host::{Canned, Plugin, Request, ScriptedHost};

pub const SOURCE: &str = "urn:com.virtufin.worker.websocketmanagercontroller";
pub const RESPONSE_TYPE: &str = "response.websocketmanagercontroller";
pub const SERVICE: &str = "websocketmanager";
pub const METHODS: [&str; 14] = [
    "Connect",
    "SendRaw",
    "StartPublish",
    "StopPublish",
    "Send",
    "List",
    "Disconnect",
    "SetTag",
    "GetTag",
    "SetTags",
    "GetTags",
    "Rotate",
    "Subscribe",
    "Unsubscribe",
];
/// `data.command` of a reply: the canonical command names of SPEC §3, or `error`.
const COMMANDS: [&str; 16] = [
    "create",
    "subscribe",
    "unsubscribe",
    "publish",
    "stop_publish",
    "send_raw",
    "send",
    "list",
    "disconnect",
    "set_tag",
    "get_tag",
    "set_tags",
    "get_tags",
    "rotate",
    "stop",
    "error",
];
/// The plugin's own failure codes (SPEC §3); the others are WSM's gRPC code names.
const PLUGIN_CODES: [&str; 4] = [
    "BAD_REQUEST",
    "UNKNOWN_COMMAND",
    "ABI_MISMATCH",
    "GATEWAY_ERROR",
];
/// gRPC's error codes; `OK` is not one, so a failure reply never carries it.
const GRPC_ERROR_CODES: [&str; 16] = [
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub const FLAG_ABI_MISMATCH: u8 = 1;
pub const FLAG_NO_LOG: u8 = 2;
pub const FLAG_NO_GATEWAY: u8 = 4;

/// How the scripted gateway answers one call, as a fuzz input spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Status 0 with this body.
    Ok(Vec<u8>),
    /// Status 0 with a NULL body.
    OkNull,
    /// This non-zero status with this body.
    Fail(i32, Vec<u8>),
    /// This non-zero status with a NULL body.
    FailNull(i32),
    /// Status 0 with this body but a negative `resp_len` (a broken host).
    NegativeLength(Vec<u8>),
}

impl Answer {
    /// What the scripted host serves for it.
    fn canned(&self) -> Canned {
        match self {
            Answer::Ok(body) => Canned::Bytes(0, body.clone().into()),
            Answer::OkNull => Canned::OkEmpty,
            Answer::Fail(status, body) => Canned::Bytes(*status, body.clone().into()),
            Answer::FailNull(status) => Canned::FailNoBody(*status),
            Answer::NegativeLength(body) => Canned::NegativeLength(body.clone().into()),
        }
    }
}

/// One decoded fuzz input.
#[derive(Clone, Debug)]
pub struct Case<'a> {
    pub flags: u8,
    pub script: Vec<Answer>,
    pub event: &'a [u8],
}

impl Case<'_> {
    /// Decodes any bytes; missing parts are empty.
    pub fn parse(data: &[u8]) -> Case<'_> {
        let flags = data.first().copied().unwrap_or(0);
        let count = data.get(1).map_or(0, |n| usize::from(n & 0x0f));
        let mut rest = data.get(2..).unwrap_or_default();
        let mut script = Vec::with_capacity(count);
        for _ in 0..count {
            let Some((&tag, after)) = rest.split_first() else {
                break;
            };
            let len = match after {
                [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
                _ => 0,
            };
            let after = after.get(2..).unwrap_or_default();
            let (body, after) = after.split_at(len.min(after.len()));
            rest = after;
            let status = match i32::from(tag >> 3) {
                0 => -1,
                s => s,
            };
            script.push(match tag & 7 {
                1 => Answer::OkNull,
                2 => Answer::Fail(status, body.to_vec()),
                3 => Answer::FailNull(status),
                4 => Answer::NegativeLength(body.to_vec()),
                _ => Answer::Ok(body.to_vec()),
            });
        }
        Case {
            flags,
            script,
            event: rest,
        }
    }

    /// Bytes that [`Case::parse`] reads back as `flags`, `script` and `event` (for seeds).
    pub fn encode(flags: u8, script: &[Answer], event: &[u8]) -> Vec<u8> {
        assert!(script.len() < 16, "at most 15 scripted replies");
        let mut out = vec![flags, script.len() as u8];
        for answer in script {
            let (tag, body): (u8, &[u8]) = match answer {
                Answer::Ok(body) => (0, body),
                Answer::OkNull => (1, &[]),
                Answer::Fail(status, body) => (2 | status_bits(*status), body),
                Answer::FailNull(status) => (3 | status_bits(*status), &[]),
                Answer::NegativeLength(body) => (4, body),
            };
            let len = u16::try_from(body.len()).expect("a scripted body fits in 64 KiB");
            out.push(tag);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(body);
        }
        out.extend_from_slice(event);
        out
    }

    fn abi_version(&self) -> i32 {
        if self.flags & FLAG_ABI_MISMATCH != 0 {
            2
        } else {
            1
        }
    }

    fn precreated(&self) -> usize {
        usize::from((self.flags >> 3) & 7)
    }
}

fn status_bits(status: i32) -> u8 {
    match status {
        1..=31 => (status as u8) << 3,
        // -1 and anything the tag cannot hold.
        _ => 0,
    }
}

/// The script of the input being run, and whether it served WSM's `INTERNAL` code.
#[derive(Default)]
struct Script {
    answers: Vec<Answer>,
    next: usize,
    served_internal: bool,
}

static SCRIPT: Mutex<Option<Script>> = Mutex::new(None);
/// One call at a time: the script above is shared.
static RUN: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The next scripted answer, then WSM's success for the method.
fn scripted(request: &Request<'_>) -> Canned {
    let mut guard = lock(&SCRIPT);
    let script = guard.get_or_insert_with(Script::default);
    let Some(answer) = script.answers.get(script.next) else {
        return Canned::Bytes(0, default_answer(request.method).as_bytes().into());
    };
    script.next += 1;
    if let Answer::Fail(_, body) = answer {
        script.served_internal |= names_internal(body);
    }
    answer.canned()
}

/// The eight hosts (one per combination of the low three flags), leaked once so that their
/// addresses, and with them the plugin's worker keys, never change.
fn host(flags: u8) -> &'static ScriptedHost {
    static HOSTS: OnceLock<[&'static ScriptedHost; 8]> = OnceLock::new();
    let hosts = HOSTS.get_or_init(|| {
        std::array::from_fn(|i| {
            let i = i as u8;
            let mut host = ScriptedHost::answering(scripted);
            let table = host.table_mut();
            table.abi_version = if i & FLAG_ABI_MISMATCH != 0 { 2 } else { 1 };
            if i & FLAG_NO_LOG != 0 {
                table.log = None;
            }
            if i & FLAG_NO_GATEWAY != 0 {
                table.gateway_call = None;
            }
            &*Box::leak(Box::new(host))
        })
    });
    hosts[usize::from(flags & 7)]
}

/// What the default gateway answers once the script is used up: WSM's success for each method.
fn default_answer(method: &str) -> &'static str {
    match method {
        "Connect" => r#"{"id":"fz-1","status":"connected"}"#,
        "Send" => r#"{"response":"cG9uZw=="}"#,
        "List" => {
            r#"{"connections":[{"id":"fz-1","url":"ws://x","status":"connected","topic":"t","instanceId":"i","tags":{"a":"b"}}]}"#
        }
        "GetTag" => r#"{"value":"v"}"#,
        "GetTags" => r#"{"tags":{"a":"b"}}"#,
        "Rotate" => r#"{"overlap":true,"duplicates":"3","tookMs":"120"}"#,
        _ => "{}",
    }
}

/// Whether a failure body is WSM's `{"code": INTERNAL|13}` (in any spelling SPEC §3 accepts), the one
/// way an `INTERNAL` reply is not the plugin's own fault. Read like any JSON object with a `code`:
/// other members are skipped unread, so bytes in them that are not UTF-8 do not hide the code.
fn names_internal(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Status {
        code: Value,
    }
    match serde_json::from_slice::<Status>(body).map(|s| s.code) {
        Ok(Value::String(name)) => name.replace('_', "").eq_ignore_ascii_case("internal"),
        Ok(Value::Number(n)) => n.as_u64() == Some(13),
        _ => false,
    }
}

/// The worker key the plugin derives from a host table (`abi::Host::worker_key`).
fn worker_key(host: &ScriptedHost) -> (usize, usize) {
    (host.table() as usize, host.engine_ptr() as usize)
}

/// Runs one input through `Process` and checks everything; `Err` says what is wrong.
pub fn run(data: &[u8]) -> Result<(), String> {
    let _one_at_a_time = lock(&RUN);
    let case = Case::parse(data);
    let host = host(case.flags);
    // Every input starts from the same worker state: `precreated` connections and nothing else.
    let worker = controller::state::for_worker(worker_key(host));
    for id in worker.created() {
        worker.forget(&id);
    }
    for n in 0..case.precreated() {
        worker.remember(&format!("fz-conn-{n}"));
    }
    host.reset();
    *lock(&SCRIPT) = Some(Script {
        answers: case.script.clone(),
        ..Script::default()
    });
    // An exact-size allocation, so that a read past `in_len` is a read past the buffer.
    let input: Box<[u8]> = case.event.into();
    let (rc, out, out_len, reply) = Plugin::linked().process_with(
        host.table(),
        input.as_ptr(),
        input.len() as i32,
        |rc, out, out_len| {
            let copy = usize::try_from(out_len)
                .ok()
                .filter(|&len| len > 0 && !out.is_null())
                // SAFETY: Process returned `out_len` readable bytes at `out`.
                .map(|len| unsafe { std::slice::from_raw_parts(out, len) }.to_vec());
            (rc, out, out_len, copy)
        },
    );
    let served_internal = lock(&SCRIPT).take().is_some_and(|s| s.served_internal);
    if rc != 0 {
        return Err(format!(
            "Process returned {rc} for valid arguments (out_buf {}, out_len {out_len})",
            if out.is_null() { "NULL" } else { "set" }
        ));
    }
    let Some(reply) = reply else {
        return Err(format!(
            "Process returned 0 with out_buf {out:p} and out_len {out_len}"
        ));
    };
    if let Some(problem) = host.problems().first() {
        return Err(format!("host callbacks: {problem}"));
    }
    if host.outstanding() != 0 {
        return Err(format!(
            "{} gateway buffer(s) never handed back with free_response",
            host.outstanding()
        ));
    }
    let calls = host.take_calls();
    for call in &calls {
        if call.service != SERVICE || !METHODS.contains(&call.method.as_str()) {
            return Err(format!("gateway call {}.{}", call.service, call.method));
        }
    }
    let facts = Facts {
        abi_version: case.abi_version(),
        internal_from_gateway: served_internal,
    };
    check(case.event, &reply, &facts)?;
    if case.abi_version() != 1 && !calls.is_empty() {
        return Err(format!(
            "ABI version {} but {} gateway call(s)",
            case.abi_version(),
            calls.len()
        ));
    }
    Ok(())
}

/// What the host did that the reply may legitimately reflect.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    pub abi_version: i32,
    /// The gateway answered a call with WSM's `INTERNAL` code, so an `INTERNAL` reply is WSM's.
    pub internal_from_gateway: bool,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            abi_version: 1,
            internal_from_gateway: false,
        }
    }
}

/// What the reply must say about a decodable event.
pub struct Expect {
    pub correlation: Option<String>,
    pub subject: Option<String>,
    pub event_type: String,
}

/// Decodes the input the way the plugin must: `None` when it is not a CloudEvent FlatBuffer.
pub fn expectation(input: &[u8]) -> Option<Expect> {
    let event = flatbuffers::root::<CloudEvent>(input).ok()?;
    let first = |name: &str| {
        event
            .extensions()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e.name()?, e.value()?)))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_owned())
    };
    Some(Expect {
        correlation: first("correlationid"),
        subject: event.subject().map(str::to_owned),
        event_type: first("response_type")
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| RESPONSE_TYPE.to_owned()),
    })
}

/// Checks one reply against its input (SPEC §1 and §3); `Err` says what is wrong.
pub fn check(input: &[u8], out: &[u8], facts: &Facts) -> Result<(), String> {
    let resp = flatbuffers::root::<WorkerResponse>(out)
        .map_err(|e| format!("reply is not a valid WorkerResponse: {e}"))?;
    if let Some(m) = resp.error_message() {
        return Err(format!(
            "error_message set (a panic inside the plugin?): {m}"
        ));
    }
    let ev = resp.result_event().ok_or("reply without result_event")?;
    let id = ev.id().ok_or("reply without id")?;
    uuid::Uuid::parse_str(id).map_err(|e| format!("reply id {id:?}: {e}"))?;
    if ev.source() != Some(SOURCE) {
        return Err(format!("source {:?}", ev.source()));
    }
    if ev.specversion() != Some("1.0") || ev.datacontenttype() != Some("application/json") {
        return Err("specversion or datacontenttype".into());
    }
    if !ev.time().is_some_and(|t| t.len() >= 20 && t.ends_with('Z')) {
        return Err(format!("time {:?}", ev.time()));
    }
    let data = ev.data().map(|d| d.bytes()).unwrap_or_default();
    let data: Value =
        serde_json::from_slice(data).map_err(|e| format!("reply data is not JSON: {e}"))?;
    let command = data["command"].as_str().ok_or("data.command missing")?;
    if !COMMANDS.contains(&command) {
        return Err(format!("data.command {command:?} names no command"));
    }
    let success = data["success"].as_bool().ok_or("data.success missing")?;
    if !success {
        let code = data["code"].as_str().ok_or("data.code missing")?;
        data["message"].as_str().ok_or("data.message missing")?;
        if code == "INTERNAL" && !facts.internal_from_gateway {
            return Err(format!("INTERNAL reply: {data}"));
        }
        if !PLUGIN_CODES.contains(&code) && !GRPC_ERROR_CODES.contains(&code) {
            return Err(format!(
                "failure code {code:?} is not a documented one: {data}"
            ));
        }
    }
    let extensions: Vec<(String, String)> = ev
        .extensions()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e.name().unwrap_or_default().to_owned(),
                e.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    match expectation(input) {
        None => {
            if command != "error" || success || data["code"] != "BAD_REQUEST" {
                return Err(format!("undecodable input did not get BAD_REQUEST: {data}"));
            }
            if !extensions.is_empty() || ev.subject().is_some() {
                return Err(format!("undecodable input got extensions {extensions:?}"));
            }
            if ev.type_() != Some(RESPONSE_TYPE) {
                return Err(format!("type {:?}", ev.type_()));
            }
        }
        Some(expect) => {
            if facts.abi_version != 1
                && (command != "error" || success || data["code"] != "ABI_MISMATCH")
            {
                return Err(format!(
                    "ABI version {} did not get ABI_MISMATCH: {data}",
                    facts.abi_version
                ));
            }
            let want: Vec<(String, String)> = expect
                .correlation
                .map(|c| vec![("correlationid".to_owned(), c)])
                .unwrap_or_default();
            if extensions != want {
                return Err(format!("extensions {extensions:?}, expected {want:?}"));
            }
            if ev.subject().map(str::to_owned) != expect.subject {
                return Err(format!(
                    "subject {:?}, expected {:?}",
                    ev.subject(),
                    expect.subject
                ));
            }
            if ev.type_() != Some(expect.event_type.as_str()) {
                return Err(format!(
                    "type {:?}, expected {}",
                    ev.type_(),
                    expect.event_type
                ));
            }
        }
    }
    Ok(())
}
