//! Command JSON → typed command → WSM calls → reply `data` JSON. Knows no FFI and no FlatBuffers.
//!
//! Input is `{"command": "<name>", ...fields}` (or a JSON string holding such an object). Names are
//! case-insensitive and `-`/`_` are interchangeable. Unknown fields are ignored so that newer callers
//! work with this worker; known fields of the wrong type are refused with a message naming them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::error::{ReplyError, BAD_REQUEST, UNKNOWN_COMMAND};
use crate::gateway::{
    self, Compat, ConnectRequest, GetTagRequest, ListRequest, OutboundMessage, SendRawRequest,
    SendRequest, SetTagRequest, SetTagsRequest, StringMap, TagFilter, Transport, Wsm,
};
use crate::state::WorkerState;

/// Everything a command may use during one `Process` call.
pub struct Context<'a, T: Transport + ?Sized> {
    pub wsm: Wsm<'a, T>,
    pub worker: &'a WorkerState,
}

/// A successful command's reply fields after `command` and `success`, in reply order.
pub type Extras = Vec<(&'static str, Extra)>;

/// One reply field's value: a JSON value, or JSON already serialized from a typed response (`list`
/// rows go straight from WSM's response structs to the reply without a `Value` tree).
#[derive(Debug, Clone)]
pub enum Extra {
    Value(Value),
    Raw(Box<RawValue>),
}

impl<T: Into<Value>> From<T> for Extra {
    fn from(value: T) -> Self {
        Extra::Value(value.into())
    }
}

impl serde::Serialize for Extra {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Extra::Value(v) => v.serialize(serializer),
            Extra::Raw(raw) => raw.serialize(serializer),
        }
    }
}

/// The outcome of one command: the name to report and either the success extras or the error.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The canonical command name, or `"error"` when the event named no command we know.
    pub command: &'static str,
    pub outcome: Result<Extras, ReplyError>,
}

impl Reply {
    pub fn error(command: &'static str, error: ReplyError) -> Self {
        Reply {
            command,
            outcome: Err(error),
        }
    }

    /// The reply event's `data`: `{"command","success",...extras}` or
    /// `{"command","success":false,"code","message"}`. Written field by field (no intermediate map)
    /// because this runs on every call.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"{\"command\":");
        push_json(&mut out, self.command);
        match &self.outcome {
            Ok(extras) => {
                out.extend_from_slice(b",\"success\":true");
                for (key, value) in extras {
                    out.push(b',');
                    push_json(&mut out, key);
                    out.push(b':');
                    push_json(&mut out, value);
                }
            }
            Err(e) => {
                out.extend_from_slice(b",\"success\":false,\"code\":");
                push_json(&mut out, e.code.as_ref());
                out.extend_from_slice(b",\"message\":");
                push_json(&mut out, &e.message);
            }
        }
        out.push(b'}');
        out
    }
}

/// Appends `value` as JSON. Strings and `Value`s serialize infallibly into a `Vec`.
fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The commands of SPEC section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandName {
    Create,
    Subscribe,
    Unsubscribe,
    Publish,
    StopPublish,
    SendRaw,
    Send,
    List,
    Disconnect,
    SetTag,
    GetTag,
    SetTags,
    GetTags,
    Stop,
}

impl CommandName {
    const ALL: [CommandName; 14] = [
        CommandName::Create,
        CommandName::Subscribe,
        CommandName::Unsubscribe,
        CommandName::Publish,
        CommandName::StopPublish,
        CommandName::SendRaw,
        CommandName::Send,
        CommandName::List,
        CommandName::Disconnect,
        CommandName::SetTag,
        CommandName::GetTag,
        CommandName::SetTags,
        CommandName::GetTags,
        CommandName::Stop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Create => "create",
            CommandName::Subscribe => "subscribe",
            CommandName::Unsubscribe => "unsubscribe",
            CommandName::Publish => "publish",
            CommandName::StopPublish => "stop_publish",
            CommandName::SendRaw => "send_raw",
            CommandName::Send => "send",
            CommandName::List => "list",
            CommandName::Disconnect => "disconnect",
            CommandName::SetTag => "set_tag",
            CommandName::GetTag => "get_tag",
            CommandName::SetTags => "set_tags",
            CommandName::GetTags => "get_tags",
            CommandName::Stop => "stop",
        }
    }

    /// Case-insensitive, with `-` and `_` interchangeable: `Stop-Publish` is `stop_publish`.
    pub fn parse(raw: &str) -> Option<CommandName> {
        let raw = raw.trim();
        Self::ALL.into_iter().find(|name| {
            let canonical = name.as_str().as_bytes();
            raw.len() == canonical.len()
                && raw.bytes().zip(canonical).all(|(got, &want)| {
                    got.to_ascii_lowercase() == want || (got == b'-' && want == b'_')
                })
        })
    }
}

/// A validated command, ready to run.
#[derive(Debug, Clone)]
enum Command {
    Create(ConnectRequest),
    Subscription {
        id: String,
        method: &'static str,
        params: Vec<String>,
        request_id: Option<u64>,
    },
    Publish {
        id: String,
        topic: String,
    },
    StopPublish {
        id: String,
    },
    SendRaw {
        id: String,
        payload: Vec<u8>,
        content_type: String,
    },
    Send {
        id: String,
        payload: Vec<u8>,
        content_type: String,
        timeout_ms: Option<i32>,
    },
    List {
        filters: Vec<TagFilter>,
    },
    Disconnect {
        id: String,
    },
    SetTag {
        id: String,
        key: String,
        value: String,
    },
    GetTag {
        id: String,
        key: String,
    },
    SetTags {
        id: String,
        tags: StringMap,
    },
    GetTags {
        id: String,
    },
    Stop,
}

/// Runs one command event's `data` against WSM and returns the reply.
pub fn execute<T: Transport + ?Sized>(data: &[u8], ctx: &Context<'_, T>) -> Reply {
    let (object, text) = match parse_object(data) {
        Ok(parsed) => parsed,
        Err(e) => return Reply::error("error", e),
    };
    let name = match command_name(&object) {
        Ok(name) => name,
        Err(e) => return Reply::error("error", e),
    };
    let fields = Fields {
        object: &object,
        text: &text,
    };
    let outcome = parse_command(name, &fields, ctx.wsm.compat()).and_then(|cmd| run(cmd, ctx));
    Reply {
        command: name.as_str(),
        outcome,
    }
}

/// The command object, and the JSON text it was parsed from (the inner text when the data was a
/// JSON string holding the object).
fn parse_object(data: &[u8]) -> Result<(Map<String, Value>, Cow<'_, str>), ReplyError> {
    const PARSE: &str = "Failed to parse command JSON";
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(ReplyError::bad_request(format!(
            "{PARSE}: the event has no data"
        )));
    }
    let text = std::str::from_utf8(data).map_err(|e| {
        ReplyError::bad_request(format!(
            "{PARSE}: data is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| ReplyError::bad_request(format!("{PARSE}: {e}")))?;
    // Some publishers send the command as a JSON string that holds the object.
    let (value, text) = match value {
        Value::String(inner) => (
            serde_json::from_str(&inner)
                .map_err(|e| ReplyError::bad_request(format!("{PARSE}: string data: {e}")))?,
            Cow::Owned(inner),
        ),
        other => (other, Cow::Borrowed(text)),
    };
    match value {
        Value::Object(object) => Ok((object, text)),
        other => Err(ReplyError::bad_request(format!(
            "{PARSE}: expected a JSON object, got {}",
            json_type(&other)
        ))),
    }
}

fn command_name(object: &Map<String, Value>) -> Result<CommandName, ReplyError> {
    match object.get("command") {
        None | Some(Value::Null) => Err(ReplyError::bad_request("Missing 'command' field")),
        Some(Value::String(raw)) if raw.trim().is_empty() => {
            Err(ReplyError::bad_request("Missing 'command' field"))
        }
        Some(Value::String(raw)) => CommandName::parse(raw)
            .ok_or_else(|| ReplyError::new(UNKNOWN_COMMAND, format!("Unknown command: {raw}"))),
        Some(other) => Err(ReplyError::bad_request(format!(
            "Field 'command' must be a string, got {}",
            json_type(other)
        ))),
    }
}

fn parse_command(name: CommandName, f: &Fields<'_>, compat: Compat) -> Result<Command, ReplyError> {
    Ok(match name {
        CommandName::Create => {
            let req = ConnectRequest {
                url: f.string("url")?.to_owned(),
                auto_reconnect: f.opt_bool("auto_reconnect")?.unwrap_or(false),
                tags: f.string_map("tags")?,
                headers: f.string_map("headers")?,
                subprotocols: f.string_list("subprotocols")?,
                on_connect: f.on_connect("on_connect")?,
            };
            if compat == Compat::Base {
                for (field, used) in [
                    ("headers", !req.headers.is_empty()),
                    ("subprotocols", !req.subprotocols.is_empty()),
                    ("on_connect", !req.on_connect.is_empty()),
                ] {
                    if used {
                        return Err(ReplyError::bad_request(format!(
                            "Field '{field}' needs the extended WSM API, but this worker is \
                             configured with wsm_compat=base"
                        )));
                    }
                }
            }
            Command::Create(req)
        }
        CommandName::Subscribe | CommandName::Unsubscribe => {
            let params = f.string_list("params")?;
            if params.is_empty() {
                return Err(ReplyError::bad_request(
                    "Field 'params' must list at least one stream",
                ));
            }
            Command::Subscription {
                id: f.string("id")?.to_owned(),
                method: if name == CommandName::Subscribe {
                    "SUBSCRIBE"
                } else {
                    "UNSUBSCRIBE"
                },
                params,
                request_id: f
                    .opt_int("request_id", 0, i64::MAX)?
                    .map(|n| n.unsigned_abs()),
            }
        }
        CommandName::Publish => Command::Publish {
            id: f.string("id")?.to_owned(),
            topic: f.string("topic")?.to_owned(),
        },
        CommandName::StopPublish => Command::StopPublish {
            id: f.string("id")?.to_owned(),
        },
        CommandName::SendRaw | CommandName::Send => {
            let id = f.string("id")?.to_owned();
            let (payload, default_type) = f.payload()?;
            let content_type = f
                .opt_string("content_type")?
                .filter(|t| !t.trim().is_empty())
                .unwrap_or(default_type)
                .to_owned();
            if name == CommandName::SendRaw {
                Command::SendRaw {
                    id,
                    payload,
                    content_type,
                }
            } else {
                Command::Send {
                    id,
                    payload,
                    content_type,
                    timeout_ms: f
                        .opt_int("timeout_ms", 0, i64::from(i32::MAX))?
                        .and_then(|n| i32::try_from(n).ok()),
                }
            }
        }
        CommandName::List => Command::List {
            filters: f
                .string_map("filters")?
                .into_iter()
                .map(|(key, value)| TagFilter { key, value })
                .collect(),
        },
        CommandName::Disconnect => Command::Disconnect {
            id: f.string("id")?.to_owned(),
        },
        CommandName::SetTag => Command::SetTag {
            id: f.string("id")?.to_owned(),
            key: f.string("key")?.to_owned(),
            value: f.present_string("value")?.to_owned(),
        },
        CommandName::GetTag => Command::GetTag {
            id: f.string("id")?.to_owned(),
            key: f.string("key")?.to_owned(),
        },
        CommandName::SetTags => {
            if f.object.get("tags").is_none_or(Value::is_null) {
                return Err(missing("tags"));
            }
            Command::SetTags {
                id: f.string("id")?.to_owned(),
                tags: f.string_map("tags")?,
            }
        }
        CommandName::GetTags => Command::GetTags {
            id: f.string("id")?.to_owned(),
        },
        CommandName::Stop => Command::Stop,
    })
}

fn run<T: Transport + ?Sized>(
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

fn missing(field: &str) -> ReplyError {
    ReplyError::bad_request(format!("Missing '{field}' field"))
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> ReplyError {
    ReplyError::new(
        BAD_REQUEST,
        format!("Field '{field}' must be {expected}, got {}", json_type(got)),
    )
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to a command's fields; `null` counts as absent.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    /// The JSON text `object` was parsed from, for fields forwarded exactly as the caller wrote them.
    text: &'a str,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.object.get(name).filter(|v| !v.is_null())
    }

    /// The items of the array field `name` as the caller wrote them (key order and all), or `None`
    /// when they cannot be recovered (e.g. a duplicated key), in which case callers re-serialize.
    fn raw_items(&self, name: &str) -> Option<Vec<&'a RawValue>> {
        let mut object: BTreeMap<Cow<'a, str>, &'a RawValue> =
            serde_json::from_str(self.text).ok()?;
        let raw = object.remove(name)?;
        serde_json::from_str(raw.get()).ok()
    }

    /// A required, non-empty string.
    fn string(&self, name: &str) -> Result<&'a str, ReplyError> {
        let value = self.present_string(name)?;
        if value.trim().is_empty() {
            return Err(ReplyError::bad_request(format!(
                "Field '{name}' must not be empty"
            )));
        }
        Ok(value)
    }

    /// A required string that may be empty.
    fn present_string(&self, name: &str) -> Result<&'a str, ReplyError> {
        self.opt_string(name)?.ok_or_else(|| missing(name))
    }

    fn opt_string(&self, name: &str) -> Result<Option<&'a str>, ReplyError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(name, "a string", other)),
        }
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, ReplyError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(name, "a boolean", other)),
        }
    }

    fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ReplyError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match value.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ReplyError::bad_request(format!(
                "Field '{name}' must be an integer from {min} to {max}, got {value}"
            ))),
        }
    }

    /// An optional object whose values are all strings (tags, headers, filters).
    fn string_map(&self, name: &str) -> Result<StringMap, ReplyError> {
        let Some(value) = self.get(name) else {
            return Ok(StringMap::new());
        };
        let Value::Object(object) = value else {
            return Err(wrong_type(name, "an object of strings", value));
        };
        object
            .iter()
            .map(|(key, v)| match v {
                Value::String(s) => Ok((key.clone(), s.clone())),
                other => Err(wrong_type(&format!("{name}.{key}"), "a string", other)),
            })
            .collect()
    }

    /// An optional array of strings.
    fn string_list(&self, name: &str) -> Result<Vec<String>, ReplyError> {
        let Some(value) = self.get(name) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = value else {
            return Err(wrong_type(name, "an array of strings", value));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong_type(&format!("{name}[{i}]"), "a string", other)),
            })
            .collect()
    }

    /// `on_connect`: each item is sent as a text frame; a string as-is, an object or array as the
    /// caller wrote it (`application/json`), so `{"method":"SUBSCRIBE",...}` can be written inline
    /// and reaches the exchange with its keys in the caller's order.
    fn on_connect(&self, name: &str) -> Result<Vec<OutboundMessage>, ReplyError> {
        let Some(value) = self.get(name) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = value else {
            return Err(wrong_type(name, "an array of messages", value));
        };
        let raw = self.raw_items(name).filter(|raw| raw.len() == items.len());
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let (text, content_type) = match item {
                    Value::String(s) => {
                        let is_json = serde_json::from_str::<Value>(s).is_ok();
                        let kind = if is_json {
                            "application/json"
                        } else {
                            "text/plain"
                        };
                        (s.clone(), kind)
                    }
                    Value::Object(_) | Value::Array(_) => {
                        let text = match &raw {
                            Some(raw) => raw[i].get().to_owned(),
                            None => item.to_string(),
                        };
                        (text, "application/json")
                    }
                    other => {
                        return Err(wrong_type(
                            &format!("{name}[{i}]"),
                            "a string or a JSON object",
                            other,
                        ))
                    }
                };
                Ok(OutboundMessage {
                    message: gateway::encode_bytes(text.as_bytes()),
                    content_type: content_type.to_owned(),
                })
            })
            .collect()
    }

    /// The payload of `send`/`send_raw`: `message` (base64) or `text` (UTF-8), exactly one, and the
    /// content type that goes with it when none is given.
    fn payload(&self) -> Result<(Vec<u8>, &'static str), ReplyError> {
        match (self.opt_string("message")?, self.opt_string("text")?) {
            (Some(_), Some(_)) => Err(ReplyError::bad_request(
                "Fields 'message' and 'text' are mutually exclusive; send one",
            )),
            (Some(b64), None) => gateway::decode_bytes(b64.trim())
                .map(|bytes| (bytes, "application/octet-stream"))
                .ok_or_else(|| ReplyError::bad_request("Field 'message' must be base64")),
            (None, Some(text)) => Ok((text.as_bytes().to_vec(), "application/json")),
            (None, None) => Err(ReplyError::bad_request(
                "Missing 'message' (base64) or 'text' field",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_case_and_dash_insensitive() {
        assert_eq!(
            CommandName::parse("Stop-Publish"),
            Some(CommandName::StopPublish)
        );
        assert_eq!(CommandName::parse("SEND_RAW"), Some(CommandName::SendRaw));
        assert_eq!(CommandName::parse(" list "), Some(CommandName::List));
        assert_eq!(CommandName::parse("stoppublish"), None);
        assert_eq!(CommandName::parse("lists"), None);
        for name in CommandName::ALL {
            assert_eq!(CommandName::parse(name.as_str()), Some(name));
        }
    }

    #[test]
    fn string_data_holding_an_object_is_accepted() {
        let (obj, _) = parse_object(br#""{\"command\":\"list\"}""#).expect("object");
        assert_eq!(obj.get("command"), Some(&json!("list")));
        let err = parse_object(b"[1,2]").expect_err("array");
        assert_eq!(
            err.message,
            "Failed to parse command JSON: expected a JSON object, got an array"
        );
        let err = parse_object(b"\xff{}").expect_err("not utf-8");
        assert_eq!(
            err.message,
            "Failed to parse command JSON: data is not valid UTF-8 (at byte 0)"
        );
    }
}
