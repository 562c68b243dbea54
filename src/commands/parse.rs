//! Command JSON → a validated [`Command`]: why a request is refused (missing or mistyped fields,
//! unknown names, fields the configured WSM API cannot carry) is decided here and nowhere else.
//! Unknown fields are ignored so that newer callers work with this worker.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::CommandName;
use crate::error::{ReplyError, BAD_REQUEST, UNKNOWN_COMMAND};
use crate::gateway::{self, Compat, ConnectRequest, OutboundMessage, StringMap, TagFilter};

/// A validated command, ready to run.
#[derive(Debug, Clone)]
pub(super) enum Command {
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
    Rotate {
        id: String,
    },
    Stop,
}

/// The command object, and the JSON text it was parsed from (the inner text when the data was a
/// JSON string holding the object).
pub(super) fn parse_object(data: &[u8]) -> Result<(Map<String, Value>, Cow<'_, str>), ReplyError> {
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

pub(super) fn command_name(object: &Map<String, Value>) -> Result<CommandName, ReplyError> {
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

pub(super) fn parse_command(
    name: CommandName,
    f: &Fields<'_>,
    compat: Compat,
) -> Result<Command, ReplyError> {
    Ok(match name {
        CommandName::Create => {
            let req = ConnectRequest {
                url: f.string("url")?.to_owned(),
                auto_reconnect: f.opt_bool("auto_reconnect")?.unwrap_or(false),
                tags: f.string_map("tags")?,
                headers: f.string_map("headers")?,
                subprotocols: f.string_list("subprotocols")?,
                on_connect: f.on_connect("on_connect")?,
                profile: f.opt_string("profile")?.map(str::to_owned),
                venue: f.venue_options()?,
            };
            if compat == Compat::Base {
                let used = [
                    ("headers", !req.headers.is_empty()),
                    ("subprotocols", !req.subprotocols.is_empty()),
                    ("on_connect", !req.on_connect.is_empty()),
                    ("profile", req.profile.is_some()),
                ]
                .into_iter()
                .filter(|(_, used)| *used)
                .map(|(field, _)| field)
                .chain(req.venue.keys().map(String::as_str))
                .next();
                if let Some(field) = used {
                    return Err(ReplyError::bad_request(format!(
                        "Field '{field}' needs the extended WSM API, but this worker is \
                         configured with wsm_compat=base"
                    )));
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
        CommandName::Rotate => {
            let id = f.string("id")?.to_owned();
            if compat == Compat::Base {
                return Err(ReplyError::bad_request(
                    "Command 'rotate' needs the extended WSM API (RPC Rotate), but this worker is \
                     configured with wsm_compat=base",
                ));
            }
            Command::Rotate { id }
        }
        CommandName::Stop => Command::Stop,
    })
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

/// `create` fields forwarded to Connect's venue options (docs/venues.md) and continuity options
/// (docs/wsm.md, "Continuity").
const VENUE_OPTIONS: [&str; 8] = [
    "keepalive",
    "reply",
    "outbound_rate",
    "decompress",
    "notice",
    "sequence",
    "redundancy",
    "max_lifetime_ms",
];

/// Typed access to a command's fields; `null` counts as absent.
pub(super) struct Fields<'a> {
    pub(super) object: &'a Map<String, Value>,
    /// The JSON text `object` was parsed from, for fields forwarded exactly as the caller wrote them.
    pub(super) text: &'a str,
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

    /// The venue options of `create`, checked for shape only (an object each; `decompress` a
    /// string; `redundancy` 1 or 2, `max_lifetime_ms` a whole number): the WSM checks every rule
    /// and names the field that breaks one.
    fn venue_options(&self) -> Result<BTreeMap<String, Value>, ReplyError> {
        let mut options = BTreeMap::new();
        for name in VENUE_OPTIONS {
            let Some(value) = self.get(name) else {
                continue;
            };
            match name {
                "redundancy" => {
                    self.opt_int(name, 1, 2)?;
                }
                "max_lifetime_ms" => {
                    self.opt_int(name, 0, i64::MAX)?;
                }
                "decompress" if !value.is_string() => {
                    return Err(wrong_type(name, "a string (gzip, deflate or zlib)", value));
                }
                "decompress" => {}
                _ if !value.is_object() => return Err(wrong_type(name, "an object", value)),
                _ => {}
            }
            options.insert(name.to_owned(), value.clone());
        }
        Ok(options)
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
    use serde_json::json;

    use super::*;

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

    fn create(json: &str, compat: Compat) -> Result<ConnectRequest, ReplyError> {
        let (object, text) = parse_object(json.as_bytes()).expect("object");
        let fields = Fields {
            object: &object,
            text: &text,
        };
        match parse_command(CommandName::Create, &fields, compat)? {
            Command::Create(req) => Ok(req),
            _ => unreachable!("create parses to Create"),
        }
    }

    #[test]
    fn create_forwards_the_venue_options_as_given_and_checks_their_shape() {
        let req = create(
            r#"{"command":"create","url":"wss://x/ws","profile":"okx",
                "keepalive":{"message":"ping","interval_ms":5000},"decompress":"gzip"}"#,
            Compat::Extended,
        )
        .expect("parses");
        assert_eq!(req.profile.as_deref(), Some("okx"));
        let body = serde_json::to_value(&req).unwrap();
        assert_eq!(
            body["keepalive"],
            json!({"message": "ping", "interval_ms": 5000})
        );
        assert_eq!(body["decompress"], "gzip");
        assert!(body.get("notice").is_none());

        let err = create(
            r#"{"command":"create","url":"wss://x/ws","decompress":{"kind":"gzip"}}"#,
            Compat::Extended,
        )
        .expect_err("decompress must be a string");
        assert!(err.message.contains("'decompress'"), "{}", err.message);
        let err = create(
            r#"{"command":"create","url":"wss://x/ws","outbound_rate":5}"#,
            Compat::Extended,
        )
        .expect_err("an object");
        assert!(err.message.contains("'outbound_rate'"), "{}", err.message);
        let err = create(
            r#"{"command":"create","url":"wss://x/ws","profile":"okx"}"#,
            Compat::Base,
        )
        .expect_err("needs the extended API");
        assert!(err.message.contains("wsm_compat=base"), "{}", err.message);
    }
}
