//! The same writes and publishes through the `dapr` backend (test sidecar → Redis A) and through the
//! `redis` backend (→ Redis B) leave the same Redis contents: keys, hash fields byte for byte, TTL
//! presence, stream entries and their CloudEvents, apart from stream IDs, filled-in times and trace
//! IDs. The sidecar is written from Dapr's sources independently of the `redis` backend, so this is
//! what "Dapr apps share the data" rests on.

use std::time::Duration;

use wsm::backends::dapr::{DaprConfig, DaprPublisher, DaprStateStore};
use wsm::backends::redis::{RedisConfig, RedisPublisher, RedisStateStore};
use wsm::backends::{Concurrency, Publisher, StateStore};
use wsm_testkit::{DaprSidecar, KeyValue, RedisServer, RedisSnapshot, StreamEntry};

const RECORD: &[u8] = br#"{
    "id": "c1", "url": "wss://stream.example.com:9443/ws?x=1&y=<2>", "status": "connected",
    "topic": "md.frames", "autoReconnect": true, "createdAt": "2026-11-23T10:00:00.123Z",
    "instanceId": "wsm-0", "tags": {"venue": "binance", "note": "caf\u00e9 \u2028 \ud83d\ude00 \/ \b"},
    "counters": {"seq": 12345678901234567890, "epoch": 3, "ratio": 0.1234567, "big": 1e21, "tiny": -0.0000001},
    "onConnect": [{"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 1}], "replay": []
}"#;

fn text_event(seq: u64, data: &str) -> Vec<u8> {
    let data = serde_json::to_string(data).unwrap();
    format!(
        concat!(
            r#"{{"specversion":"1.0","id":"ev-{seq}","source":"urn:virtufin:websocketmanager:wsm-0","#,
            r#""type":"com.virtufin.websocketmanager.frame","datacontenttype":"text/plain","#,
            r#""time":"2026-11-23T10:00:0{seq}Z","data":{data},"websocketid":"c1","#,
            r#""websocketurl":"wss://stream.example.com/ws","timestamp":"2026-11-23T10:00:0{seq}.5Z","#,
            r#""contenttype":"text/plain","seq":{seq},"epoch":1}}"#
        ),
        seq = seq,
        data = data
    )
    .into_bytes()
}

fn binary_event(seq: u64, base64: &str) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"specversion":"1.0","id":"ev-{seq}","source":"urn:virtufin:websocketmanager:wsm-0","#,
            r#""type":"com.virtufin.websocketmanager.frame","datacontenttype":"application/octet-stream","#,
            r#""time":"2026-11-23T10:00:0{seq}Z","data_base64":"{base64}","websocketid":"c1","#,
            r#""contenttype":"application/octet-stream","seq":{seq},"epoch":1}}"#
        ),
        seq = seq,
        base64 = base64
    )
    .into_bytes()
}

/// What WSM does to its backends in a typical life, and a few edge cases.
async fn scenario(store: &dyn StateStore, publisher: &dyn Publisher) {
    let ttl = Some(Duration::from_secs(300));
    let record_key = "websocketmanager.connection.c1";
    store
        .set(record_key, RECORD, Concurrency::IfAbsent, ttl)
        .await
        .unwrap();
    let etag = store.get(record_key).await.unwrap().unwrap().etag;
    let updated = String::from_utf8(RECORD.to_vec())
        .unwrap()
        .replace("connected", "reconnecting");
    store
        .set(
            record_key,
            updated.as_bytes(),
            Concurrency::IfMatch(&etag),
            ttl,
        )
        .await
        .unwrap();

    store
        .set(
            "websocketmanager.connection.index",
            br#"["c1","c2"]"#,
            Concurrency::LastWrite,
            None,
        )
        .await
        .unwrap();
    let instance = "websocketmanager.instance.index.wsm-0";
    store
        .set(
            instance,
            br#"{"instanceId":"wsm-0","lastSeenAt":1763892000123,"grpcAddress":"10.0.0.5:5002"}"#,
            Concurrency::LastWrite,
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    // A later write without TTL drops the earlier one.
    store
        .set(
            instance,
            br#"{"instanceId":"wsm-0","lastSeenAt":1763892010456}"#,
            Concurrency::LastWrite,
            None,
        )
        .await
        .unwrap();

    let c2 = "websocketmanager.connection.c2";
    store
        .set(
            c2,
            br#"{"id":"c2"}"#,
            Concurrency::LastWrite,
            Some(Duration::from_secs(120)),
        )
        .await
        .unwrap();
    let etag = store.get(c2).await.unwrap().unwrap().etag;
    store.delete(c2, Concurrency::IfMatch(&etag)).await.unwrap();
    store
        .set(
            "websocketmanager.connection.c3",
            b"null",
            Concurrency::LastWrite,
            None,
        )
        .await
        .unwrap();
    store
        .delete("websocketmanager.connection.c3", Concurrency::LastWrite)
        .await
        .unwrap();

    // Scalars and strings the two encoders treat differently.
    store
        .set(
            "scalars.string",
            "\"<tag> & \u{2028} \\u0001\"".as_bytes(),
            Concurrency::LastWrite,
            None,
        )
        .await
        .unwrap();
    store
        .set(
            "scalars.number",
            b"  -12.50e1 ",
            Concurrency::LastWrite,
            ttl,
        )
        .await
        .unwrap();
    store
        .set(
            "scalars.duplicate",
            br#"{"a":1,"a":2,"b":{"d":1,"c":[true,false,null]}}"#,
            Concurrency::LastWrite,
            None,
        )
        .await
        .unwrap();
    // A compare-and-set that loses changes nothing.
    assert!(store
        .set("scalars.number", b"1", Concurrency::IfMatch("99"), None)
        .await
        .is_err());

    publisher
        .publish(
            "md.frames",
            &[
                text_event(
                    1,
                    r#"{"e":"depthUpdate","E":1763892000123,"b":[["0.0024","10"]]}"#,
                ),
                text_event(2, "<b>tags & \u{2028} unicode \u{e9}</b>"),
                binary_event(3, "AAECAwQFBgcICQ=="),
                text_event(4, "plain"),
                binary_event(5, "/w=="),
            ],
        )
        .await
        .unwrap();
    publisher
        .publish(
            "websocketmanager.lifecycle",
            &[
                br#"{"specversion":"1.0","id":"lc-1","source":"urn:virtufin:websocketmanager:wsm-0",
                    "type":"com.virtufin.websocketmanager.lifecycle.connected","datacontenttype":"application/json",
                    "time":"2026-11-23T10:00:00Z",
                    "data":{"url":"wss://x/<y>","connection_id":"c1","attempt":1.50,"reason":null,"instance_id":"wsm-0"}}"#
                    .to_vec(),
                // No time and no source: daprd fills both in.
                br#"{"specversion":"1.0","id":"lc-2","type":"t","data":"x"}"#.to_vec(),
                // Trace context of its own: kept.
                br#"{"specversion":"1.0","id":"lc-3","source":"s","type":"t","time":"2026-11-23T10:00:00Z",
                    "traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","data":"y"}"#
                    .to_vec(),
            ],
        )
        .await
        .unwrap();
}

/// Blanks the values of the attributes that legitimately differ between the two runs.
fn normalize(envelope: &[u8], blank: &[&str]) -> String {
    let mut text = String::from_utf8(envelope.to_vec()).expect("envelopes are UTF-8");
    for field in blank {
        let marker = format!("\"{field}\":\"");
        if let Some(start) = text.find(&marker) {
            let value_start = start + marker.len();
            let value_end = value_start + text[value_start..].find('"').expect("closing quote");
            text.replace_range(value_start..value_end, "~");
        }
    }
    text
}

fn compare_streams(topic: &str, via_dapr: &[StreamEntry], via_redis: &[StreamEntry]) {
    assert_eq!(
        via_dapr.len(),
        via_redis.len(),
        "stream {topic}: entry count"
    );
    for (n, (a, b)) in via_dapr.iter().zip(via_redis).enumerate() {
        let names = |e: &StreamEntry| e.fields.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
        assert_eq!(names(a), names(b), "stream {topic} entry {n}: field names");
        assert_eq!(
            a.field("metadata"),
            b.field("metadata"),
            "stream {topic} entry {n}: metadata"
        );
        let (data_a, data_b) = (a.field("data").unwrap(), b.field("data").unwrap());
        let parsed_a: serde_json::Value = serde_json::from_slice(data_a).unwrap();
        let parsed_b: serde_json::Value = serde_json::from_slice(data_b).unwrap();
        // The trace attributes are present on both sides (values differ: the sidecar traces).
        for field in ["traceid", "traceparent", "tracestate"] {
            assert!(
                parsed_a.get(field).is_some() && parsed_b.get(field).is_some(),
                "stream {topic} entry {n}: {field} missing"
            );
        }
        let mut blank = vec!["traceid", "traceparent", "tracestate"];
        let event_has_time = parsed_a["id"] != "lc-2";
        if !event_has_time {
            blank.push("time");
        }
        if parsed_a["id"] == "lc-3" {
            blank.clear();
            blank.extend(["traceid", "tracestate"]);
        }
        assert_eq!(
            normalize(data_a, &blank),
            normalize(data_b, &blank),
            "stream {topic} entry {n}: CloudEvent bytes"
        );
    }
}

#[tokio::test]
async fn dapr_and_redis_backends_leave_identical_redis_contents() {
    let redis_a = RedisServer::start();
    let sidecar =
        DaprSidecar::start(&redis_a.url(), "websocketmanager", "statestore", "pubsub").await;
    let dapr = DaprConfig {
        base_url: sidecar.url(),
        ..DaprConfig::default()
    };
    scenario(
        &DaprStateStore::new(&dapr).unwrap(),
        &DaprPublisher::new(&dapr).unwrap(),
    )
    .await;

    let redis_b = RedisServer::start();
    let direct = RedisConfig {
        url: redis_b.url(),
        ..RedisConfig::default()
    };
    scenario(
        &RedisStateStore::connect(&direct).await.unwrap(),
        &RedisPublisher::connect(&direct).await.unwrap(),
    )
    .await;

    let a = RedisSnapshot::take(&redis_a.url()).await;
    let b = RedisSnapshot::take(&redis_b.url()).await;
    let keys_a: Vec<&String> = a.keys.keys().collect();
    let keys_b: Vec<&String> = b.keys.keys().collect();
    assert_eq!(keys_a, keys_b, "the same keys");
    assert_eq!(
        keys_a,
        [
            "md.frames",
            "websocketmanager.lifecycle",
            "websocketmanager||scalars.duplicate",
            "websocketmanager||scalars.number",
            "websocketmanager||scalars.string",
            "websocketmanager||websocketmanager.connection.c1",
            "websocketmanager||websocketmanager.connection.index",
            "websocketmanager||websocketmanager.instance.index.wsm-0",
        ]
    );
    for (key, state_a) in &a.keys {
        let state_b = &b.keys[key];
        assert_eq!(state_a.ttl == -1, state_b.ttl == -1, "{key}: TTL presence");
        assert!(
            (state_a.ttl - state_b.ttl).abs() <= 2,
            "{key}: TTL {} vs {}",
            state_a.ttl,
            state_b.ttl
        );
        match (&state_a.value, &state_b.value) {
            (KeyValue::Hash(fields_a), KeyValue::Hash(fields_b)) => {
                let show = |f: &std::collections::BTreeMap<String, Vec<u8>>| {
                    f.iter()
                        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                        .collect::<Vec<_>>()
                };
                assert_eq!(show(fields_a), show(fields_b), "{key}: hash fields");
            }
            (KeyValue::Stream(entries_a), KeyValue::Stream(entries_b)) => {
                compare_streams(key, entries_a, entries_b)
            }
            (value_a, value_b) => panic!("{key}: different kinds {value_a:?} / {value_b:?}"),
        }
    }
    // Spot checks that the comparison compared something meaningful.
    let KeyValue::Hash(record) = &b.keys["websocketmanager||websocketmanager.connection.c1"].value
    else {
        panic!("record is a hash");
    };
    assert_eq!(record["version"], b"2");
    assert_eq!(record["first-write"], b"0");
    let data = String::from_utf8(record["data"].clone()).unwrap();
    assert!(data.starts_with(r#"{"autoReconnect":true,"counters":{"big":1e+21,"epoch":3,"ratio":0.123457,"seq":12345678901234567000,"tiny":-0}"#), "{data}");
    assert!(b.keys["websocketmanager||websocketmanager.connection.c1"].ttl > 290);
}
