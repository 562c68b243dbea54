//! Between the wire messages and the service's types. Handshake headers never leave through here:
//! they may carry credentials (SPEC: "no secret in logs or in List output").

use std::time::Duration;

use crate::error::ServiceError;
use crate::model::ConnectionRecord;
use crate::model::OutboundMessage;
use crate::proto;
use crate::service::ConnectRequest;
use crate::venue::{
    Decompress, Keepalive, Matcher, OutboundRate, ReplyRule, SequenceRule, VenueOptions,
};

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
    let venue = venue_options(&req)?;
    let profile = (!req.profile.is_empty()).then(|| req.profile.clone());
    Ok(ConnectRequest {
        profile,
        venue,
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

/// The venue options of a Connect request. Proto3 cannot tell an unset number from 0, so a 0 means
/// "not given" where the option has a default, and validation names the field where 0 is wrong.
fn venue_options(req: &proto::ConnectRequest) -> Result<VenueOptions, ServiceError> {
    let invalid = ServiceError::InvalidArgument;
    let keepalive = req
        .keepalive
        .as_ref()
        .map(|k| -> Result<Keepalive, ServiceError> {
            use base64::Engine as _;
            Ok(Keepalive {
                message: (!k.message.is_empty()).then(|| k.message.clone()),
                message_base64: (!k.message_base64.is_empty())
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&k.message_base64)),
                interval_ms: k.interval_ms,
                idle_only: k.idle_only,
                pong: k.pong.as_ref().map(matcher).transpose()?,
                timeout_ms: (k.timeout_ms != 0).then_some(k.timeout_ms),
            })
        });
    let reply = req
        .reply
        .as_ref()
        .map(|r| -> Result<ReplyRule, ServiceError> {
            Ok(ReplyRule {
                matches: matcher(r.r#match.as_ref().ok_or_else(|| {
                    invalid("reply.match is required (which frames are venue pings)".into())
                })?)?,
                with: r.with.clone(),
            })
        });
    let options = VenueOptions {
        keepalive: keepalive.transpose()?,
        reply: reply.transpose()?,
        outbound_rate: req.outbound_rate.as_ref().map(|r| OutboundRate {
            messages: r.messages,
            per_ms: r.per_ms,
            spacing_ms: r.spacing_ms,
            count_control: r.count_control,
            max_wait_ms: (r.max_wait_ms != 0).then_some(r.max_wait_ms),
        }),
        decompress: match req.decompress.as_str() {
            "" => None,
            name => Some(Decompress::parse(name).map_err(invalid)?),
        },
        notice: req.notice.as_ref().map(matcher).transpose()?,
        sequence: req.sequence.as_ref().map(|s| SequenceRule {
            value: s.value.clone(),
            key: (!s.key.is_empty()).then(|| s.key.clone()),
            prev: (!s.prev.is_empty()).then(|| s.prev.clone()),
        }),
        redundancy: match req.redundancy {
            0 => None,
            n => Some(u8::try_from(n).unwrap_or(u8::MAX)),
        },
        max_lifetime_ms: (req.max_lifetime_ms != 0).then_some(req.max_lifetime_ms),
    };
    // The rules themselves are checked once, where every Connect goes: `Profiles::resolve`.
    Ok(options)
}

/// Puts venue options into a Connect request (the CLI reads them as JSON, the shape of the
/// profiles file and of `/v1/invoke`).
pub fn set_venue(req: &mut proto::ConnectRequest, options: &VenueOptions) {
    use base64::Engine as _;
    let to_matcher = |m: &Matcher| proto::Matcher {
        text: m.text.clone().unwrap_or_default(),
        pointer: m.pointer.clone().unwrap_or_default(),
        value: m.value.as_ref().map(proto_value),
    };
    req.keepalive = options.keepalive.as_ref().map(|k| proto::Keepalive {
        message: k.message.clone().unwrap_or_default(),
        message_base64: k
            .message_base64
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default(),
        interval_ms: k.interval_ms,
        idle_only: k.idle_only,
        pong: k.pong.as_ref().map(to_matcher),
        timeout_ms: k.timeout_ms.unwrap_or(0),
    });
    req.reply = options.reply.as_ref().map(|r| proto::ReplyRule {
        r#match: Some(to_matcher(&r.matches)),
        with: r.with.clone(),
    });
    req.outbound_rate = options.outbound_rate.as_ref().map(|r| proto::OutboundRate {
        messages: r.messages,
        per_ms: r.per_ms,
        spacing_ms: r.spacing_ms,
        count_control: r.count_control,
        max_wait_ms: r.max_wait_ms.unwrap_or(0),
    });
    req.decompress = options
        .decompress
        .map(|d| d.as_str().to_owned())
        .unwrap_or_default();
    req.notice = options.notice.as_ref().map(to_matcher);
    req.sequence = options.sequence.as_ref().map(|s| proto::SequenceRule {
        value: s.value.clone(),
        key: s.key.clone().unwrap_or_default(),
        prev: s.prev.clone().unwrap_or_default(),
    });
    req.redundancy = options.redundancy.map(u32::from).unwrap_or(0);
    req.max_lifetime_ms = options.max_lifetime_ms.unwrap_or(0);
}

fn proto_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(proto_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), proto_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn matcher(m: &proto::Matcher) -> Result<Matcher, ServiceError> {
    Ok(Matcher {
        text: (!m.text.is_empty()).then(|| m.text.clone()),
        pointer: (!m.pointer.is_empty()).then(|| m.pointer.clone()),
        value: m.value.as_ref().map(json_value),
    })
}

/// `google.protobuf.Value` as the JSON it stands for.
fn json_value(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => {
            // Integral numbers stay integers, so 20051 matches a frame's 20051 (not 20051.0).
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
            }
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(json_value).collect())
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn venue_options_survive_the_wire_both_ways() {
        let profiles = crate::venue::Profiles::shipped();
        for name in ["okx", "htx", "bitfinex", "binance-spot", "deribit", "bybit"] {
            let options = profiles.get(name).unwrap().options.clone();
            let mut req = proto::ConnectRequest {
                url: "wss://venue.example/ws".into(),
                profile: name.into(),
                ..Default::default()
            };
            set_venue(&mut req, &options);
            let back = connect_request(req).unwrap();
            assert_eq!(back.venue, options, "{name}");
            assert_eq!(back.profile.as_deref(), Some(name));
        }
    }

    #[test]
    fn a_bad_venue_option_on_the_wire_is_an_invalid_argument_naming_it() {
        let req = proto::ConnectRequest {
            url: "wss://venue.example/ws".into(),
            decompress: "brotli".into(),
            ..Default::default()
        };
        let err = connect_request(req).unwrap_err().to_string();
        assert!(
            err.contains("decompress must be gzip, deflate or zlib"),
            "{err}"
        );
        let req = proto::ConnectRequest {
            url: "wss://venue.example/ws".into(),
            reply: Some(proto::ReplyRule {
                r#match: None,
                with: "pong".into(),
            }),
            ..Default::default()
        };
        let err = connect_request(req).unwrap_err().to_string();
        assert!(err.contains("reply.match is required"), "{err}");
    }
}
