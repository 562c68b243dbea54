//! Shared by the command tests: the scripted host, running events, and reading the calls.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{Canned, Event, Plugin, Reply, ScriptedHost};
use base64::Engine as _;
use serde_json::{json, Value};

const SOURCE: &str = "urn:com.virtufin.worker.websocketmanagercontroller";
pub(crate) const RESPONSE_TYPE: &str = "response.websocketmanagercontroller";

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(Plugin::load)
}

/// A scripted host that is never freed. The plugin keys per-worker state (request ids, created
/// connections) by the host table's address, so a host freed by one test could hand its state to
/// the next host allocated at the same address. Gateway buffers are still checked on drop.
pub(crate) struct Host(ManuallyDrop<ScriptedHost>);

impl Host {
    pub(crate) fn new() -> Host {
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

pub(crate) fn ok(body: &str) -> Canned {
    Canned::Ok(body.to_owned())
}

pub(crate) fn wsm_error(status: i32, code: &str, message: &str) -> Canned {
    Canned::Fail(
        status,
        json!({"code": code, "message": message}).to_string(),
    )
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("not standard base64 {text:?}: {e}"))
}

/// Runs one command (`data` as the event's JSON data) with no extensions.
pub(crate) fn run(host: &ScriptedHost, data: Value) -> Reply {
    plugin().call(host, &Event::json(&data).encode())
}

pub(crate) fn run_event(host: &ScriptedHost, event: &Event) -> Reply {
    plugin().call(host, &event.encode())
}

/// The calls since the last take, as (method, body); every one must go to `websocketmanager`.
pub(crate) fn take_calls(host: &ScriptedHost) -> Vec<(String, Value)> {
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
pub(crate) fn only_call(host: &ScriptedHost, method: &str) -> Value {
    let calls = take_calls(host);
    assert_eq!(calls.len(), 1, "expected exactly one call, got {calls:?}");
    let (got, body) = calls.into_iter().next().unwrap();
    assert_eq!(got, method);
    body
}

/// Seconds since the Unix epoch of a `YYYY-MM-DDTHH:MM:SS[.fraction]Z` timestamp.
pub(crate) fn parse_rfc3339_utc(text: &str) -> Option<i64> {
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
pub(crate) fn assert_envelope(
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

pub(crate) fn assert_subscription_call(
    body: &Value,
    id: &str,
    message: &str,
    replay: Option<bool>,
) {
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

pub(crate) fn create(host: &ScriptedHost, id: &str) {
    host.on(
        "Connect",
        Canned::Ok(json!({"id":id,"status":"connected"}).to_string()),
    );
    let reply = run(host, json!({"command":"create","url":"wss://x/ws"}));
    assert_eq!(reply.data["id"], id, "{:?}", reply.data);
    only_call(host, "Connect");
}
