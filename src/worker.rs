//! One `Process` call in safe code: decode the event, check the ABI, run the command, log the outcome,
//! and encode the reply event.

use crate::abi::{Host, LogLevel, VIRTUFIN_ABI_VERSION};
use crate::commands::{self, Context, Reply};
use crate::error::{ReplyError, ABI_MISMATCH, GATEWAY_ERROR, INTERNAL};
use crate::event::{self, InboundEvent, OutboundEvent};
use crate::gateway::{Compat, Wsm};
use crate::{clock, state};

/// The reply's `source`.
pub const SOURCE: &str = "urn:com.virtufin.worker.websocketmanagercontroller";
/// The reply's default `type`, which is also the topic WorkManager publishes it to.
pub const RESPONSE_TYPE: &str = "response.websocketmanagercontroller";

/// Handles one command event and passes the encoded `WorkerResponse` to `sink`.
/// `input` is the event buffer, or why the host's arguments did not form one.
pub fn process<R>(
    host: Host<'_>,
    input: Result<&[u8], String>,
    sink: impl FnOnce(&[u8]) -> R,
) -> R {
    let decoded = input.and_then(|buf| {
        event::decode(buf)
            .map_err(|e| format!("the input is not a valid CloudEvent FlatBuffer: {e}"))
    });
    let (event, reply) = match decoded {
        Err(reason) => (
            InboundEvent::default(),
            Reply::error("error", ReplyError::bad_request(reason)),
        ),
        Ok(event) if host.abi_version() != VIRTUFIN_ABI_VERSION => {
            let reply = Reply::error(
                "error",
                ReplyError::new(
                    ABI_MISMATCH,
                    format!(
                        "host ABI version {} is not supported; this worker speaks ABI version \
                         {VIRTUFIN_ABI_VERSION}",
                        host.abi_version()
                    ),
                ),
            );
            (event, reply)
        }
        Ok(event) => {
            let reply = run(host, &event);
            (event, reply)
        }
    };
    log_outcome(host, &event, &reply);
    encode(&event, &reply, None, sink)
}

/// The reply after a panic inside the plugin: `INTERNAL`, with `error_message` set as well so that
/// WorkManager also surfaces it as a worker error. Re-decodes the input only to copy its correlation.
pub fn panic_reply<R>(
    host: Host<'_>,
    input: Result<&[u8], String>,
    panic: &str,
    sink: impl FnOnce(&[u8]) -> R,
) -> R {
    let event = input
        .ok()
        .and_then(|buf| event::decode(buf).ok())
        .unwrap_or_default();
    let message =
        format!("internal error in the controller worker: {panic}; the command may not have run");
    host.log(LogLevel::Error, &message);
    let reply = Reply::error("error", ReplyError::new(INTERNAL, message.clone()));
    encode(&event, &reply, Some(&message), sink)
}

fn run(host: Host<'_>, event: &InboundEvent<'_>) -> Reply {
    let compat = match event.wsm_compat {
        Some(v) if v.trim().eq_ignore_ascii_case("base") => Compat::Base,
        _ => Compat::Extended,
    };
    let worker = state::for_worker(host.worker_key());
    let ctx = Context {
        wsm: Wsm::new(&host, compat),
        worker: &worker,
    };
    commands::execute(event.data, &ctx)
}

/// Failures go to the host log; successes do not, since the reply itself records them and the
/// engine already traces every call at debug level.
fn log_outcome(host: Host<'_>, event: &InboundEvent<'_>, reply: &Reply) {
    let Err(e) = &reply.outcome else { return };
    let correlation = event
        .correlation_id
        .map(|c| format!(" (correlationid {c})"))
        .unwrap_or_default();
    // Caller mistakes are warnings; a broken gateway or plugin needs an operator.
    let level = if e.code == GATEWAY_ERROR || e.code == INTERNAL {
        LogLevel::Error
    } else {
        LogLevel::Warn
    };
    host.log(
        level,
        &format!(
            "command {} failed{correlation}: {e}; replied with success=false",
            reply.command
        ),
    );
}

fn encode<R>(
    event: &InboundEvent<'_>,
    reply: &Reply,
    error_message: Option<&str>,
    sink: impl FnOnce(&[u8]) -> R,
) -> R {
    let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id_buf);
    let time = clock::now_rfc3339();
    let data = reply.to_json();
    let out = OutboundEvent {
        id,
        event_type: event
            .response_type
            .filter(|t| !t.trim().is_empty())
            .unwrap_or(RESPONSE_TYPE),
        source: SOURCE,
        subject: event.subject,
        time: &time,
        data: &data,
        correlation_id: event.correlation_id,
        error_message,
    };
    event::encode_response(&out, sink)
}
