//! Typed calls of `virtufin.WebSocketManager` over the host's gateway: proto3-JSON request bodies
//! (snake_case names, bytes as base64) out, proto3-JSON responses in, and the mapping of a failed call
//! to a reply error code. Knows nothing of FFI: the transport is a trait, implemented by the host.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{ReplyError, GATEWAY_ERROR};

/// The gateway service name WSM is registered under.
pub const SERVICE: &str = "websocketmanager";

/// One request/response exchange with a backend service.
pub trait Transport {
    fn call(&self, service: &str, method: &str, body: &[u8]) -> Result<Vec<u8>, TransportFailure>;
}

/// A failed gateway call: the host's non-zero status and the error body it returned, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportFailure {
    pub status: i32,
    pub body: Option<Vec<u8>>,
}

impl TransportFailure {
    /// A failure detected on our side of the callback (no callback, bad lengths).
    pub fn host(reason: impl Into<String>) -> Self {
        TransportFailure {
            status: -1,
            body: Some(reason.into().into_bytes()),
        }
    }
}

/// Which WSM request fields may be sent. `Base` (worker config `wsm_compat=base`) sends only the
/// field numbers < 16 of the base proto, for a stock WSM whose gateway rejects unknown JSON fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    Extended,
    Base,
}

/// A proto `map<string, string>`; ordered so that requests and replies are deterministic.
pub type StringMap = BTreeMap<String, String>;

fn is_false(b: &bool) -> bool {
    !*b
}

/// The base64 flavour proto3 JSON uses for `bytes`.
pub fn encode_bytes(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// proto3 JSON parsers accept standard and URL-safe base64, padded or not; so do we.
pub fn decode_bytes(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboundMessage {
    pub message: String, // base64
    pub content_type: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectRequest {
    pub url: String,
    pub auto_reconnect: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: StringMap,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: StringMap,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subprotocols: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_connect: Vec<OutboundMessage>,
    /// A venue profile of the WSM (`wsm profiles`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Venue options (keepalive, reply, outbound_rate, decompress, notice, sequence) and
    /// continuity options (redundancy, max_lifetime_ms), forwarded as the caller wrote them: the
    /// WSM validates them and names the field that is wrong.
    #[serde(flatten)]
    pub venue: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConnectResponse {
    pub id: String,
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TagFilter {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListRequest {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<TagFilter>,
}

/// One row of `List`. proto3-JSON printers emit lowerCamelCase by default, so both spellings parse.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Connection {
    pub id: String,
    pub url: String,
    pub status: String,
    pub topic: String,
    #[serde(alias = "instanceId")]
    pub instance_id: String,
    pub tags: StringMap,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListResponse {
    pub connections: Vec<Connection>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdRequest<'a> {
    pub id: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct StartPublishRequest<'a> {
    pub id: &'a str,
    pub topic: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct SendRequest<'a> {
    pub id: &'a str,
    pub message: String, // base64
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i32>,
    pub content_type: &'a str,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SendResponse {
    pub response: String, // base64
}

#[derive(Debug, Clone, Serialize)]
pub struct SendRawRequest<'a> {
    pub id: &'a str,
    pub message: String, // base64
    pub content_type: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    pub replay_on_reconnect: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetTagRequest<'a> {
    pub id: &'a str,
    pub key: &'a str,
    pub value: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct GetTagRequest<'a> {
    pub id: &'a str,
    pub key: &'a str,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GetTagResponse {
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetTagsRequest<'a> {
    pub id: &'a str,
    pub tags: &'a StringMap,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GetTagsResponse {
    pub tags: StringMap,
}

/// How a `Rotate` went. proto3-JSON printers write `uint64` as a string and may use
/// lowerCamelCase (`tookMs`), so both spellings and both forms parse.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RotateResponse {
    /// The two sockets were seen to overlap before the old one closed: nothing was lost.
    pub overlap: bool,
    /// Frames both sockets delivered, published once.
    #[serde(deserialize_with = "uint64")]
    pub duplicates: u64,
    #[serde(alias = "tookMs", deserialize_with = "uint64")]
    pub took_ms: u64,
}

/// A proto3-JSON `uint64`: a number, or a string holding one.
fn uint64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Uint64 {
        Number(u64),
        Text(String),
    }
    match Uint64::deserialize(deserializer)? {
        Uint64::Number(n) => Ok(n),
        Uint64::Text(text) => text
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected a uint64, got {text:?}"))),
    }
}

/// A response we do not read (the `*Response {}` messages); any JSON value is accepted.
#[derive(Debug, Deserialize)]
pub struct Empty {}

/// The WSM client over one transport, for one `Process` call.
pub struct Wsm<'t, T: Transport + ?Sized> {
    transport: &'t T,
    compat: Compat,
}

impl<'t, T: Transport + ?Sized> Wsm<'t, T> {
    pub fn new(transport: &'t T, compat: Compat) -> Self {
        Wsm { transport, compat }
    }

    pub fn compat(&self) -> Compat {
        self.compat
    }

    pub fn connect(&self, mut req: ConnectRequest) -> Result<ConnectResponse, ReplyError> {
        if self.compat == Compat::Base {
            req.headers.clear();
            req.subprotocols.clear();
            req.on_connect.clear();
            req.profile = None;
            req.venue.clear();
        }
        let resp: ConnectResponse = self.invoke("Connect", &req)?;
        if resp.id.is_empty() {
            return Err(ReplyError::new(
                GATEWAY_ERROR,
                "websocketmanager.Connect succeeded but returned no connection id",
            ));
        }
        Ok(resp)
    }

    pub fn list(&self, req: &ListRequest) -> Result<ListResponse, ReplyError> {
        self.invoke("List", req)
    }

    pub fn disconnect(&self, id: &str) -> Result<(), ReplyError> {
        self.invoke::<_, Empty>("Disconnect", &IdRequest { id })
            .map(drop)
    }

    pub fn start_publish(&self, id: &str, topic: &str) -> Result<(), ReplyError> {
        self.invoke::<_, Empty>("StartPublish", &StartPublishRequest { id, topic })
            .map(drop)
    }

    pub fn stop_publish(&self, id: &str) -> Result<(), ReplyError> {
        self.invoke::<_, Empty>("StopPublish", &IdRequest { id })
            .map(drop)
    }

    pub fn send(&self, req: &SendRequest<'_>) -> Result<Vec<u8>, ReplyError> {
        let resp: SendResponse = self.invoke("Send", req)?;
        decode_bytes(&resp.response).ok_or_else(|| {
            ReplyError::new(
                GATEWAY_ERROR,
                "websocketmanager.Send returned a 'response' that is not base64",
            )
        })
    }

    pub fn send_raw(&self, mut req: SendRawRequest<'_>) -> Result<(), ReplyError> {
        if self.compat == Compat::Base {
            req.replay_on_reconnect = false;
        }
        self.invoke::<_, Empty>("SendRaw", &req).map(drop)
    }

    pub fn set_tag(&self, req: &SetTagRequest<'_>) -> Result<(), ReplyError> {
        self.invoke::<_, Empty>("SetTag", req).map(drop)
    }

    pub fn get_tag(&self, req: &GetTagRequest<'_>) -> Result<String, ReplyError> {
        self.invoke::<_, GetTagResponse>("GetTag", req)
            .map(|r| r.value)
    }

    pub fn set_tags(&self, req: &SetTagsRequest<'_>) -> Result<(), ReplyError> {
        self.invoke::<_, Empty>("SetTags", req).map(drop)
    }

    pub fn get_tags(&self, id: &str) -> Result<StringMap, ReplyError> {
        self.invoke::<_, GetTagsResponse>("GetTags", &IdRequest { id })
            .map(|r| r.tags)
    }

    /// Replaces the connection's socket make-before-break; answers once the old one closed.
    pub fn rotate(&self, id: &str) -> Result<RotateResponse, ReplyError> {
        self.invoke("Rotate", &IdRequest { id })
    }

    fn invoke<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, ReplyError> {
        let body = serde_json::to_vec(req).map_err(|e| {
            ReplyError::internal(format!("could not encode the {method} request: {e}"))
        })?;
        let resp = self
            .transport
            .call(SERVICE, method, &body)
            .map_err(|failure| map_failure(method, &failure))?;
        // An empty body is what some gateways return for the `{}` response messages.
        let resp: &[u8] = if resp.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &resp
        };
        serde_json::from_slice(resp).map_err(|e| {
            ReplyError::new(
                GATEWAY_ERROR,
                format!(
                    "{SERVICE}.{method} returned a response that is not its proto3-JSON message: {e}"
                ),
            )
        })
    }
}

/// Maps a failed gateway call to a reply error: WSM's own `{"code","message"}` body keeps its gRPC code
/// (by name, C#-style name or number); anything else is a `GATEWAY_ERROR` quoting what the host said.
pub fn map_failure(method: &str, failure: &TransportFailure) -> ReplyError {
    #[derive(Deserialize)]
    struct StatusBody {
        code: serde_json::Value,
        #[serde(default)]
        message: String,
    }
    let body = failure.body.as_deref().unwrap_or_default();
    if let Ok(status) = serde_json::from_slice::<StatusBody>(body) {
        let code = match &status.code {
            serde_json::Value::String(name) => grpc_code_name(name),
            serde_json::Value::Number(n) => n.as_u64().and_then(grpc_code_from_number),
            _ => None,
        };
        // A failed call is never OK, whatever its body says: that body is not WSM's error.
        if let Some(code) = code.filter(|code| *code != "OK") {
            let message = if status.message.is_empty() {
                format!("{SERVICE}.{method} failed with {code}")
            } else {
                status.message
            };
            return ReplyError::new(code, message);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let detail = if text.is_empty() {
        "no error body".to_owned()
    } else {
        truncate(text, 512)
    };
    ReplyError::new(
        GATEWAY_ERROR,
        format!(
            "gateway call {SERVICE}.{method} failed with status {}: {detail}",
            failure.status
        ),
    )
}

const GRPC_CODES: [&str; 17] = [
    "OK",
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

fn grpc_code_from_number(n: u64) -> Option<&'static str> {
    GRPC_CODES.get(usize::try_from(n).ok()?).copied()
}

/// Accepts `NOT_FOUND`, `not_found`, `NotFound` (C#'s `StatusCode`) and `Canceled`.
fn grpc_code_name(name: &str) -> Option<&'static str> {
    let squashed: String = name
        .chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if squashed == "CANCELED" {
        return Some("CANCELLED");
    }
    GRPC_CODES
        .iter()
        .find(|code| code.replace('_', "") == squashed)
        .copied()
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(body: &str) -> TransportFailure {
        TransportFailure {
            status: 5,
            body: Some(body.as_bytes().to_vec()),
        }
    }

    #[test]
    fn wsm_error_body_keeps_its_code_in_every_spelling() {
        for body in [
            r#"{"code":"NOT_FOUND","message":"Connection not found"}"#,
            r#"{"code":"NotFound","message":"Connection not found"}"#,
            r#"{"code":5,"message":"Connection not found"}"#,
        ] {
            let e = map_failure("Disconnect", &failure(body));
            assert_eq!(e.code, "NOT_FOUND", "{body}");
            assert_eq!(e.message, "Connection not found");
        }
    }

    #[test]
    fn plain_text_or_missing_body_is_a_gateway_error_naming_the_call() {
        let e = map_failure("Connect", &failure("upstream connect error"));
        assert_eq!(e.code, GATEWAY_ERROR);
        assert_eq!(
            e.message,
            "gateway call websocketmanager.Connect failed with status 5: upstream connect error"
        );
        let e = map_failure(
            "List",
            &TransportFailure {
                status: 2,
                body: None,
            },
        );
        assert_eq!(
            e.message,
            "gateway call websocketmanager.List failed with status 2: no error body"
        );
        let e = map_failure("List", &failure(r#"{"code":"NOPE","message":"x"}"#));
        assert_eq!(e.code, GATEWAY_ERROR);
    }

    // Found with the process fuzz target's checks (fuzz/corpus/process/regression-failure-code-ok-*).
    #[test]
    fn a_failure_whose_body_says_ok_is_a_gateway_error() {
        for body in [r#"{"code":0,"message":"fine"}"#, r#"{"code":"OK"}"#] {
            let e = map_failure("List", &failure(body));
            assert_eq!(e.code, GATEWAY_ERROR, "{body}");
            assert_eq!(
                e.message,
                format!("gateway call websocketmanager.List failed with status 5: {body}")
            );
        }
    }

    #[test]
    fn bytes_decode_in_every_proto3_flavour() {
        for text in ["aGk/Pw==", "aGk/Pw", "aGk_Pw==", "aGk_Pw"] {
            assert_eq!(decode_bytes(text).as_deref(), Some(&b"hi??"[..]), "{text}");
        }
        assert_eq!(decode_bytes("not base64!"), None);
    }
}
