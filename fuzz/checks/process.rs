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
//! Gateway calls beyond the script get a canned success per method. The checks: `Process` returns 0
//! with a reply (the arguments are always valid), never panics (libFuzzer aborts on any panic, even a
//! caught one; the replay sees the panic reply's `error_message`), the reply is a well-formed
//! `WorkerResponse` whose event follows SPEC §3 (see [`check`]), `FreeResult` releases it, every
//! callback gets `engine_ptr` as its context, every log line is a level 0-4 UTF-8 string, every
//! gateway request is `websocketmanager.<Method>` with a JSON body, and every gateway buffer is handed
//! back exactly once.
#![allow(dead_code)] // each includer uses a different part

use std::collections::HashSet;
use std::ffi::{c_char, c_void, CStr};
use std::ptr;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use controller::generated::{CloudEvent, WorkerResponse};
use controller::VirtufinHost;
use serde_json::Value;

pub const SOURCE: &str = "urn:com.virtufin.worker.websocketmanagercontroller";
pub const RESPONSE_TYPE: &str = "response.websocketmanagercontroller";
pub const SERVICE: &str = "websocketmanager";
pub const METHODS: [&str; 13] = [
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
    "Subscribe",
    "Unsubscribe",
];
/// `data.command` of a reply: the canonical command names of SPEC §3, or `error`.
const COMMANDS: [&str; 15] = [
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

/// How the scripted gateway answers one call.
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

/// What the host saw during one call.
#[derive(Default)]
struct HostLog {
    script: Vec<Answer>,
    next: usize,
    /// `(service, method)` of every gateway call.
    calls: Vec<(String, String)>,
    /// Gateway buffers handed out and not yet returned, by address.
    outstanding: HashSet<usize>,
    /// Whether a failure body that names WSM's `INTERNAL` code was served.
    served_internal: bool,
    problems: Vec<String>,
}

// Each callback receives `ENGINE`'s address as its context; the state lives in a static so that the
// worker key (table address, engine pointer) stays the same across inputs and the plugin's
// per-worker registry does not grow with the number of inputs.
static ENGINE: Mutex<Option<HostLog>> = Mutex::new(None);
/// One call at a time: the host state above is shared.
static RUN: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn engine_ptr() -> *mut c_void {
    &ENGINE as *const Mutex<Option<HostLog>> as *mut c_void
}

fn with_log(ctx: *mut c_void, f: impl FnOnce(&mut HostLog)) {
    let mut guard = lock(&ENGINE);
    let Some(log) = guard.as_mut() else { return };
    if ctx != engine_ptr() {
        log.problems
            .push(format!("a callback got ctx {ctx:p}, not engine_ptr"));
    }
    f(log);
}

/// The eight host tables (one per combination of the low three flags), leaked once so that their
/// addresses, and with them the plugin's worker keys, never change.
fn table(flags: u8) -> *const VirtufinHost {
    static TABLES: OnceLock<[usize; 8]> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        std::array::from_fn(|i| {
            let i = i as u8;
            let table = Box::new(VirtufinHost {
                engine_ptr: engine_ptr(),
                abi_version: if i & FLAG_ABI_MISMATCH != 0 { 2 } else { 1 },
                log: (i & FLAG_NO_LOG == 0).then_some(host_log as _),
                gateway_call: (i & FLAG_NO_GATEWAY == 0).then_some(host_gateway_call as _),
                free_response: Some(host_free_response),
            });
            Box::into_raw(table) as usize
        })
    });
    tables[usize::from(flags & 7)] as *const VirtufinHost
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, msg: *const c_char) {
    with_log(ctx, |log| {
        if !(0..=4).contains(&level) {
            log.problems.push(format!("log level {level}"));
        }
        if msg.is_null() {
            log.problems.push("log(NULL)".into());
            return;
        }
        // SAFETY: the ABI passes a NUL-terminated string, borrowed for this call.
        if let Err(e) = unsafe { CStr::from_ptr(msg) }.to_str() {
            log.problems.push(format!("log message is not UTF-8: {e}"));
        }
    });
}

unsafe extern "C" fn host_gateway_call(
    ctx: *mut c_void,
    service: *const c_char,
    method: *const c_char,
    req: *const u8,
    req_len: i32,
    resp: *mut *mut u8,
    resp_len: *mut i32,
) -> i32 {
    let mut status = -1;
    with_log(ctx, |log| {
        if service.is_null() || method.is_null() || resp.is_null() || resp_len.is_null() {
            log.problems
                .push("gateway_call with a NULL service, method or out-pointer".into());
            return;
        }
        // SAFETY: the ABI passes NUL-terminated names.
        let (service, method) = unsafe { (CStr::from_ptr(service), CStr::from_ptr(method)) };
        let (service, method) = (
            service.to_string_lossy().into_owned(),
            method.to_string_lossy().into_owned(),
        );
        let body = match usize::try_from(req_len) {
            Ok(0) => &[][..],
            Ok(_) if req.is_null() => {
                log.problems
                    .push(format!("{method}: NULL request with length {req_len}"));
                &[][..]
            }
            // SAFETY: the ABI passes `req_len` readable bytes.
            Ok(len) => unsafe { std::slice::from_raw_parts(req, len) },
            Err(_) => {
                log.problems
                    .push(format!("{method}: negative request length {req_len}"));
                &[][..]
            }
        };
        if let Err(e) = serde_json::from_slice::<Value>(body) {
            log.problems
                .push(format!("{service}.{method} request body is not JSON: {e}"));
        }
        let answer = match log.script.get(log.next) {
            Some(answer) => {
                log.next += 1;
                answer.clone()
            }
            None => Answer::Ok(default_answer(&method).as_bytes().to_vec()),
        };
        log.calls.push((service, method));
        let (code, body, len) = match answer {
            Answer::Ok(body) => (0, Some(body.clone()), body.len() as i32),
            Answer::OkNull => (0, None, 0),
            Answer::Fail(s, body) => {
                log.served_internal |= names_internal(&body);
                (s, Some(body.clone()), body.len() as i32)
            }
            Answer::FailNull(s) => (s, None, 0),
            Answer::NegativeLength(body) => (0, Some(body), -1),
        };
        status = code;
        let buf = match body {
            Some(body) => {
                // SAFETY: a plain allocation of at least one byte, filled from `body`.
                let buf = unsafe { libc::malloc(body.len().max(1)) }.cast::<u8>();
                if buf.is_null() {
                    log.problems.push("malloc failed in the test host".into());
                    ptr::null_mut()
                } else {
                    // SAFETY: `buf` holds `body.len()` bytes.
                    unsafe { ptr::copy_nonoverlapping(body.as_ptr(), buf, body.len()) };
                    log.outstanding.insert(buf as usize);
                    buf
                }
            }
            None => ptr::null_mut(),
        };
        // SAFETY: checked non-NULL above; the ABI makes them writable.
        unsafe {
            *resp = buf;
            *resp_len = if buf.is_null() { 0 } else { len };
        }
    });
    status
}

unsafe extern "C" fn host_free_response(ctx: *mut c_void, resp: *mut u8) {
    with_log(ctx, |log| {
        if resp.is_null() {
            log.problems.push("free_response(NULL)".into());
        } else if log.outstanding.remove(&(resp as usize)) {
            // SAFETY: handed out by `host_gateway_call` with malloc and not yet freed.
            unsafe { libc::free(resp.cast()) };
        } else {
            log.problems.push(format!(
                "free_response({resp:p}): not a gateway buffer, or freed twice"
            ));
        }
    });
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
fn worker_key(table: *const VirtufinHost) -> (usize, usize) {
    (table as usize, engine_ptr() as usize)
}

/// Runs one input through `Process` and checks everything; `Err` says what is wrong.
pub fn run(data: &[u8]) -> Result<(), String> {
    let _one_at_a_time = lock(&RUN);
    let case = Case::parse(data);
    let table = table(case.flags);
    // Every input starts from the same worker state: `precreated` connections and nothing else.
    let worker = controller::state::for_worker(worker_key(table));
    for id in worker.created() {
        worker.forget(&id);
    }
    for n in 0..case.precreated() {
        worker.remember(&format!("fz-conn-{n}"));
    }
    *lock(&ENGINE) = Some(HostLog {
        script: case.script.clone(),
        ..HostLog::default()
    });
    // An exact-size allocation, so that a read past `in_len` is a read past the buffer.
    let input: Box<[u8]> = case.event.into();
    let mut out: *mut u8 = ptr::null_mut();
    let mut out_len: i32 = -1;
    // SAFETY: a valid host table, `input.len()` readable bytes, out-pointers to our locals.
    let rc = unsafe {
        controller::Process(
            table,
            input.as_ptr(),
            input.len() as i32,
            &mut out,
            &mut out_len,
        )
    };
    let reply = if out.is_null() {
        None
    } else {
        let copy = usize::try_from(out_len)
            .ok()
            .filter(|&len| len > 0)
            // SAFETY: Process returned `out_len` readable bytes at `out`.
            .map(|len| unsafe { std::slice::from_raw_parts(out, len) }.to_vec());
        // SAFETY: released exactly once, as the ABI requires.
        unsafe { controller::FreeResult(out) };
        copy
    };
    let host = lock(&ENGINE).take().unwrap_or_default();
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
    if let Some(problem) = host.problems.first() {
        return Err(format!("host callbacks: {problem}"));
    }
    if !host.outstanding.is_empty() {
        return Err(format!(
            "{} gateway buffer(s) never handed back with free_response",
            host.outstanding.len()
        ));
    }
    for (service, method) in &host.calls {
        if service != SERVICE || !METHODS.contains(&method.as_str()) {
            return Err(format!("gateway call {service}.{method}"));
        }
    }
    let facts = Facts {
        abi_version: case.abi_version(),
        internal_from_gateway: host.served_internal,
    };
    check(case.event, &reply, &facts)?;
    if case.abi_version() != 1 && !host.calls.is_empty() {
        return Err(format!(
            "ABI version {} but {} gateway call(s)",
            case.abi_version(),
            host.calls.len()
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
