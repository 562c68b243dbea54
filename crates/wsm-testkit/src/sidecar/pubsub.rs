//! Publishing: the CloudEvent envelope built or completed as daprd does, then `XADD`.

use super::*;

/// A fresh W3C trace context, as daprd puts in envelopes when tracing is on.
pub(super) fn new_traceparent() -> String {
    let trace: u128 = rand::random();
    let span: u64 = rand::random();
    format!("00-{trace:032x}-{span:016x}-01")
}

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `isContentType`: the media type before any `;`, case-insensitively.
pub(super) fn is_content_type(content_type: &str, expected: &str) -> bool {
    let lower = content_type.to_ascii_lowercase();
    lower.split(';').next().unwrap_or_default() == expected
}

pub(super) async fn publish(
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
pub(super) fn from_cloud_event(
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
pub(super) fn new_envelope(
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
pub(super) fn apply_ttl(
    envelope: &mut BTreeMap<String, Json>,
    metadata: &BTreeMap<String, String>,
) {
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
