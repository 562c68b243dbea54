//! Backends over a Dapr sidecar's HTTP API (`http://127.0.0.1:3500` by default): state through
//! `/v1.0/state/{store}`, publishing through `/v1.0/publish/{pubsub}/{topic}`.
//!
//! How the trait maps onto the API, and why:
//!
//! - `set`: one item per request. `LastWrite` sends `options.concurrency: last-write`; `IfAbsent`
//!   sends `first-write` without an ETag (Dapr's first-write: see [`super::redis`] for what that
//!   means on Redis); `IfMatch(etag)` sends the `etag` with no concurrency option, which Dapr
//!   honours without marking the key first-write (a marked key refuses every later write without
//!   an ETag). The TTL goes in `metadata.ttlInSeconds`; `None` sends `-1`, on which Dapr persists
//!   the key. Values must be JSON: the HTTP API carries them as JSON, and daprd re-encodes them.
//! - `delete` with `IfMatch` sends `If-Match`. `IfAbsent` deletes nothing: a `GET` decides whether
//!   it conflicts.
//! - `get_bulk` uses `/bulk`; its `data` comes back re-encoded by Go's `encoding/json` (HTML
//!   characters as `\u003c`…), JSON-equal to what `get` returns.
//! - `publish` posts each event as `application/cloudevents+json` (so daprd keeps it, extensions
//!   included, and only adds its own fields), one request per event, in order; Dapr's bulk publish
//!   API is still alpha.
//!
//! Errors: 409 is a lost compare-and-set. daprd answers a refused first-write (or a last-write to a
//! first-write key) with a 500 whose message carries the Lua script's "failed to set key", so that
//! is a conflict too; other 5xx, connection failures and timeouts are `Unavailable` (with status
//! and body), other 4xx `Rejected`.
//!
//! Only plain `http://` is supported: the sidecar's API is served on loopback, and leaving TLS out
//! keeps a crypto provider out of the build.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{header, Client, Method, RequestBuilder, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{dapr_ttl_seconds, BackendError, Concurrency, Publisher, StateStore, Versioned};

const BACKEND: &str = "dapr";

/// Where the sidecar is and which of its components to use. Defaults are Dapr's and WSM's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaprConfig {
    /// The sidecar's HTTP API, `http://127.0.0.1:<dapr-http-port>`.
    pub base_url: String,
    /// The state store component (`--state-store-name`).
    pub store_name: String,
    /// The pub/sub component (`--pubsub-name`).
    pub pubsub_name: String,
    /// Limit for one request, connection included.
    pub timeout: Duration,
}

impl Default for DaprConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:3500".to_owned(),
            store_name: "statestore".to_owned(),
            pubsub_name: "pubsub".to_owned(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The HTTP client and base URL both backends share.
#[derive(Debug, Clone)]
struct Sidecar {
    http: Client,
    base: Url,
}

impl Sidecar {
    fn new(config: &DaprConfig) -> Result<Self, BackendError> {
        let rejected = |reason: String| BackendError::Rejected {
            backend: BACKEND,
            reason,
        };
        let base = Url::parse(&config.base_url)
            .map_err(|e| rejected(format!("invalid Dapr base URL {:?}: {e}", config.base_url)))?;
        if base.scheme() != "http" || base.cannot_be_a_base() {
            return Err(rejected(format!(
                "Dapr base URL {:?} must be http:// (the sidecar API is plain HTTP on loopback)",
                config.base_url
            )));
        }
        let http = Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A proxy from the environment must not sit between WSM and its sidecar.
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .map_err(|e| rejected(format!("building the HTTP client: {e}")))?;
        Ok(Self { http, base })
    }

    /// `base/<segments…>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn post_json(&self, url: Url, body: &impl Serialize) -> RequestBuilder {
        // Serializing these plain structs cannot fail; an empty body would be refused by the
        // sidecar anyway.
        let body = serde_json::to_vec(body).unwrap_or_default();
        self.http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
    }

    /// Sends `request`; a connection failure or timeout is `Unavailable`, naming `what`.
    async fn send(&self, request: RequestBuilder, what: &str) -> Result<Response, BackendError> {
        request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            BackendError::Unavailable {
                backend: BACKEND,
                reason: format!("{what}: {kind}: {e}"),
            }
        })
    }
}

/// The error for a non-success answer to `what`, by status (module docs); `key` names the key a
/// conflict is about.
/// The whole body of a successful answer; a broken read is `Unavailable` (retrying may work).
async fn read_body(response: Response, what: &str) -> Result<bytes::Bytes, BackendError> {
    response
        .bytes()
        .await
        .map_err(|e| BackendError::Unavailable {
            backend: BACKEND,
            reason: format!("{what}: reading the body failed: {e}"),
        })
}

async fn status_error(response: Response, what: &str, key: Option<&str>) -> BackendError {
    let status = response.status();
    let body = match response.bytes().await {
        Ok(body) => String::from_utf8_lossy(&body[..body.len().min(2048)]).into_owned(),
        Err(e) => format!("(body unreadable: {e})"),
    };
    let refused_by_script = body.contains("failed to set key") && body.contains("user_script");
    match (status, key) {
        (StatusCode::CONFLICT, Some(key)) => BackendError::Conflict {
            key: key.to_owned(),
        },
        (StatusCode::INTERNAL_SERVER_ERROR, Some(key)) if refused_by_script => {
            BackendError::Conflict {
                key: key.to_owned(),
            }
        }
        (status, _) if status.is_client_error() => BackendError::Rejected {
            backend: BACKEND,
            reason: format!("{what}: HTTP {status}: {body}"),
        },
        (status, _) => BackendError::Unavailable {
            backend: BACKEND,
            reason: format!("{what}: HTTP {status}: {body}"),
        },
    }
}

/// Key/value state in a Dapr state store, through the sidecar.
#[derive(Debug, Clone)]
pub struct DaprStateStore {
    sidecar: Sidecar,
    store_name: String,
}

#[derive(Serialize)]
struct SaveItem<'a> {
    key: &'a str,
    value: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<SaveOptions>,
    metadata: SaveMetadata,
}

#[derive(Serialize)]
struct SaveOptions {
    concurrency: &'static str,
}

#[derive(Serialize)]
struct SaveMetadata {
    #[serde(rename = "ttlInSeconds")]
    ttl_in_seconds: String,
}

#[derive(Serialize)]
struct BulkRequest<'a> {
    keys: &'a [String],
    parallelism: usize,
}

#[derive(Deserialize)]
struct BulkItem<'a> {
    key: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

impl DaprStateStore {
    /// A store using the component `config.store_name`; nothing is contacted yet.
    pub fn new(config: &DaprConfig) -> Result<Self, BackendError> {
        Ok(Self {
            sidecar: Sidecar::new(config)?,
            store_name: config.store_name.clone(),
        })
    }

    fn key_url(&self, key: &str) -> Url {
        self.sidecar.url(&["v1.0", "state", &self.store_name, key])
    }
}

#[async_trait]
impl StateStore for DaprStateStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, BackendError> {
        let what = format!("reading key {key} from state store {}", self.store_name);
        let response = self
            .sidecar
            .send(self.sidecar.http.get(self.key_url(key)), &what)
            .await?;
        match response.status() {
            StatusCode::NO_CONTENT => Ok(None),
            status if status.is_success() => {
                let etag = response
                    .headers()
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let value = read_body(response, &what).await?;
                Ok(Some(Versioned {
                    value: value.to_vec(),
                    etag,
                }))
            }
            _ => Err(status_error(response, &what, None).await),
        }
    }

    async fn get_bulk(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let what = format!(
            "reading {} keys in bulk from state store {}",
            keys.len(),
            self.store_name
        );
        let url = self
            .sidecar
            .url(&["v1.0", "state", &self.store_name, "bulk"]);
        let request = self.sidecar.post_json(
            url,
            &BulkRequest {
                keys,
                parallelism: keys.len().min(16),
            },
        );
        let response = self.sidecar.send(request, &what).await?;
        if !response.status().is_success() {
            return Err(status_error(response, &what, None).await);
        }
        let body = read_body(response, &what).await?;
        let items: Vec<BulkItem<'_>> =
            serde_json::from_slice(&body).map_err(|e| BackendError::Unavailable {
                backend: BACKEND,
                reason: format!("{what}: the sidecar's answer is not a bulk state response: {e}"),
            })?;
        let mut found: HashMap<&str, Versioned> = HashMap::with_capacity(items.len());
        for item in &items {
            if let Some(error) = item.error.as_deref().filter(|e| !e.is_empty()) {
                return Err(BackendError::Unavailable {
                    backend: BACKEND,
                    reason: format!("{what}: key {}: {error}", item.key),
                });
            }
            if let Some(data) = item.data {
                found.insert(
                    &item.key,
                    Versioned {
                        value: data.get().as_bytes().to_vec(),
                        etag: item.etag.clone().unwrap_or_default(),
                    },
                );
            }
        }
        Ok(keys
            .iter()
            .map(|key| found.get(key.as_str()).cloned())
            .collect())
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        concurrency: Concurrency<'_>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let what = format!("writing key {key} to state store {}", self.store_name);
        let value: &RawValue =
            serde_json::from_slice(value).map_err(|e| BackendError::Rejected {
                backend: BACKEND,
                reason: format!(
                    "{what}: the value is not JSON, which Dapr's HTTP state API needs: {e}"
                ),
            })?;
        let (etag, options) = match concurrency {
            Concurrency::LastWrite => (
                None,
                Some(SaveOptions {
                    concurrency: "last-write",
                }),
            ),
            Concurrency::IfAbsent => (
                None,
                Some(SaveOptions {
                    concurrency: "first-write",
                }),
            ),
            Concurrency::IfMatch(etag) => (Some(etag), None),
        };
        let item = SaveItem {
            key,
            value,
            etag,
            options,
            metadata: SaveMetadata {
                ttl_in_seconds: dapr_ttl_seconds(ttl).to_string(),
            },
        };
        let url = self.sidecar.url(&["v1.0", "state", &self.store_name]);
        let request = self.sidecar.post_json(url, &[item]);
        let response = self.sidecar.send(request, &what).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(response, &what, Some(key)).await)
        }
    }

    async fn delete(&self, key: &str, concurrency: Concurrency<'_>) -> Result<(), BackendError> {
        let etag = match concurrency {
            Concurrency::LastWrite => None,
            Concurrency::IfMatch(etag) => Some(etag),
            Concurrency::IfAbsent => {
                // Deleting "only if absent" deletes nothing; it conflicts if the key exists.
                return match self.get(key).await? {
                    Some(_) => Err(BackendError::Conflict {
                        key: key.to_owned(),
                    }),
                    None => Ok(()),
                };
            }
        };
        let what = format!("deleting key {key} from state store {}", self.store_name);
        let mut request = self.sidecar.http.request(Method::DELETE, self.key_url(key));
        if let Some(etag) = etag {
            request = request.header(header::IF_MATCH, etag);
        }
        let response = self.sidecar.send(request, &what).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(response, &what, Some(key)).await)
        }
    }

    async fn ping(&self) -> Result<(), BackendError> {
        healthz(&self.sidecar).await
    }
}

/// Publishes CloudEvents through a Dapr pub/sub component.
#[derive(Debug, Clone)]
pub struct DaprPublisher {
    sidecar: Sidecar,
    pubsub_name: String,
}

impl DaprPublisher {
    /// A publisher using the component `config.pubsub_name`; nothing is contacted yet.
    pub fn new(config: &DaprConfig) -> Result<Self, BackendError> {
        Ok(Self {
            sidecar: Sidecar::new(config)?,
            pubsub_name: config.pubsub_name.clone(),
        })
    }
}

#[async_trait]
impl Publisher for DaprPublisher {
    async fn publish(&self, topic: &str, events: &[Vec<u8>]) -> Result<(), BackendError> {
        if topic.is_empty() && !events.is_empty() {
            return Err(BackendError::Rejected {
                backend: BACKEND,
                reason: "publishing to an empty topic name".to_owned(),
            });
        }
        let url = self
            .sidecar
            .url(&["v1.0", "publish", &self.pubsub_name, topic]);
        for (n, event) in events.iter().enumerate() {
            let what = format!(
                "publishing event {n} of {} to topic {topic} via pubsub {}",
                events.len(),
                self.pubsub_name
            );
            let request = self
                .sidecar
                .http
                .post(url.clone())
                .header(header::CONTENT_TYPE, "application/cloudevents+json")
                .body(event.clone());
            let response = self.sidecar.send(request, &what).await?;
            if !response.status().is_success() {
                return Err(status_error(response, &what, None).await);
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        healthz(&self.sidecar).await
    }
}

/// `GET /v1.0/healthz`: 204 once the sidecar and its components are ready.
async fn healthz(sidecar: &Sidecar) -> Result<(), BackendError> {
    let what = "checking the sidecar's health";
    let response = sidecar
        .send(sidecar.http.get(sidecar.url(&["v1.0", "healthz"])), what)
        .await?;
    if response.status().is_success() {
        Ok(())
    } else {
        let e = status_error(response, what, None).await;
        // An unhealthy sidecar may recover: never `Rejected`.
        Err(match e {
            BackendError::Rejected { reason, .. } => BackendError::Unavailable {
                backend: BACKEND,
                reason,
            },
            other => other,
        })
    }
}
