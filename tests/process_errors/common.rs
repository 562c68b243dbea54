//! Shared by the error tests: the scripted host, events, and checks of error replies and logs.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use crate::support::{Canned, Event, Plugin, Reply, ScriptedHost};
use serde_json::{json, Value};

const SOURCE: &str = "urn:com.virtufin.worker.websocketmanagercontroller";
const RESPONSE_TYPE: &str = "response.websocketmanagercontroller";

pub(crate) const WARN: i32 = 3;
pub(crate) const ERROR: i32 = 4;

pub(crate) fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(Plugin::load)
}

/// A scripted host that is never freed, so that no later host inherits its per-worker state by
/// address reuse. Gateway buffers are checked on drop unless `leaks` says how many may leak.
pub(crate) struct Host {
    inner: ManuallyDrop<ScriptedHost>,
    pub(crate) leaks: usize,
}

impl Host {
    pub(crate) fn new() -> Host {
        Host::with_abi(1)
    }

    pub(crate) fn with_abi(abi: i32) -> Host {
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

pub(crate) fn ok(body: &str) -> Canned {
    Canned::Ok(body.to_owned())
}

/// The command event `data` with correlation id `corr`.
pub(crate) fn event(data: Value, corr: &str) -> Vec<u8> {
    Event::json(&data).ext("correlationid", corr).encode()
}

pub(crate) fn raw_event(data: &[u8], corr: &str) -> Vec<u8> {
    Event::raw(data).ext("correlationid", corr).encode()
}

/// `Process` with an arbitrary byte buffer (copied into its own allocation of exactly its length).
pub(crate) fn call_bytes(host: &ScriptedHost, bytes: &[u8]) -> Reply {
    let owned = bytes.to_vec().into_boxed_slice();
    let (rc, out) = plugin().call_raw(host.table(), owned.as_ptr(), owned.len() as i32);
    assert_eq!(rc, 0, "Process returned {rc}");
    Reply::parse(&out.expect("Process returned 0 without a reply"))
}

/// Checks an error reply completely: data, envelope and correlation id.
pub(crate) fn assert_error(
    reply: &Reply,
    command: &str,
    code: &str,
    message: &str,
    corr: Option<&str>,
) {
    assert_eq!(
        reply.data,
        json!({"command": command, "success": false, "code": code, "message": message}),
    );
    assert_error_envelope(reply, corr);
}

pub(crate) fn assert_error_envelope(reply: &Reply, corr: Option<&str>) {
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
pub(crate) fn assert_logged(
    host: &ScriptedHost,
    level: i32,
    command: &str,
    corr: Option<&str>,
    code: &str,
) {
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
pub(crate) fn assert_refused(data: Value, command: &str, code: &str, message: &str) {
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
