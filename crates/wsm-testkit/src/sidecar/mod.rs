//! A stand-in for `daprd` (which cannot be installed here): the parts of Dapr's HTTP API WSM uses,
//! answering as daprd answers and writing Redis as Dapr's Redis state store and Redis Streams
//! pub/sub components write it.
//!
//! It is written from Dapr's sources (dapr `pkg/api/http/http.go`, components-contrib
//! `state/redis/redis.go`, `pubsub/redis/redis.go`, `pubsub/envelope.go`) and shares no code with
//! `wsm`'s Redis backend, so a test comparing what each leaves in Redis checks both:
//!
//! - `POST|PUT /v1.0/state/{store}`: items decoded with Go's decoder, `value` re-encoded as jsoniter
//!   does, Dapr's Lua `EVAL` (ETag / first-write checks), then `EXPIRE` or `PERSIST` for
//!   `metadata.ttlInSeconds`; 204, 409 on an ETag mismatch, 400 on a malformed ETag, 500 when the
//!   script refuses a write without ETag.
//! - `GET /v1.0/state/{store}/{key}`: `HGETALL`, body = `data`, `ETag` = `version`; 204 if absent.
//! - `POST|PUT /v1.0/state/{store}/bulk`: `[{key, data, etag}]`, `data` as Go re-encodes a
//!   `json.RawMessage`.
//! - `DELETE /v1.0/state/{store}/{key}`: Dapr's delete script with `If-Match`; 409 on any failure,
//!   as daprd answers.
//! - `POST|PUT /v1.0/publish/{pubsub}/{topic}`: CloudEvent envelope built or completed as daprd
//!   does, then `XADD <topic> * data <envelope> metadata <request metadata>`.
//! - `GET /v1.0/healthz`: 204.
//!
//! Trace attributes are filled with a fresh W3C `traceparent`, as daprd does when tracing is on.
//! For fault tests, [`DaprSidecar::set_failing`] makes every endpoint answer 500 and
//! [`DaprSidecar::set_delay`] delays every answer.
//!
//! The files: this one (the server, fault injection, what every endpoint shares), `state.rs` (the
//! state API), `pubsub.rs` (publishing).

mod pubsub;
mod state;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::gojson::{self, Json};

use pubsub::publish;
use state::{bulk_get_state, delete_state, get_state, save_state};

#[derive(Debug, Default)]
pub(super) struct Faults {
    failing: AtomicBool,
    delay_ms: AtomicU64,
}

#[derive(Clone)]
pub(super) struct App {
    redis: ConnectionManager,
    app_id: Arc<str>,
    store_name: Arc<str>,
    pubsub_name: Arc<str>,
}

/// A running test sidecar; stops when dropped.
#[derive(Debug)]
pub struct DaprSidecar {
    addr: SocketAddr,
    faults: Arc<Faults>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl DaprSidecar {
    /// Starts a sidecar for the app `app_id` with a Redis state store named `store_name` and a Redis
    /// Streams pub/sub named `pubsub_name`, both on `redis_url`, listening on a free loopback port.
    /// Panics if Redis cannot be reached (it is a test fixture).
    pub async fn start(redis_url: &str, app_id: &str, store_name: &str, pubsub_name: &str) -> Self {
        let client = redis::Client::open(redis_url).expect("a valid Redis URL for the sidecar");
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(1);
        let redis = ConnectionManager::new_with_config(client, config)
            .await
            .expect("the sidecar connects to Redis");
        let app = App {
            redis,
            app_id: app_id.into(),
            store_name: store_name.into(),
            pubsub_name: pubsub_name.into(),
        };
        let faults = Arc::new(Faults::default());
        let router = Router::new()
            .route("/v1.0/healthz", get(healthz))
            .route("/v1.0/state/{store}", post(save_state).put(save_state))
            .route(
                "/v1.0/state/{store}/bulk",
                post(bulk_get_state).put(bulk_get_state),
            )
            .route(
                "/v1.0/state/{store}/{key}",
                get(get_state).delete(delete_state),
            )
            .route(
                "/v1.0/publish/{pubsub}/{*topic}",
                post(publish).put(publish),
            )
            .with_state(app)
            .layer(middleware::from_fn_with_state(
                faults.clone(),
                inject_faults,
            ));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("binding the sidecar's port");
        let addr = listener.local_addr().expect("the sidecar's address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            faults,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// `http://127.0.0.1:<port>`, the base URL for Dapr's HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// While set, every endpoint answers 500 without touching Redis.
    pub fn set_failing(&self, failing: bool) {
        self.faults.failing.store(failing, Ordering::SeqCst);
    }

    /// Delays every answer by `delay` (to make clients time out).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.faults.delay_ms.store(ms, Ordering::SeqCst);
    }
}

impl Drop for DaprSidecar {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.abort();
    }
}

pub(super) async fn inject_faults(
    State(faults): State<Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    let delay = faults.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if faults.failing.load(Ordering::SeqCst) {
        return dapr_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_INJECTED",
            "fault injected by the test sidecar",
        );
    }
    next.run(request).await
}

/// daprd's error body.
pub(super) fn dapr_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut body = Vec::new();
    body.extend_from_slice(b"{\"errorCode\":");
    gojson::go_string(code, &mut body);
    body.extend_from_slice(b",\"message\":");
    gojson::go_string(message, &mut body);
    body.push(b'}');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `metadata.<k>=v` query parameters (the first value of each), as `getMetadataFromRequest`.
pub(super) fn request_metadata(query: &[(String, String)]) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    for (key, value) in query {
        if let Some(name) = key.strip_prefix("metadata.") {
            metadata
                .entry(name.to_owned())
                .or_insert_with(|| value.clone());
        }
    }
    metadata
}

/// Redis's error as go-redis prints it: `<CODE> <detail>`.
pub(super) fn redis_text(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

/// `GetModifiedStateKey` with the default `keyPrefix` (the app id).
pub(super) fn modified_key(app: &App, key: &str) -> Result<String, String> {
    if key.contains("||") {
        return Err(format!("input key/keyPrefix '{key}' can't contain '||'"));
    }
    Ok(format!("{}||{key}", app.app_id))
}

/// Go's `strconv.Atoi`.
pub(super) fn atoi(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub(super) async fn healthz() -> Response {
    no_content()
}

pub(super) fn store_not_found(store: &str) -> Response {
    dapr_error(
        StatusCode::BAD_REQUEST,
        "ERR_STATE_STORE_NOT_FOUND",
        &format!("state store {store} is not found"),
    )
}
