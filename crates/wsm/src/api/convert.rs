//! Between the wire messages and the service's types. Handshake headers never leave through here:
//! they may carry credentials (SPEC: "no secret in logs or in List output").

use std::time::Duration;

use crate::error::ServiceError;
use crate::model::ConnectionRecord;
use crate::model::OutboundMessage;
use crate::proto;
use crate::service::ConnectRequest;

/// Longest accepted per-connection ping interval (a day); longer is almost certainly a unit mistake.
const MAX_PING_INTERVAL_MS: i32 = 86_400_000;

pub fn connect_request(req: proto::ConnectRequest) -> Result<ConnectRequest, ServiceError> {
    let ping_interval = match req.ping_interval_ms {
        0 => None,
        ms if (1..=MAX_PING_INTERVAL_MS).contains(&ms) => {
            Some(Duration::from_millis(ms.unsigned_abs().into()))
        }
        ms => {
            return Err(ServiceError::InvalidArgument(format!(
            "ping_interval_ms must be 0 (the server default) to {MAX_PING_INTERVAL_MS}, got {ms}"
        )))
        }
    };
    Ok(ConnectRequest {
        url: req.url,
        auto_reconnect: req.auto_reconnect,
        tags: req.tags.into_iter().collect(),
        headers: req.headers.into_iter().collect(),
        subprotocols: req.subprotocols,
        on_connect: req
            .on_connect
            .into_iter()
            .map(|m| OutboundMessage {
                payload: m.message.into(),
                content_type: m.content_type,
            })
            .collect(),
        ping_interval,
    })
}

pub fn connection(record: ConnectionRecord) -> proto::WebSocketConnection {
    proto::WebSocketConnection {
        id: record.id,
        url: record.url,
        status: record.status.as_str().to_owned(),
        topic: record.topic.unwrap_or_default(),
        instance_id: record.instance_id,
        // Records keep no connection-wide content type: each Send/SendRaw names its own.
        content_type: String::new(),
        tags: record.tags.into_iter().collect(),
        created_at: record.created_at,
        epoch: record.epoch,
    }
}

pub fn filters(filters: Vec<proto::TagFilter>) -> Vec<(String, String)> {
    filters.into_iter().map(|f| (f.key, f.value)).collect()
}
