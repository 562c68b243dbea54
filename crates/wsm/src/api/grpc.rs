//! `virtufin.WebSocketManager` over tonic. Each RPC converts its message, calls the service, and
//! counts the outcome; `Subscribe` streams a topic from [`TopicTail`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use super::convert;
use super::proto::{self, web_socket_manager_server::WebSocketManager};
use super::status::code_name;
use super::tail::TopicTail;
use crate::error::ServiceError;
use crate::service::WebSocketService;

/// What the API layer counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    /// Calls by method and gRPC code name.
    requests: Mutex<HashMap<(&'static str, &'static str), u64>>,
    /// Connection-specific calls that reached an instance that does not own the connection.
    pub ownership_misses: AtomicU64,
    /// Calls forwarded to the owning instance.
    pub forwarded: AtomicU64,
    /// `Subscribe` streams open now.
    pub subscribers: AtomicU64,
}

impl ApiMetrics {
    fn count(&self, method: &'static str, code: Code) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests.entry((method, code_name(code))).or_default() += 1;
    }

    /// `(method, code, calls)`, sorted.
    pub fn requests(&self) -> Vec<(&'static str, &'static str, u64)> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<_> = requests.iter().map(|(&(m, c), &n)| (m, c, n)).collect();
        rows.sort_unstable();
        rows
    }
}

/// The gRPC service implementation. Cheap to clone.
#[derive(Clone)]
pub struct GrpcApi {
    service: WebSocketService,
    tail: TopicTail,
    metrics: Arc<ApiMetrics>,
}

impl GrpcApi {
    pub fn new(service: WebSocketService, tail: TopicTail) -> Self {
        GrpcApi {
            service,
            tail,
            metrics: Arc::new(ApiMetrics::default()),
        }
    }

    pub fn service(&self) -> &WebSocketService {
        &self.service
    }

    pub fn metrics(&self) -> &Arc<ApiMetrics> {
        &self.metrics
    }

    /// Counts the outcome and turns it into the RPC's result.
    fn answer<T>(&self, method: &'static str, result: Result<T, ServiceError>) -> RpcResult<T> {
        match result {
            Ok(message) => {
                self.metrics.count(method, Code::Ok);
                Ok(Response::new(message))
            }
            Err(e) => {
                if matches!(e, ServiceError::NotOwner { .. }) {
                    self.metrics
                        .ownership_misses
                        .fetch_add(1, Ordering::Relaxed);
                }
                let status = Status::from(e);
                self.metrics.count(method, status.code());
                Err(status)
            }
        }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl WebSocketManager for GrpcApi {
    async fn connect(
        &self,
        request: Request<proto::ConnectRequest>,
    ) -> RpcResult<proto::ConnectResponse> {
        let result = match convert::connect_request(request.into_inner()) {
            Ok(req) => self
                .service
                .connect(req)
                .await
                .map(|record| proto::ConnectResponse {
                    id: record.id,
                    status: record.status.as_str().to_owned(),
                }),
            Err(e) => Err(e),
        };
        self.answer("Connect", result)
    }

    async fn list(&self, request: Request<proto::ListRequest>) -> RpcResult<proto::ListResponse> {
        let filters = convert::filters(request.into_inner().filters);
        let result = self
            .service
            .list(&filters)
            .await
            .map(|records| proto::ListResponse {
                connections: records.into_iter().map(convert::connection).collect(),
            });
        self.answer("List", result)
    }

    async fn disconnect(
        &self,
        request: Request<proto::DisconnectRequest>,
    ) -> RpcResult<proto::DisconnectResponse> {
        let req = request.into_inner();
        let result = self.service.disconnect(&req.id).await;
        self.answer("Disconnect", result.map(|()| proto::DisconnectResponse {}))
    }

    async fn start_publish(
        &self,
        request: Request<proto::StartPublishRequest>,
    ) -> RpcResult<proto::StartPublishResponse> {
        let req = request.into_inner();
        let result = self.service.start_publish(&req.id, &req.topic).await;
        self.answer(
            "StartPublish",
            result.map(|()| proto::StartPublishResponse {}),
        )
    }

    async fn stop_publish(
        &self,
        request: Request<proto::StopPublishRequest>,
    ) -> RpcResult<proto::StopPublishResponse> {
        let req = request.into_inner();
        let result = self.service.stop_publish(&req.id).await;
        self.answer(
            "StopPublish",
            result.map(|()| proto::StopPublishResponse {}),
        )
    }

    async fn send(&self, request: Request<proto::SendRequest>) -> RpcResult<proto::SendResponse> {
        let req = request.into_inner();
        let result = self
            .service
            .send(
                &req.id,
                req.message.into(),
                &req.content_type,
                req.timeout_ms,
            )
            .await
            .map(|response| proto::SendResponse {
                response: response.to_vec(),
            });
        self.answer("Send", result)
    }

    async fn send_raw(
        &self,
        request: Request<proto::SendRawRequest>,
    ) -> RpcResult<proto::SendRawResponse> {
        let req = request.into_inner();
        let result = self
            .service
            .send_raw(
                &req.id,
                req.message.into(),
                &req.content_type,
                req.replay_on_reconnect,
            )
            .await;
        self.answer("SendRaw", result.map(|()| proto::SendRawResponse {}))
    }

    async fn set_tag(
        &self,
        request: Request<proto::SetTagRequest>,
    ) -> RpcResult<proto::SetTagResponse> {
        let req = request.into_inner();
        let result = self.service.set_tag(&req.id, &req.key, &req.value).await;
        self.answer("SetTag", result.map(|()| proto::SetTagResponse {}))
    }

    async fn get_tag(
        &self,
        request: Request<proto::GetTagRequest>,
    ) -> RpcResult<proto::GetTagResponse> {
        let req = request.into_inner();
        let result = self.service.get_tag(&req.id, &req.key).await;
        self.answer(
            "GetTag",
            result.map(|value| proto::GetTagResponse { value }),
        )
    }

    async fn set_tags(
        &self,
        request: Request<proto::SetTagsRequest>,
    ) -> RpcResult<proto::SetTagsResponse> {
        let req = request.into_inner();
        let result = self
            .service
            .set_tags(&req.id, req.tags.into_iter().collect())
            .await;
        self.answer("SetTags", result.map(|()| proto::SetTagsResponse {}))
    }

    async fn get_tags(
        &self,
        request: Request<proto::GetTagsRequest>,
    ) -> RpcResult<proto::GetTagsResponse> {
        let req = request.into_inner();
        let result = self
            .service
            .get_tags(&req.id)
            .await
            .map(|tags| proto::GetTagsResponse {
                tags: tags.into_iter().collect(),
            });
        self.answer("GetTags", result)
    }

    type SubscribeStream =
        Pin<Box<dyn Stream<Item = Result<proto::PublishedEvent, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> RpcResult<Self::SubscribeStream> {
        let topic = request.into_inner().topic;
        if topic.trim().is_empty() {
            let e = ServiceError::InvalidArgument("Topic is required".into());
            return self.answer("Subscribe", Err(e));
        }
        let events = match self.tail.open(topic, Arc::clone(&self.metrics)).await {
            Ok(events) => events,
            Err(status) => {
                self.metrics.count("Subscribe", status.code());
                return Err(status);
            }
        };
        let stream: Self::SubscribeStream = Box::pin(ReceiverStream::new(events));
        self.answer("Subscribe", Ok(stream))
    }
}
