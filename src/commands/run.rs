//! A validated [`Command`] → WSM calls → the reply's extras: the only part of a command that talks
//! to WSM, and the only one that changes the worker's remembered connections.

use serde_json::json;

use super::parse::Command;
use super::reply::{Extra, Extras};
use super::Context;
use crate::error::ReplyError;
use crate::gateway::{
    self, GetTagRequest, ListRequest, SendRawRequest, SendRequest, SetTagRequest, SetTagsRequest,
    Transport,
};

pub(super) fn run<T: Transport + ?Sized>(
    command: Command,
    ctx: &Context<'_, T>,
) -> Result<Extras, ReplyError> {
    let wsm = &ctx.wsm;
    let mut extras = Extras::with_capacity(4);
    match command {
        Command::Create(req) => {
            let resp = wsm.connect(req)?;
            ctx.worker.remember(&resp.id);
            extras.push(("id", resp.id.into()));
            extras.push(("status", resp.status.into()));
            extras.push(("message", "connected".into()));
        }
        Command::Subscription {
            id,
            method,
            params,
            request_id,
        } => {
            let request_id = request_id.unwrap_or_else(|| ctx.worker.next_request_id());
            // Field order as exchanges document it: method, params, id.
            #[derive(serde::Serialize)]
            struct Subscription<'a> {
                method: &'a str,
                params: &'a [String],
                id: u64,
            }
            let message = serde_json::to_vec(&Subscription {
                method,
                params: &params,
                id: request_id,
            })
            .map_err(|e| {
                ReplyError::internal(format!("could not encode the {method} frame: {e}"))
            })?;
            wsm.send_raw(SendRawRequest {
                id: &id,
                message: gateway::encode_bytes(&message),
                content_type: "application/json",
                replay_on_reconnect: true,
            })?;
            extras.push(("id", id.into()));
            extras.push(("request_id", request_id.into()));
        }
        Command::Publish { id, topic } => {
            wsm.start_publish(&id, &topic)?;
            extras.push(("id", id.into()));
            extras.push(("topic", topic.into()));
        }
        Command::StopPublish { id } => {
            wsm.stop_publish(&id)?;
            extras.push(("id", id.into()));
        }
        Command::SendRaw {
            id,
            payload,
            content_type,
        } => {
            wsm.send_raw(SendRawRequest {
                id: &id,
                message: gateway::encode_bytes(&payload),
                content_type: &content_type,
                replay_on_reconnect: false,
            })?;
            extras.push(("id", id.into()));
        }
        Command::Send {
            id,
            payload,
            content_type,
            timeout_ms,
        } => {
            let response = wsm.send(&SendRequest {
                id: &id,
                message: gateway::encode_bytes(&payload),
                timeout_ms,
                content_type: &content_type,
            })?;
            extras.push(("id", id.into()));
            extras.push(("response", gateway::encode_bytes(&response).into()));
            if let Ok(text) = String::from_utf8(response) {
                extras.push(("response_text", text.into()));
            }
        }
        Command::List { filters } => {
            let resp = wsm.list(&ListRequest { filters })?;
            // Rows are `{id,url,status,topic,instance_id,tags}`: `Connection`'s own serialization.
            let rows = serde_json::value::to_raw_value(&resp.connections).map_err(|e| {
                ReplyError::internal(format!("could not encode the list reply: {e}"))
            })?;
            extras.push(("connections", Extra::Raw(rows)));
        }
        Command::Disconnect { id } => {
            let result = wsm.disconnect(&id);
            if result.is_ok() || is_not_found(&result) {
                ctx.worker.forget(&id);
            }
            result?;
            extras.push(("id", id.into()));
        }
        Command::SetTag { id, key, value } => {
            wsm.set_tag(&SetTagRequest {
                id: &id,
                key: &key,
                value: &value,
            })?;
            extras.push(("id", id.into()));
        }
        Command::GetTag { id, key } => {
            let value = wsm.get_tag(&GetTagRequest { id: &id, key: &key })?;
            extras.push(("id", id.into()));
            extras.push(("key", key.into()));
            extras.push(("value", value.into()));
        }
        Command::SetTags { id, tags } => {
            wsm.set_tags(&SetTagsRequest {
                id: &id,
                tags: &tags,
            })?;
            extras.push(("id", id.into()));
        }
        Command::GetTags { id } => {
            let tags = wsm.get_tags(&id)?;
            extras.push(("id", id.into()));
            extras.push(("tags", json!(tags).into()));
        }
        Command::Rotate { id } => {
            let rotated = wsm.rotate(&id)?;
            extras.push(("id", id.into()));
            extras.push(("overlap", rotated.overlap.into()));
            extras.push(("duplicates", rotated.duplicates.into()));
            extras.push(("took_ms", rotated.took_ms.into()));
        }
        Command::Stop => {
            let closed = stop(ctx)?;
            extras.push((
                "message",
                format!("disconnected {closed} connections").into(),
            ));
        }
    }
    Ok(extras)
}

/// Disconnects every connection this worker created. Ids WSM no longer knows are forgotten quietly;
/// the others that fail stay remembered, so a later `stop` retries them.
fn stop<T: Transport + ?Sized>(ctx: &Context<'_, T>) -> Result<usize, ReplyError> {
    let mut closed = 0;
    let mut failures: Vec<(String, ReplyError)> = Vec::new();
    for id in ctx.worker.created() {
        let result = ctx.wsm.disconnect(&id);
        if result.is_ok() || is_not_found(&result) {
            ctx.worker.forget(&id);
        }
        match result {
            Ok(()) => closed += 1,
            Err(e) if e.code == "NOT_FOUND" => {}
            Err(e) => failures.push((id, e)),
        }
    }
    let Some((_, first)) = failures.first() else {
        return Ok(closed);
    };
    const SHOWN: usize = 5;
    let mut detail: Vec<String> = failures
        .iter()
        .take(SHOWN)
        .map(|(id, e)| format!("{id}: {e}"))
        .collect();
    if failures.len() > SHOWN {
        detail.push(format!("and {} more", failures.len() - SHOWN));
    }
    Err(ReplyError::new(
        first.code.clone(),
        format!(
            "disconnected {closed} connections; {} could not be disconnected and stay tracked \
             for the next stop ({})",
            failures.len(),
            detail.join("; ")
        ),
    ))
}

fn is_not_found<T>(result: &Result<T, ReplyError>) -> bool {
    matches!(result, Err(e) if e.code == "NOT_FOUND")
}
