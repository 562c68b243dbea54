//! `virtufin.WebSocketManager` over tonic. Each RPC converts its message, calls the service, and
//! counts the outcome; `Subscribe` streams a topic from [`TopicTail`]. A connection-specific call
//! that reaches an instance not owning the connection is forwarded to the owner once (see
//! [`GrpcApi::on_owner`]), or the connection is claimed when the owner is stale or unreachable.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use super::convert;
use super::metrics::ApiMetrics;
use super::tail::TopicTail;
use crate::cluster::{self, Cluster, Outcome, PeerClient};
use crate::error::ServiceError;
use crate::proto::{self, web_socket_manager_server::WebSocketManager};
use crate::service::WebSocketService;

/// Bounds of how long a forwarded call may take (Send: its own timeout plus this).
const FORWARD_TIMEOUT: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(2)..=Duration::from_secs(15);

/// The gRPC service implementation. Cheap to clone.
#[derive(Clone)]
pub struct GrpcApi {
    service: WebSocketService,
    tail: TopicTail,
    metrics: Arc<ApiMetrics>,
    /// Forwarding and claims; `None` for a lone instance without heartbeats (calls on another
    /// instance's connection are then FAILED_PRECONDITION naming the owner).
    cluster: Option<Arc<Cluster>>,
}

impl GrpcApi {
    pub fn new(service: WebSocketService, tail: TopicTail, cluster: Option<Arc<Cluster>>) -> Self {
        super::guard::install_hook();
        GrpcApi {
            service,
            tail,
            metrics: Arc::new(ApiMetrics::default()),
            cluster,
        }
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// How long a forwarded call may wait for the owner: about the stale threshold, since an
    /// owner silent that long is taken over anyway (within 2 s to 15 s).
    fn forward_timeout(&self) -> Duration {
        let stale = self
            .cluster
            .as_ref()
            .map_or(*FORWARD_TIMEOUT.end(), |c| c.config().stale_after);
        stale.clamp(*FORWARD_TIMEOUT.start(), *FORWARD_TIMEOUT.end())
    }

    /// Serves a connection-specific call where the connection lives. `local` runs it here; if
    /// another instance owns the connection, the call goes to that owner through `remote` (once:
    /// a call that was itself forwarded is answered here, as FAILED_PRECONDITION naming the
    /// owner). If the owner is stale, stopped or unreachable, this instance claims the connection
    /// and serves the call itself.
    async fn on_owner<Req, Resp, L, LF, R, RF>(
        &self,
        method: &'static str,
        request: Request<Req>,
        id: impl Fn(&Req) -> &str,
        timeout: Duration,
        local: L,
        remote: R,
    ) -> RpcResult<Resp>
    where
        Req: Clone,
        L: Fn(Req) -> LF,
        LF: Future<Output = Result<Resp, ServiceError>>,
        R: FnOnce(PeerClient, Request<Req>) -> RF,
        RF: Future<Output = Result<Response<Resp>, Status>>,
    {
        let connection = id(request.get_ref()).to_owned();
        self.guarded(method, &connection, async move {
            let forwarded_by = cluster::forwarded_by(request.metadata());
            let req = request.into_inner();
            let owner = match local(req.clone()).await {
                Err(ServiceError::NotOwner { owner, .. }) => owner,
                other => return self.answer(method, other),
            };
            self.metrics
                .ownership_misses
                .fetch_add(1, Ordering::Relaxed);
            let id = id(&req).to_owned();
            let Some(cluster) = &self.cluster else {
                return self.refuse(method, ServiceError::NotOwner { id, owner });
            };
            let outcome = cluster
                .forward_or_claim(&id, &owner, forwarded_by, req.clone(), timeout, remote)
                .await;
            match outcome {
                Outcome::Forwarded(result) => {
                    self.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
                    let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
                    self.metrics.count(method, code);
                    result
                }
                Outcome::Claimed => self.answer(method, local(req).await),
                Outcome::Refused(e) => self.refuse(method, e),
                Outcome::Failed(e) => self.answer(method, Err(e)),
            }
        })
        .await
    }

    /// Runs one call behind the panic barrier: a panic answers INTERNAL, counted like any answer.
    async fn guarded<T>(
        &self,
        method: &'static str,
        id: &str,
        call: impl Future<Output = RpcResult<T>>,
    ) -> RpcResult<T> {
        match super::guard::guard(method, id, &self.metrics.panics, call).await {
            Ok(result) => result,
            Err(status) => {
                self.metrics.count(method, status.code());
                Err(status)
            }
        }
    }

    /// Answers a miss that was already counted.
    fn refuse<T>(&self, method: &'static str, e: ServiceError) -> RpcResult<T> {
        let status = Status::from(e);
        self.metrics.count(method, status.code());
        Err(status)
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
        self.guarded("Connect", "", async move {
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
        })
        .await
    }

    async fn list(&self, request: Request<proto::ListRequest>) -> RpcResult<proto::ListResponse> {
        self.guarded("List", "", async move {
            let filters = convert::filters(request.into_inner().filters);
            let result = self
                .service
                .list(&filters)
                .await
                .map(|records| proto::ListResponse {
                    connections: records.into_iter().map(convert::connection).collect(),
                });
            self.answer("List", result)
        })
        .await
    }

    async fn disconnect(
        &self,
        request: Request<proto::DisconnectRequest>,
    ) -> RpcResult<proto::DisconnectResponse> {
        self.on_owner(
            "Disconnect",
            request,
            |r| &r.id,
            self.forward_timeout(),
            |r| async move {
                self.service.disconnect(&r.id).await?;
                Ok(proto::DisconnectResponse {})
            },
            |mut c, r| async move { c.disconnect(r).await },
        )
        .await
    }

    async fn start_publish(
        &self,
        request: Request<proto::StartPublishRequest>,
    ) -> RpcResult<proto::StartPublishResponse> {
        self.on_owner(
            "StartPublish",
            request,
            |r| &r.id,
            self.forward_timeout(),
            |r| async move {
                self.service.start_publish(&r.id, &r.topic).await?;
                Ok(proto::StartPublishResponse {})
            },
            |mut c, r| async move { c.start_publish(r).await },
        )
        .await
    }

    async fn stop_publish(
        &self,
        request: Request<proto::StopPublishRequest>,
    ) -> RpcResult<proto::StopPublishResponse> {
        self.on_owner(
            "StopPublish",
            request,
            |r| &r.id,
            self.forward_timeout(),
            |r| async move {
                self.service.stop_publish(&r.id).await?;
                Ok(proto::StopPublishResponse {})
            },
            |mut c, r| async move { c.stop_publish(r).await },
        )
        .await
    }

    async fn send(&self, request: Request<proto::SendRequest>) -> RpcResult<proto::SendResponse> {
        // The owner applies the call's own timeout; the forward waits a little longer for it.
        let own = u64::try_from(request.get_ref().timeout_ms).unwrap_or(0);
        let own = Duration::from_millis(own).min(crate::service::MAX_SEND_TIMEOUT);
        let timeout = own.max(Duration::from_secs(5)) + self.forward_timeout();
        self.on_owner(
            "Send",
            request,
            |r| &r.id,
            timeout,
            |r| async move {
                let response = self
                    .service
                    .send(&r.id, r.message.into(), &r.content_type, r.timeout_ms)
                    .await?;
                Ok(proto::SendResponse {
                    response: response.to_vec(),
                })
            },
            |mut c, r| async move { c.send(r).await },
        )
        .await
    }

    async fn send_raw(
        &self,
        request: Request<proto::SendRawRequest>,
    ) -> RpcResult<proto::SendRawResponse> {
        self.on_owner(
            "SendRaw",
            request,
            |r| &r.id,
            self.forward_timeout(),
            |r| async move {
                self.service
                    .send_raw(
                        &r.id,
                        r.message.into(),
                        &r.content_type,
                        r.replay_on_reconnect,
                    )
                    .await?;
                Ok(proto::SendRawResponse {})
            },
            |mut c, r| async move { c.send_raw(r).await },
        )
        .await
    }

    async fn set_tag(
        &self,
        request: Request<proto::SetTagRequest>,
    ) -> RpcResult<proto::SetTagResponse> {
        self.on_owner(
            "SetTag",
            request,
            |r| &r.id,
            self.forward_timeout(),
            |r| async move {
                self.service.set_tag(&r.id, &r.key, &r.value).await?;
                Ok(proto::SetTagResponse {})
            },
            |mut c, r| async move { c.set_tag(r).await },
        )
        .await
    }

    async fn get_tag(
        &self,
        request: Request<proto::GetTagRequest>,
    ) -> RpcResult<proto::GetTagResponse> {
        let req = request.into_inner();
        self.guarded("GetTag", &req.id, async {
            let result = self.service.get_tag(&req.id, &req.key).await;
            self.answer(
                "GetTag",
                result.map(|value| proto::GetTagResponse { value }),
            )
        })
        .await
    }

    async fn set_tags(
        &self,
        request: Request<proto::SetTagsRequest>,
    ) -> RpcResult<proto::SetTagsResponse> {
        self.on_owner(
            "SetTags",
            request,
            |r| &r.id,
            self.forward_timeout(),
            |r| async move {
                self.service
                    .set_tags(&r.id, r.tags.into_iter().collect())
                    .await?;
                Ok(proto::SetTagsResponse {})
            },
            |mut c, r| async move { c.set_tags(r).await },
        )
        .await
    }

    async fn get_tags(
        &self,
        request: Request<proto::GetTagsRequest>,
    ) -> RpcResult<proto::GetTagsResponse> {
        let req = request.into_inner();
        self.guarded("GetTags", &req.id, async {
            let result = self
                .service
                .get_tags(&req.id)
                .await
                .map(|tags| proto::GetTagsResponse {
                    tags: tags.into_iter().collect(),
                });
            self.answer("GetTags", result)
        })
        .await
    }

    async fn rotate(
        &self,
        request: Request<proto::RotateRequest>,
    ) -> RpcResult<proto::RotateResponse> {
        // The owner answers once the old leg closed: at most the overlap bound after the new
        // leg's handshake; the forward waits that long plus its own margin.
        let timeout = crate::connection::OVERLAP_BOUND
            + self.service.connect_timeout()
            + self.forward_timeout();
        self.on_owner(
            "Rotate",
            request,
            |r| &r.id,
            timeout,
            |r| async move {
                let rotated = self.service.rotate(&r.id).await?;
                Ok(proto::RotateResponse {
                    overlap: rotated.overlap,
                    duplicates: rotated.duplicates,
                    took_ms: u64::try_from(rotated.took.as_millis()).unwrap_or(u64::MAX),
                })
            },
            |mut c, r| async move { c.rotate(r).await },
        )
        .await
    }

    type SubscribeStream =
        Pin<Box<dyn Stream<Item = Result<proto::PublishedEvent, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> RpcResult<Self::SubscribeStream> {
        self.guarded("Subscribe", "", async move {
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
            let stream: Self::SubscribeStream = Box::pin(events);
            self.answer("Subscribe", Ok(stream))
        })
        .await
    }
}
