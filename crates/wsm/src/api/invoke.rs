//! `POST /v1/invoke/{Method}`: proto3-JSON in and out, for hosts and `curl` that do not speak gRPC.
//! The JSON is read and written against the schema's own descriptors (field names in snake_case or
//! lowerCamelCase, `bytes` as base64, unknown fields refused by name), then the call goes to the same
//! [`GrpcApi`] method gRPC uses, so the two ports cannot drift apart.

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use tonic::{Request, Status};

use super::grpc::GrpcApi;
use crate::proto::{
    self, web_socket_manager_server::WebSocketManager, FILE_DESCRIPTOR_SET, SERVICE_NAME,
};

/// Transcodes JSON calls onto the gRPC implementation. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Invoker {
    api: GrpcApi,
    service: prost_reflect::ServiceDescriptor,
}

impl Invoker {
    pub fn new(api: GrpcApi) -> Self {
        // The descriptor set is built into this binary from the schema; failing to read it is a
        // build defect, not an input error.
        let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .expect("the built-in websocketmanager descriptor set decodes");
        let service = pool
            .get_service_by_name(SERVICE_NAME)
            .expect("the built-in descriptor set holds virtufin.WebSocketManager");
        Invoker { api, service }
    }

    /// The unary methods `/v1/invoke` serves.
    pub fn methods(&self) -> Vec<String> {
        self.service
            .methods()
            .filter(|m| !m.is_server_streaming() && !m.is_client_streaming())
            .map(|m| m.name().to_owned())
            .collect()
    }

    /// Calls `method` with a proto3-JSON request body; answers the proto3-JSON response.
    pub async fn invoke(&self, method: &str, body: &[u8]) -> Result<Vec<u8>, Status> {
        let descriptor = self
            .service
            .methods()
            .find(|m| m.name() == method || m.name().eq_ignore_ascii_case(method))
            .ok_or_else(|| {
                Status::unimplemented(format!(
                    "{SERVICE_NAME} has no method {:?}; the methods are {}",
                    crate::text::excerpt(method, 64),
                    self.methods().join(", ")
                ))
            })?;
        if descriptor.is_server_streaming() {
            return Err(Status::unimplemented(format!(
                "{} streams its results; call it over gRPC (e.g. `wsm tail`)",
                descriptor.name()
            )));
        }
        let request = from_json(&descriptor.input(), body)?;
        let output = descriptor.output();
        macro_rules! call {
            ($rpc:ident, $req:ty) => {{
                let req = <$req>::decode(request.as_slice())
                    .map_err(|e| Status::internal(format!("transcoding the request: {e}")))?;
                let response = self.api.$rpc(Request::new(req)).await?.into_inner();
                to_json(&output, &response.encode_to_vec())
            }};
        }
        match descriptor.name() {
            "Connect" => call!(connect, proto::ConnectRequest),
            "List" => call!(list, proto::ListRequest),
            "Disconnect" => call!(disconnect, proto::DisconnectRequest),
            "StartPublish" => call!(start_publish, proto::StartPublishRequest),
            "StopPublish" => call!(stop_publish, proto::StopPublishRequest),
            "Send" => call!(send, proto::SendRequest),
            "SendRaw" => call!(send_raw, proto::SendRawRequest),
            "SetTag" => call!(set_tag, proto::SetTagRequest),
            "GetTag" => call!(get_tag, proto::GetTagRequest),
            "SetTags" => call!(set_tags, proto::SetTagsRequest),
            "GetTags" => call!(get_tags, proto::GetTagsRequest),
            "Rotate" => call!(rotate, proto::RotateRequest),
            other => Err(Status::unimplemented(format!(
                "{SERVICE_NAME}.{other} is not served over /v1/invoke"
            ))),
        }
    }
}

/// A JSON body as the message's protobuf bytes. An empty body is the empty message.
fn from_json(descriptor: &MessageDescriptor, body: &[u8]) -> Result<Vec<u8>, Status> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let message = DynamicMessage::deserialize_with_options(
        descriptor.clone(),
        &mut deserializer,
        &DeserializeOptions::new(),
    )
    .and_then(|m| deserializer.end().map(|()| m))
    .map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            // Not JSON at all: say so, and where, rather than serde's token-level message alone.
            Category::Syntax | Category::Eof => Status::invalid_argument(format!(
                "the body is not JSON: {e}; send a JSON object such as {{\"id\":\"...\"}}"
            )),
            _ => Status::invalid_argument(format!(
                "the body is not a proto3-JSON {}: {e}",
                descriptor.full_name()
            )),
        }
    })?;
    Ok(message.encode_to_vec())
}

/// Protobuf bytes as proto3 JSON: lowerCamelCase names, every field written (also defaults), so a
/// reader sees `"connections": []` rather than `{}`.
fn to_json(descriptor: &MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, Status> {
    let message = DynamicMessage::decode(descriptor.clone(), bytes)
        .map_err(|e| Status::internal(format!("transcoding the response: {e}")))?;
    let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(
            &mut serializer,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .map_err(|e| Status::internal(format!("transcoding the response: {e}")))?;
    Ok(out)
}
