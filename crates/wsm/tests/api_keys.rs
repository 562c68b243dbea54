//! `--api-keys k1,k2`: every call on either port needs one of the keys in `x-api-key`, except the
//! probes (`/health`, `/ready`, `grpc.health.v1`).

mod support;

use serde_json::json;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use wsm::proto::ListRequest;

use support::server::{bounded, reflected_services, with_key, Reply, Wsm};

const KEYS: [&str; 2] = ["--api-keys", "k1,k2"];

async fn start() -> Wsm {
    Wsm::start(&KEYS).await
}

fn assert_unauthorized(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.body);
    let body = reply.json();
    assert_eq!(body["code"], "UNAUTHENTICATED", "{what}: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("x-api-key")),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn grpc_call_without_a_key_is_unauthenticated() {
    bounded(async {
        let wsm = start().await;
        let status = wsm
            .client()
            .await
            .list(ListRequest::default())
            .await
            .expect_err("refused without a key");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(
            status.message().contains("requires an API key"),
            "{status:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn grpc_call_with_a_wrong_key_is_unauthenticated() {
    bounded(async {
        let wsm = start().await;
        let mut client = wsm.client().await;
        for wrong in ["k3", "k1k2", "k1,k2", "K1", ""] {
            let status = client
                .list(with_key(ListRequest::default(), wrong))
                .await
                .expect_err("refused with a wrong key");
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{wrong:?}: {status:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn grpc_call_with_either_key_succeeds() {
    bounded(async {
        let wsm = start().await;
        let mut client = wsm.client().await;
        for key in ["k1", "k2"] {
            let listed = client
                .list(with_key(ListRequest::default(), key))
                .await
                .unwrap_or_else(|e| panic!("{key}: {e:?}"))
                .into_inner();
            assert!(listed.connections.is_empty());
        }
    })
    .await;
}

#[tokio::test]
async fn reflection_needs_a_key_too() {
    bounded(async {
        let wsm = start().await;
        let status = reflected_services(wsm.channel().await, None)
            .await
            .expect_err("refused without a key");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let status = reflected_services(wsm.channel().await, Some("wrong"))
            .await
            .expect_err("refused with a wrong key");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let services = reflected_services(wsm.channel().await, Some("k2"))
            .await
            .expect("reflection with a key");
        assert!(
            services.iter().any(|s| s == "virtufin.WebSocketManager"),
            "{services:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn grpc_health_check_needs_no_key() {
    bounded(async {
        let wsm = start().await;
        let response = HealthClient::new(wsm.channel().await)
            .check(Request::new(HealthCheckRequest {
                service: "virtufin.WebSocketManager".into(),
            }))
            .await
            .expect("health answers without a key")
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving);
    })
    .await;
}

#[tokio::test]
async fn http_probes_need_no_key() {
    bounded(async {
        let wsm = start().await;
        let http = wsm.http_client();
        for path in ["/health", "/ready"] {
            let reply = http.get(path).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        }
    })
    .await;
}

#[tokio::test]
async fn http_metrics_and_invoke_need_a_key() {
    bounded(async {
        let wsm = start().await;
        let anonymous = wsm.http_client();
        assert_unauthorized(&anonymous.get("/metrics").await, "/metrics without a key");
        assert_unauthorized(
            &anonymous.invoke("List", &json!({})).await,
            "/v1/invoke without a key",
        );
        let wrong = anonymous.with_key("k3");
        assert_unauthorized(&wrong.get("/metrics").await, "/metrics with a wrong key");
        assert_unauthorized(
            &wrong.invoke("List", &json!({})).await,
            "/v1/invoke with a wrong key",
        );

        for key in ["k1", "k2"] {
            let keyed = anonymous.with_key(key);
            let metrics = keyed.get("/metrics").await;
            assert_eq!(metrics.status, 200, "{key}: {}", metrics.body);
            assert!(metrics.body.contains("wsm_requests_total"));
            let listed = keyed.invoke("List", &json!({})).await;
            assert_eq!(listed.status, 200, "{key}: {}", listed.body);
            assert_eq!(listed.json(), json!({"connections": []}));
        }
    })
    .await;
}
