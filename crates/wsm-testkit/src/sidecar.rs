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

/// components-contrib `state/redis/redis.go` `setDefaultQuery`, verbatim.
const SET_DEFAULT_QUERY: &str = r#"
	local etag = redis.pcall("HGET", KEYS[1], "version");
	if type(etag) == "table" then
	  redis.call("DEL", KEYS[1]);
	end;
	local fwr = redis.pcall("HGET", KEYS[1], "first-write");
	if not etag or type(etag)=="table" or etag == "" or etag == ARGV[1] or (not fwr and ARGV[1] == "0") then
	  redis.call("HSET", KEYS[1], "data", ARGV[2]);
	  if ARGV[3] == "0" then
	    redis.call("HSET", KEYS[1], "first-write", 0);
	  end;
	  return redis.call("HINCRBY", KEYS[1], "version", 1)
	else
	  return error("failed to set key " .. KEYS[1])
	end"#;

/// components-contrib `state/redis/redis.go` `delDefaultQuery`, verbatim.
const DEL_DEFAULT_QUERY: &str = r#"
	local etag = redis.pcall("HGET", KEYS[1], "version");
	if not etag or type(etag)=="table" or etag == ARGV[1] or etag == "" or ARGV[1] == "0" then
	  return redis.call("DEL", KEYS[1])
	else
	  return error("failed to delete " .. KEYS[1])
	end"#;

#[derive(Debug, Default)]
struct Faults {
    failing: AtomicBool,
    delay_ms: AtomicU64,
}

#[derive(Clone)]
struct App {
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

async fn inject_faults(
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
fn dapr_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut body = Vec::new();
    body.extend_from_slice(b"{\"errorCode\":");
    gojson::go_string(code, &mut body);
    body.extend_from_slice(b",\"message\":");
    gojson::go_string(message, &mut body);
    body.push(b'}');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `metadata.<k>=v` query parameters (the first value of each), as `getMetadataFromRequest`.
fn request_metadata(query: &[(String, String)]) -> BTreeMap<String, String> {
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
fn redis_text(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

/// `GetModifiedStateKey` with the default `keyPrefix` (the app id).
fn modified_key(app: &App, key: &str) -> Result<String, String> {
    if key.contains("||") {
        return Err(format!("input key/keyPrefix '{key}' can't contain '||'"));
    }
    Ok(format!("{}||{key}", app.app_id))
}

/// Go's `strconv.Atoi`.
fn atoi(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

async fn healthz() -> Response {
    no_content()
}

fn store_not_found(store: &str) -> Response {
    dapr_error(
        StatusCode::BAD_REQUEST,
        "ERR_STATE_STORE_NOT_FOUND",
        &format!("state store {store} is not found"),
    )
}

/// One decoded state item, checked and ready to write.
struct SaveRequest {
    key: String,
    data: Vec<u8>,
    etag: Option<String>,
    concurrency: String,
    consistency: String,
    ttl: Option<String>,
}

/// A field of a Go struct decoded from `fields`: exact name first, then case-insensitively.
fn go_field<'a>(fields: &'a BTreeMap<String, Json>, name: &str) -> Option<&'a Json> {
    fields.get(name).or_else(|| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn go_string_field(fields: &BTreeMap<String, Json>, name: &str) -> Result<Option<String>, String> {
    match go_field(fields, name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "json: cannot unmarshal {other:?} into Go struct field .{name} of type string"
        )),
    }
}

fn go_string_map(value: Option<&Json>, name: &str) -> Result<BTreeMap<String, String>, String> {
    match value {
        None | Some(Json::Null) => Ok(BTreeMap::new()),
        Some(Json::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Json::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!(
                    "json: cannot unmarshal {other:?} into Go struct field .{name} of type string"
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "json: cannot unmarshal {other:?} into Go struct field .{name}"
        )),
    }
}

fn decode_save_item(
    app: &App,
    item: &Json,
    query: &BTreeMap<String, String>,
) -> Result<SaveRequest, Box<Response>> {
    let malformed = |e: String| {
        Box::new(dapr_error(
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
            &e,
        ))
    };
    let Json::Object(fields) = item else {
        return Err(malformed(
            "json: cannot unmarshal into Go value of type state.SetRequest".into(),
        ));
    };
    let key = go_string_field(fields, "key")
        .map_err(malformed)?
        .unwrap_or_default();
    if key.is_empty() {
        return Err(malformed("\"key\" is a required field".into()));
    }
    let key = modified_key(app, &key).map_err(malformed)?;
    let value = go_field(fields, "value").cloned().unwrap_or(Json::Null);
    let data = gojson::marshal_jsoniter_fastest(&value).map_err(malformed)?;
    let etag = go_string_field(fields, "etag").map_err(malformed)?;
    let mut metadata =
        go_string_map(go_field(fields, "metadata"), "metadata").map_err(malformed)?;
    metadata.extend(query.iter().map(|(k, v)| (k.clone(), v.clone())));
    let (concurrency, consistency) = match go_field(fields, "options") {
        None | Some(Json::Null) => (String::new(), String::new()),
        Some(Json::Object(options)) => (
            go_string_field(options, "concurrency")
                .map_err(malformed)?
                .unwrap_or_default(),
            go_string_field(options, "consistency")
                .map_err(malformed)?
                .unwrap_or_default(),
        ),
        Some(other) => {
            return Err(malformed(format!(
                "json: cannot unmarshal {other:?} into options"
            )))
        }
    };
    Ok(SaveRequest {
        key,
        data,
        etag,
        concurrency,
        consistency,
        ttl: metadata
            .get("ttlInSeconds")
            .filter(|v| !v.is_empty())
            .cloned(),
    })
}

async fn save_state(
    State(app): State<App>,
    Path(store): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    if store != *app.store_name {
        return store_not_found(&store);
    }
    let items = match gojson::parse(&body) {
        Ok(Json::Array(items)) => items,
        Ok(_) => {
            return dapr_error(
                StatusCode::BAD_REQUEST,
                "ERR_MALFORMED_REQUEST",
                "json: cannot unmarshal object into Go value of type []state.SetRequest",
            )
        }
        Err(e) => return dapr_error(StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", &e),
    };
    let query = request_metadata(&query);
    // daprd checks every item before writing any.
    let mut requests = Vec::with_capacity(items.len());
    for item in &items {
        match decode_save_item(&app, item, &query) {
            Ok(request) => requests.push(request),
            Err(response) => return *response,
        }
    }
    for request in requests {
        if let Err(response) = set_one(&app, request).await {
            return *response;
        }
    }
    no_content()
}

/// components-contrib Redis `StateStore.Set`.
async fn set_one(app: &App, req: SaveRequest) -> Result<(), Box<Response>> {
    let fail = |status: StatusCode, message: String| {
        Box::new(dapr_error(
            status,
            "ERR_STATE_SAVE",
            &format!(
                "failed saving state in state store {}: {message}",
                app.store_name
            ),
        ))
    };
    if !matches!(req.concurrency.as_str(), "" | "first-write" | "last-write")
        || !matches!(req.consistency.as_str(), "" | "eventual" | "strong")
    {
        return Err(fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "invalid request options: {:?} {:?}",
                req.concurrency, req.consistency
            ),
        ));
    }
    let has_etag = req.etag.as_deref().is_some_and(|e| !e.is_empty());
    let version = match req.etag.as_deref() {
        Some(etag) if req.concurrency != "last-write" && !etag.is_empty() => match atoi(etag) {
            Some(v) => v,
            None => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    format!("invalid etag value: strconv.Atoi: parsing {etag:?}: invalid syntax"),
                ))
            }
        },
        _ => 0,
    };
    let ttl = match req.ttl.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(ttl)) => Some(ttl),
        Some(Err(e)) => {
            return Err(fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to parse ttl from metadata: {e}"),
            ))
        }
    };
    let first_write = if req.concurrency == "first-write" {
        0
    } else {
        1
    };
    let mut conn = app.redis.clone();
    let reply: Result<Value, RedisError> = redis::cmd("EVAL")
        .arg(SET_DEFAULT_QUERY)
        .arg(1)
        .arg(&req.key)
        .arg(version)
        .arg(&req.data)
        .arg(first_write)
        .query_async(&mut conn)
        .await;
    if let Err(e) = reply {
        return Err(if has_etag {
            fail(
                StatusCode::CONFLICT,
                format!(
                    "possible etag mismatch. error from state store: {}",
                    redis_text(&e)
                ),
            )
        } else {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to set key {}: {}", req.key, redis_text(&e)),
            )
        });
    }
    if let Some(ttl) = ttl {
        let (command, what) = if ttl > 0 {
            ("EXPIRE", "set key ttl")
        } else {
            ("PERSIST", "persist key")
        };
        let mut cmd = redis::cmd(command);
        cmd.arg(&req.key);
        if ttl > 0 {
            cmd.arg(ttl);
        }
        let reply: Result<Value, RedisError> = cmd.query_async(&mut conn).await;
        if let Err(e) = reply {
            return Err(fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to {what} {}: {}", req.key, redis_text(&e)),
            ));
        }
    }
    Ok(())
}

/// components-contrib Redis `getDefault`: `(data, etag)` or `None`.
async fn read_state(app: &App, key: &str) -> Result<Option<(Vec<u8>, Option<String>)>, String> {
    let mut conn = app.redis.clone();
    let reply: Result<Value, RedisError> =
        redis::cmd("HGETALL").arg(key).query_async(&mut conn).await;
    let pairs = match reply {
        Ok(Value::Array(items)) => items
            .chunks(2)
            .filter_map(|pair| match pair {
                [Value::BulkString(f), Value::BulkString(v)] => Some((f.clone(), v.clone())),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Ok(Value::Map(items)) => items
            .into_iter()
            .filter_map(|pair| match pair {
                (Value::BulkString(f), Value::BulkString(v)) => Some((f, v)),
                _ => None,
            })
            .collect(),
        Ok(Value::Nil) => Vec::new(),
        Ok(other) => return Err(format!("unexpected HGETALL reply {other:?}")),
        Err(_) => {
            // Backward compatibility: a plain string value, without ETag.
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_text(&e))?;
            return Ok(value.map(|v| (v, None)));
        }
    };
    if pairs.is_empty() {
        return Ok(None);
    }
    let data = pairs
        .iter()
        .find(|(f, _)| f == b"data")
        .map(|(_, v)| v.clone());
    let version = pairs
        .iter()
        .find(|(f, _)| f == b"version")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    match (data, version) {
        (Some(data), Some(version)) => Ok(Some((data, Some(version)))),
        _ => Err("required hash field 'data' or 'version' was not found".into()),
    }
}

async fn get_state(State(app): State<App>, Path((store, key)): Path<(String, String)>) -> Response {
    if store != *app.store_name {
        return store_not_found(&store);
    }
    let full = match modified_key(&app, &key) {
        Ok(full) => full,
        Err(e) => return dapr_error(StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", &e),
    };
    match read_state(&app, &full).await {
        Ok(None) => no_content(),
        Ok(Some((data, etag))) => {
            let mut response = (StatusCode::OK, data).into_response();
            if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
                response.headers_mut().insert(header::ETAG, etag);
            }
            response
        }
        Err(e) => dapr_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_STATE_GET",
            &format!("fail to get {key} from state store {store}: {e}"),
        ),
    }
}

async fn bulk_get_state(
    State(app): State<App>,
    Path(store): Path<String>,
    body: Bytes,
) -> Response {
    if store != *app.store_name {
        return store_not_found(&store);
    }
    let malformed = |e: String| {
        dapr_error(
            StatusCode::BAD_REQUEST,
            "ERR_MALFORMED_REQUEST",
            &format!("failed deserializing HTTP body: {e}"),
        )
    };
    let keys = match gojson::parse(&body) {
        Ok(Json::Object(fields)) => match go_field(&fields, "keys") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(keys)) => {
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    match key.as_str() {
                        Some(key) => out.push(key.to_owned()),
                        None => return malformed("keys must be strings".into()),
                    }
                }
                out
            }
            Some(_) => return malformed("keys must be an array".into()),
        },
        Ok(_) => return malformed("the body must be an object".into()),
        Err(e) => return malformed(e),
    };
    let mut body = Vec::from(&b"["[..]);
    for (n, key) in keys.iter().enumerate() {
        let full = match modified_key(&app, key) {
            Ok(full) => full,
            Err(e) => return dapr_error(StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", &e),
        };
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"key\":");
        gojson::go_string(key, &mut body);
        match read_state(&app, &full).await {
            Ok(None) => {}
            Ok(Some((data, etag))) => {
                // encoding/json compacts a RawMessage with HTML escaping; invalid JSON makes the
                // whole Encode fail, and daprd then writes nothing.
                let Ok(data) = gojson::compact_html(&data) else {
                    return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")])
                        .into_response();
                };
                if !data.is_empty() {
                    body.extend_from_slice(b",\"data\":");
                    body.extend_from_slice(&data);
                }
                if let Some(etag) = etag {
                    body.extend_from_slice(b",\"etag\":");
                    gojson::go_string(&etag, &mut body);
                }
            }
            Err(e) => {
                body.extend_from_slice(b",\"error\":");
                gojson::go_string(&e, &mut body);
            }
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"]\n");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn delete_state(
    State(app): State<App>,
    Path((store, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if store != *app.store_name {
        return store_not_found(&store);
    }
    let full = match modified_key(&app, &key) {
        Ok(full) => full,
        Err(e) => return dapr_error(StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", &e),
    };
    let etag = match headers.get(header::IF_MATCH) {
        Some(value) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        None => "0".to_owned(),
    };
    let reply: Result<Value, RedisError> = redis::cmd("EVAL")
        .arg(DEL_DEFAULT_QUERY)
        .arg(1)
        .arg(&full)
        .arg(&etag)
        .query_async(&mut app.redis.clone())
        .await;
    match reply {
        Ok(_) => no_content(),
        // Dapr's Redis store reports every delete failure as an ETag mismatch.
        Err(e) => dapr_error(
            StatusCode::CONFLICT,
            "ERR_STATE_DELETE",
            &format!(
                "failed deleting state with key {key}: possible etag mismatch. error from state store: {}",
                redis_text(&e)
            ),
        ),
    }
}

/// A fresh W3C trace context, as daprd puts in envelopes when tracing is on.
fn new_traceparent() -> String {
    let trace: u128 = rand::random();
    let span: u64 = rand::random();
    format!("00-{trace:032x}-{span:016x}-01")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `isContentType`: the media type before any `;`, case-insensitively.
fn is_content_type(content_type: &str, expected: &str) -> bool {
    let lower = content_type.to_ascii_lowercase();
    lower.split(';').next().unwrap_or_default() == expected
}

async fn publish(
    State(app): State<App>,
    Path((pubsub, topic)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if pubsub != *app.pubsub_name {
        return dapr_error(
            StatusCode::NOT_FOUND,
            "ERR_PUBSUB_NOT_FOUND",
            &format!("pubsub {pubsub} is not found"),
        );
    }
    if topic.is_empty() {
        return dapr_error(
            StatusCode::NOT_FOUND,
            "ERR_TOPIC_NAME_EMPTY",
            &format!("topic is empty in pubsub {pubsub}"),
        );
    }
    let metadata = request_metadata(&query);
    let raw_payload = match metadata.get("rawPayload").map(String::as_str) {
        None | Some("") => false,
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => true,
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => false,
        Some(other) => {
            return dapr_error(
                StatusCode::BAD_REQUEST,
                "ERR_PUBSUB_REQUEST_METADATA",
                &format!("failed deserializing metadata: rawPayload {other:?}"),
            )
        }
    };
    let data = if raw_payload {
        body.to_vec()
    } else {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let trace = new_traceparent();
        let envelope = if is_content_type(content_type, "application/cloudevents+json") {
            match from_cloud_event(&body, &topic, &pubsub, &trace) {
                Ok(envelope) => envelope,
                Err(e) => {
                    return dapr_error(
                        StatusCode::BAD_REQUEST,
                        "ERR_PUBSUB_CLOUD_EVENTS_SER",
                        &format!("cannot create cloudevent for app {}: {e}", app.app_id),
                    )
                }
            }
        } else {
            new_envelope(&app, &topic, content_type, &body, &trace, &metadata)
        };
        let mut envelope = envelope;
        apply_ttl(&mut envelope, &metadata);
        gojson::marshal_go(&Json::Object(envelope))
    };
    let metadata_json = gojson::marshal_go(&Json::Object(
        metadata
            .into_iter()
            .map(|(k, v)| (k, Json::String(v)))
            .collect(),
    ));
    let reply: Result<Value, RedisError> = redis::cmd("XADD")
        .arg(&topic)
        .arg("*")
        .arg("data")
        .arg(&data)
        .arg("metadata")
        .arg(&metadata_json)
        .query_async(&mut app.redis.clone())
        .await;
    match reply {
        Ok(_) => no_content(),
        Err(e) => dapr_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_PUBSUB_PUBLISH_MESSAGE",
            &format!(
                "error when publish to topic {topic} in pubsub {pubsub}: redis streams: error from publish: {}",
                redis_text(&e)
            ),
        ),
    }
}

/// components-contrib `FromCloudEvent` (with #3080: trace fields only when absent).
fn from_cloud_event(
    body: &[u8],
    topic: &str,
    pubsub: &str,
    trace: &str,
) -> Result<BTreeMap<String, Json>, String> {
    let Json::Object(mut event) = gojson::parse(body)? else {
        return Err("json: cannot unmarshal into Go value of type map[string]interface {}".into());
    };
    let nil = |event: &BTreeMap<String, Json>, key: &str| {
        matches!(event.get(key), None | Some(Json::Null))
    };
    if !event.contains_key("time") {
        event.insert("time".into(), Json::String(now_rfc3339()));
    }
    for (key, value) in [
        ("traceid", trace),
        ("traceparent", trace),
        ("tracestate", ""),
    ] {
        if nil(&event, key) {
            event.insert(key.into(), Json::String(value.into()));
        }
    }
    event.insert("topic".into(), Json::String(topic.into()));
    event.insert("pubsubname".into(), Json::String(pubsub.into()));
    for (key, default) in [
        ("source", "Dapr"),
        ("type", "com.dapr.event.sent"),
        ("specversion", "1.0"),
    ] {
        if nil(&event, key) {
            event.insert(key.into(), Json::String(default.into()));
        }
    }
    Ok(event)
}

/// components-contrib `NewCloudEventsEnvelope`, with daprd's `cloudevent.*` metadata overrides.
fn new_envelope(
    app: &App,
    topic: &str,
    content_type: &str,
    body: &[u8],
    trace: &str,
    metadata: &BTreeMap<String, String>,
) -> BTreeMap<String, Json> {
    let meta = |name: &str| {
        metadata
            .get(&format!("cloudevent.{name}"))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let content_type = if content_type.is_empty() {
        "text/plain"
    } else {
        content_type
    };
    let (field, data) = if is_content_type(content_type, "application/json") {
        match gojson::parse(body) {
            Ok(value) => ("data", value),
            Err(_) => (
                "data",
                Json::String(String::from_utf8_lossy(body).into_owned()),
            ),
        }
    } else if is_content_type(content_type, "application/octet-stream") {
        (
            "data_base64",
            Json::String(base64::engine::general_purpose::STANDARD.encode(body)),
        )
    } else {
        (
            "data",
            Json::String(String::from_utf8_lossy(body).into_owned()),
        )
    };
    let traceparent = meta("traceparent")
        .or_else(|| meta("traceid"))
        .unwrap_or_else(|| trace.to_owned());
    let mut envelope = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        envelope.insert(k.to_owned(), Json::String(v));
    };
    put(
        "id",
        meta("id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
    );
    put("specversion", "1.0".into());
    put("datacontenttype", content_type.into());
    put(
        "source",
        meta("source").unwrap_or_else(|| app.app_id.to_string()),
    );
    put(
        "type",
        meta("type").unwrap_or_else(|| "com.dapr.event.sent".into()),
    );
    put("topic", topic.into());
    put("pubsubname", app.pubsub_name.to_string());
    put("traceid", traceparent.clone());
    put("traceparent", traceparent);
    put("tracestate", meta("tracestate").unwrap_or_default());
    put("time", now_rfc3339());
    if let Some(subject) = meta("subject") {
        put("subject", subject);
    }
    envelope.insert(field.to_owned(), data);
    envelope
}

/// `pubsub.ApplyMetadata`: Redis Streams declares no message-TTL feature, so daprd writes
/// `expiration` itself.
fn apply_ttl(envelope: &mut BTreeMap<String, Json>, metadata: &BTreeMap<String, String>) {
    let ttl = metadata
        .get("ttlInSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&s| s > 0);
    if let Some(seconds) = ttl {
        let at = SystemTime::now() + Duration::from_secs(seconds);
        envelope.insert(
            "expiration".into(),
            Json::String(humantime::format_rfc3339_seconds(at).to_string()),
        );
    }
}
