//! The HTTP port: `/health` (the process answers), `/ready` (the state store and the bus answer),
//! `/metrics` (Prometheus text) and `POST /v1/invoke/{Method}` (proto3-JSON; errors as
//! `{"code","message"}` with the matching HTTP status). API keys guard everything but the two probes.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::auth::{ApiKeys, Port, API_KEY_HEADER, PEER_KEY_HEADER};
use super::grpc::GrpcApi;
use super::invoke::Invoker;
use super::status::{code_name, http_status};

/// How long `/ready` waits for each backend.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Http {
    api: GrpcApi,
    invoker: Invoker,
    keys: ApiKeys,
    body: BodyLimits,
}

/// How large a request body may be (base64 makes a message 4/3 larger), and how long the client
/// may take to send it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub within: Duration,
}

/// The HTTP port's routes.
pub fn router(api: GrpcApi, keys: ApiKeys, body: BodyLimits) -> Router {
    let state = Http {
        invoker: Invoker::new(api.clone()),
        api,
        keys: keys.clone(),
        body,
    };
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/invoke/{method}", post(invoke))
        .layer(middleware::from_fn_with_state(keys, require_key));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(guarded)
        .with_state(state)
}

async fn require_key(State(keys): State<ApiKeys>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let api_key = headers.get(API_KEY_HEADER).map(|v| v.as_bytes());
    let peer_key = headers.get(PEER_KEY_HEADER).map(|v| v.as_bytes());
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    match keys.admit(Port::Http, api_key, peer_key, peer) {
        Ok(()) => next.run(request).await,
        Err(refused) => error_body(tonic::Code::Unauthenticated, refused.message()),
    }
}

async fn health(State(http): State<Http>) -> Response {
    Json(json!({"status": "ok", "instanceId": http.api.service().instance_id()})).into_response()
}

async fn ready(State(http): State<Http>) -> Response {
    let checks = tokio::time::timeout(READY_TIMEOUT, http.api.service().readiness()).await;
    let Ok(checks) = checks else {
        let body =
            json!({"status": "not ready", "reason": "the backends did not answer within 2 s"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    };
    let mut body = serde_json::Map::new();
    let mut ready = true;
    for (name, result) in checks {
        let value = match result {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                ready = false;
                e
            }
        };
        body.insert(name.to_owned(), value.into());
    }
    let status = if ready { "ready" } else { "not ready" };
    body.insert("status".into(), status.into());
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(serde_json::Value::Object(body))).into_response()
}

async fn metrics(State(http): State<Http>) -> Response {
    let service = http.api.service();
    let text = super::metrics::render(
        &service.snapshot(),
        service.metrics(),
        http.api.metrics(),
        http.keys.failures(),
        http.api.cluster().map(|c| &**c),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn invoke(
    State(http): State<Http>,
    Path(method): Path<String>,
    request: Request,
) -> Response {
    // Bounded in size and in time: a client dribbling a large body would hold its connection
    // (and its slot of the port's cap) for as long as it liked.
    let limits = http.body;
    let read = axum::body::to_bytes(request.into_body(), limits.max_bytes);
    let body: Bytes = match tokio::time::timeout(limits.within, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                error_body(
                    tonic::Code::ResourceExhausted,
                    &format!(
                        "the request body is over {} bytes (--max-message-bytes, base64 included)",
                        limits.max_bytes
                    ),
                )
            } else {
                error_body(
                    tonic::Code::InvalidArgument,
                    &format!("the request body could not be read: {e}"),
                )
            };
        }
        Err(_) => {
            return error_body(
                tonic::Code::DeadlineExceeded,
                &format!(
                    "the request body did not arrive within {} ms (--http-body-timeout-ms)",
                    limits.within.as_millis()
                ),
            )
        }
    };
    // The RPCs have their own barrier; this one covers the JSON transcoding around them.
    let panics = &http.api.metrics().panics;
    let call = super::guard::guard(
        "/v1/invoke",
        "",
        panics,
        http.invoker.invoke(&method, &body),
    );
    match call.await.and_then(|result| result) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(status) => error_body(status.code(), status.message()),
    }
}

/// `{"code":"NOT_FOUND","message":"..."}` with the code's HTTP status.
fn error_body(code: tonic::Code, message: &str) -> Response {
    let status =
        StatusCode::from_u16(http_status(code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"code": code_name(code), "message": message})),
    )
        .into_response()
}
