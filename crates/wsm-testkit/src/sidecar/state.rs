//! The state API: save (single and bulk reads), get and delete, as daprd and Dapr's Redis state
//! store answer and write.

use super::*;

/// components-contrib `state/redis/redis.go` `setDefaultQuery`, verbatim.
pub(super) const SET_DEFAULT_QUERY: &str = r#"
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
pub(super) const DEL_DEFAULT_QUERY: &str = r#"
	local etag = redis.pcall("HGET", KEYS[1], "version");
	if not etag or type(etag)=="table" or etag == ARGV[1] or etag == "" or ARGV[1] == "0" then
	  return redis.call("DEL", KEYS[1])
	else
	  return error("failed to delete " .. KEYS[1])
	end"#;

/// One decoded state item, checked and ready to write.
pub(super) struct SaveRequest {
    key: String,
    data: Vec<u8>,
    etag: Option<String>,
    concurrency: String,
    consistency: String,
    ttl: Option<String>,
}

/// A field of a Go struct decoded from `fields`: exact name first, then case-insensitively.
pub(super) fn go_field<'a>(fields: &'a BTreeMap<String, Json>, name: &str) -> Option<&'a Json> {
    fields.get(name).or_else(|| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

pub(super) fn go_string_field(
    fields: &BTreeMap<String, Json>,
    name: &str,
) -> Result<Option<String>, String> {
    match go_field(fields, name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "json: cannot unmarshal {other:?} into Go struct field .{name} of type string"
        )),
    }
}

pub(super) fn go_string_map(
    value: Option<&Json>,
    name: &str,
) -> Result<BTreeMap<String, String>, String> {
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

pub(super) fn decode_save_item(
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

pub(super) async fn save_state(
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
pub(super) async fn set_one(app: &App, req: SaveRequest) -> Result<(), Box<Response>> {
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
pub(super) async fn read_state(
    app: &App,
    key: &str,
) -> Result<Option<(Vec<u8>, Option<String>)>, String> {
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

pub(super) async fn get_state(
    State(app): State<App>,
    Path((store, key)): Path<(String, String)>,
) -> Response {
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

pub(super) async fn bulk_get_state(
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

pub(super) async fn delete_state(
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
