//! What the Virtufin API gateway does with a WebSocket Manager it knows nothing about at build time:
//! discover the service by gRPC reflection, build a descriptor pool from the files reflection
//! returns, turn a JSON request (snake_case field names) into a dynamic message, call the method
//! over a plain channel with a dynamic codec, and turn the answer back into JSON. Plus the standard
//! health check it probes.

mod support;

use prost::Message as _;
use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
    ServiceDescriptor,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use support::server::{bounded, feed, Wsm};

const SERVICE: &str = "virtufin.WebSocketManager";

/// A protobuf codec for messages known only by their descriptors.
#[derive(Clone)]
struct DynamicCodec {
    response: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.response.clone())
    }
}

struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding the response: {e}")))
    }
}

/// One reflection stream, asked one question at a time.
struct Reflection {
    requests: mpsc::Sender<ServerReflectionRequest>,
    responses: Streaming<ServerReflectionResponse>,
}

impl Reflection {
    async fn open(channel: Channel) -> Reflection {
        let (requests, rx) = mpsc::channel(4);
        let responses = ServerReflectionClient::new(channel)
            .server_reflection_info(Request::new(ReceiverStream::new(rx)))
            .await
            .expect("reflection answers")
            .into_inner();
        Reflection {
            requests,
            responses,
        }
    }

    async fn ask(&mut self, request: MessageRequest) -> MessageResponse {
        self.requests
            .send(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            })
            .await
            .expect("the reflection stream is open");
        let response = self
            .responses
            .message()
            .await
            .expect("a reflection response")
            .expect("the reflection stream stays open");
        match response.message_response.expect("a response") {
            MessageResponse::ErrorResponse(e) => panic!("reflection refused: {e:?}"),
            other => other,
        }
    }

    async fn services(&mut self) -> Vec<String> {
        match self.ask(MessageRequest::ListServices(String::new())).await {
            MessageResponse::ListServicesResponse(list) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("list_services answered {other:?}"),
        }
    }

    /// The file defining `symbol` and the files it depends on, in a pool. As reflecting clients
    /// do (grpcurl, the gateways), a dependency the answer left out is asked for by file name.
    async fn pool_for(&mut self, symbol: &str) -> DescriptorPool {
        let mut files = self
            .files(MessageRequest::FileContainingSymbol(symbol.to_owned()))
            .await;
        let mut i = 0;
        while i < files.len() {
            for dependency in files[i].dependency.clone() {
                if !files.iter().any(|f| f.name() == dependency) {
                    let more = self.files(MessageRequest::FileByFilename(dependency)).await;
                    files.extend(more);
                }
            }
            i += 1;
        }
        // Dependencies first, as a pool adds them.
        files.reverse();
        let mut pool = DescriptorPool::new();
        pool.add_file_descriptor_protos(files)
            .expect("the reflected files form a pool");
        pool
    }

    async fn files(&mut self, request: MessageRequest) -> Vec<FileDescriptorProto> {
        match self.ask(request).await {
            MessageResponse::FileDescriptorResponse(files) => files
                .file_descriptor_proto
                .iter()
                .map(|bytes| {
                    FileDescriptorProto::decode(bytes.as_slice()).expect("a FileDescriptorProto")
                })
                .collect(),
            other => panic!("the file request answered {other:?}"),
        }
    }
}

/// The gateway's view of the service: discovered, then called by method name with JSON.
struct Gateway {
    channel: Channel,
    service: ServiceDescriptor,
}

impl Gateway {
    async fn discover(channel: Channel, name: &str) -> Gateway {
        let mut reflection = Reflection::open(channel.clone()).await;
        let services = reflection.services().await;
        assert!(
            services.iter().any(|s| s == name),
            "reflection lists {name}: {services:?}"
        );
        let pool = reflection.pool_for(name).await;
        let service = pool
            .get_service_by_name(name)
            .expect("the reflected files define the service");
        Gateway { channel, service }
    }

    async fn call(&self, method: &str, request: &Value) -> Result<Value, Status> {
        let method = self
            .service
            .methods()
            .find(|m| m.name() == method)
            .unwrap_or_else(|| panic!("{} has a method {method}", self.service.full_name()));
        let body = request.to_string();
        let mut deserializer = serde_json::Deserializer::from_str(&body);
        let message = DynamicMessage::deserialize_with_options(
            method.input(),
            &mut deserializer,
            &DeserializeOptions::new(),
        )
        .expect("the JSON fits the request message");
        let path: PathAndQuery = format!("/{}/{}", self.service.full_name(), method.name())
            .parse()
            .expect("a method path");
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.expect("the channel is ready");
        let codec = DynamicCodec {
            response: method.output(),
        };
        let response = grpc.unary(Request::new(message), path, codec).await?;
        let options = SerializeOptions::new().skip_default_fields(false);
        Ok(response
            .into_inner()
            .serialize_with_options(serde_json::value::Serializer, &options)
            .expect("the response as JSON"))
    }
}

#[tokio::test]
async fn reflection_lists_the_service_and_describes_connect_list_and_get_tags() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let mut reflection = Reflection::open(wsm.channel().await).await;
        let services = reflection.services().await;
        for expected in [
            SERVICE,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(services.iter().any(|s| s == expected), "{services:?}");
        }
        let pool = reflection.pool_for(SERVICE).await;
        let service = pool.get_service_by_name(SERVICE).expect("the service");
        let method = |name: &str| {
            service
                .methods()
                .find(|m| m.name() == name)
                .unwrap_or_else(|| panic!("{name} is described"))
        };
        let connect = method("Connect");
        assert_eq!(connect.input().full_name(), "virtufin.ConnectRequest");
        assert_eq!(connect.output().full_name(), "virtufin.ConnectResponse");
        let fields: Vec<String> = connect
            .input()
            .fields()
            .map(|f| f.name().to_owned())
            .collect();
        for field in ["url", "auto_reconnect", "tags", "headers", "on_connect"] {
            assert!(fields.iter().any(|f| f == field), "{fields:?}");
        }
        assert_eq!(method("List").input().full_name(), "virtufin.ListRequest");
        assert_eq!(
            method("GetTags").output().full_name(),
            "virtufin.GetTagsResponse"
        );
        assert!(method("Subscribe").is_server_streaming());
        let rotate = method("Rotate");
        assert_eq!(rotate.input().full_name(), "virtufin.RotateRequest");
        let answers: Vec<String> = rotate
            .output()
            .fields()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(answers, ["overlap", "duplicates", "took_ms"]);
        // The same file, asked for by a message it defines.
        let by_message = reflection.pool_for("virtufin.ConnectRequest").await;
        assert!(by_message.get_service_by_name(SERVICE).is_some());
    })
    .await;
}

#[tokio::test]
async fn json_calls_through_dynamic_messages_connect_list_and_read_tags() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let gateway = Gateway::discover(wsm.channel().await, SERVICE).await;
        let url = feed.url("/ws");

        let connected = gateway
            .call(
                "Connect",
                &json!({"url": url, "auto_reconnect": false, "tags": {"k": "v", "desk": "fx"}}),
            )
            .await
            .expect("Connect");
        assert_eq!(connected["status"], "connected");
        let id = connected["id"].as_str().expect("an id").to_owned();
        assert!(!id.is_empty());

        let listed = gateway
            .call("List", &json!({"filters": [{"key": "k", "value": "v"}]}))
            .await
            .expect("List");
        let connections = listed["connections"].as_array().expect("connections");
        assert_eq!(connections.len(), 1, "{listed}");
        let connection = &connections[0];
        assert_eq!(connection["id"], id.as_str());
        assert_eq!(connection["url"], url.as_str());
        assert_eq!(connection["status"], "connected");
        assert_eq!(connection["instanceId"], "wsm-api-test");
        assert_eq!(connection["tags"], json!({"k": "v", "desk": "fx"}));
        assert_eq!(
            connection["epoch"], "1",
            "uint64 is a JSON string in proto3 JSON"
        );
        let none = gateway
            .call(
                "List",
                &json!({"filters": [{"key": "k", "value": "other"}]}),
            )
            .await
            .expect("List");
        assert_eq!(none, json!({"connections": []}));

        let tags = gateway
            .call("GetTags", &json!({"id": id}))
            .await
            .expect("GetTags");
        assert_eq!(tags, json!({"tags": {"k": "v", "desk": "fx"}}));
    })
    .await;
}

#[tokio::test]
async fn dynamic_calls_get_the_services_status_codes() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let gateway = Gateway::discover(wsm.channel().await, SERVICE).await;
        let status = gateway
            .call("GetTags", &json!({"id": "no-such-connection"}))
            .await
            .expect_err("unknown id");
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "Connection not found")
        );
        let status = gateway
            .call("Rotate", &json!({"id": "no-such-connection"}))
            .await
            .expect_err("unknown id");
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "Connection not found")
        );
        let status = gateway
            .call("Connect", &json!({"url": "http://example.com/"}))
            .await
            .expect_err("not a WebSocket URL");
        assert_eq!(status.code(), Code::InvalidArgument);
    })
    .await;
}

#[tokio::test]
async fn grpc_health_check_is_serving() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let mut health = HealthClient::new(wsm.channel().await);
        for service in ["", SERVICE] {
            let response = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("Check({service:?}): {e:?}"))
                .into_inner();
            assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn grpc_health_is_discoverable_by_reflection_and_serving() {
    bounded(async {
        let wsm = Wsm::start(&[]).await;
        let gateway = Gateway::discover(wsm.channel().await, "grpc.health.v1.Health").await;
        for service in ["", SERVICE] {
            let response = gateway
                .call("Check", &json!({ "service": service }))
                .await
                .unwrap_or_else(|e| panic!("Check({service:?}): {e:?}"));
            assert_eq!(response, json!({"status": "SERVING"}), "{service:?}");
        }
    })
    .await;
}
