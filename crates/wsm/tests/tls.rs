//! `wss://` upstreams, against a real TLS WebSocket server on loopback (the feed server with
//! rustls) and a CA made at test time: Connect, publish and Send over TLS, reconnect over TLS,
//! every certificate and version failure named as UNAVAILABLE, mTLS, and a server that refuses to
//! start on a bad CA file.

mod support;

use std::sync::Arc;
use std::time::Duration;

use feed_server::tls::{server_config, TlsVersions};
use feed_server::{FeedConfig, FeedHandle};
use tonic::Code;
use wsm::proto::{ConnectRequest, ListRequest, SendRequest, StartPublishRequest, SubscribeRequest};
use wsm_testkit::tls::{Leaf, TestCa};

use support::server::{bounded, feed_with, Wsm, HANG};

/// A TLS feed serving `leaf`, `rate` frames per second.
async fn tls_feed(leaf: &Leaf, versions: TlsVersions, client_ca: Option<&str>) -> FeedHandle {
    let tls = server_config(
        leaf.cert_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        versions,
        client_ca.map(str::as_bytes),
    )
    .expect("the feed's TLS configuration");
    feed_with(FeedConfig {
        rate: 50,
        tls: Some(tls),
        ..FeedConfig::default()
    })
    .await
}

/// A server trusting `ca` (through `--ca-file`), plus `extra` flags.
async fn wsm_trusting(ca: &TestCa, dir: &std::path::Path, extra: &[&str]) -> Wsm {
    let ca_file = ca.write_ca_file(dir);
    let ca_file = ca_file.to_str().expect("a UTF-8 path");
    Wsm::start(&[&["--ca-file", ca_file][..], extra].concat()).await
}

fn connect(url: String, auto_reconnect: bool) -> ConnectRequest {
    ConnectRequest {
        url,
        auto_reconnect,
        ..ConnectRequest::default()
    }
}

#[tokio::test]
async fn connect_publish_and_send_over_wss() {
    bounded(async {
        let ca = TestCa::new("wsm test CA");
        let feed = tls_feed(&ca.issue(&["localhost"]), TlsVersions::All, None).await;
        let dir = tempfile::tempdir().expect("dir");
        let wsm = wsm_trusting(&ca, dir.path(), &[]).await;
        let mut client = wsm.client().await;
        let url = feed.url_for_host("localhost", "/ws");
        assert!(url.starts_with("wss://localhost:"), "{url}");
        let id = client
            .connect(connect(url, false))
            .await
            .expect("Connect over wss")
            .into_inner()
            .id;
        let mut events = client
            .subscribe(SubscribeRequest {
                topic: "md.tls".into(),
            })
            .await
            .expect("Subscribe")
            .into_inner();
        client
            .start_publish(StartPublishRequest {
                id: id.clone(),
                topic: "md.tls".into(),
            })
            .await
            .expect("StartPublish");
        for expected in 1..=5u64 {
            let event = tokio::time::timeout(HANG, events.message())
                .await
                .expect("a frame in time")
                .expect("the stream")
                .expect("an event");
            let cloud: serde_json::Value =
                serde_json::from_str(&event.cloud_event).expect("CloudEvent JSON");
            assert_eq!(cloud["seq"], expected, "{cloud}");
            let data: serde_json::Value =
                serde_json::from_str(cloud["data"].as_str().expect("text")).expect("depth JSON");
            assert_eq!(data["e"], "depthUpdate");
        }
        let response = client
            .send(SendRequest {
                id,
                message: br#"{"method":"ping"}"#.to_vec(),
                timeout_ms: 5000,
                content_type: "application/json".into(),
            })
            .await
            .expect("a correlated Send over wss")
            .into_inner()
            .response;
        let echoed: serde_json::Value = serde_json::from_slice(&response).expect("JSON");
        assert_eq!(echoed["payload"]["method"], "ping", "{echoed}");
    })
    .await;
}

#[tokio::test]
async fn a_dropped_wss_connection_reconnects_over_tls() {
    bounded(async {
        let ca = TestCa::new("wsm test CA");
        let feed = tls_feed(&ca.issue(&["localhost"]), TlsVersions::All, None).await;
        let dir = tempfile::tempdir().expect("dir");
        let wsm = wsm_trusting(&ca, dir.path(), &["--reconnect-base-ms", "50"]).await;
        let mut client = wsm.client().await;
        client
            .connect(connect(feed.url_for_host("localhost", "/ws"), true))
            .await
            .expect("Connect over wss");
        assert!(feed.wait_for_accepted(1, HANG).await);
        assert_eq!(feed.drop_all().await, 1);
        assert!(
            feed.wait_for_accepted(2, HANG).await,
            "a second TLS session"
        );
        let poll = support::server::Poll::new("connected again at epoch 2");
        loop {
            let listed = client
                .list(ListRequest::default())
                .await
                .expect("List")
                .into_inner()
                .connections;
            if listed
                .iter()
                .any(|c| c.status == "connected" && c.epoch == 2)
            {
                break;
            }
            poll.tick().await;
        }
        assert_eq!(feed.stats().tls_handshake_failures_total, 0);
    })
    .await;
}

/// Connect's error for `url`, which must be UNAVAILABLE and leave no record.
async fn tls_refused(wsm: &Wsm, url: String) -> String {
    let mut client = wsm.client().await;
    let status = client
        .connect(connect(url, false))
        .await
        .expect_err("the TLS handshake fails");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let listed = client
        .list(ListRequest::default())
        .await
        .expect("List")
        .into_inner();
    assert!(
        listed.connections.is_empty(),
        "a failed Connect leaves no record"
    );
    status.message().to_owned()
}

#[tokio::test]
async fn certificate_failures_are_unavailable_and_say_which_check_failed() {
    bounded(async {
        let ca = TestCa::new("wsm test CA");
        let other_ca = TestCa::new("a CA nobody trusts");
        let dir = tempfile::tempdir().expect("dir");
        let wsm = wsm_trusting(&ca, dir.path(), &[]).await;

        let untrusted = tls_feed(&other_ca.issue(&["localhost"]), TlsVersions::All, None).await;
        let message = tls_refused(&wsm, untrusted.url_for_host("localhost", "/ws")).await;
        assert!(
            message.contains("TLS handshake with wss://localhost"),
            "{message}"
        );
        assert!(
            message.contains("not signed by a trusted CA (unknown issuer"),
            "{message}"
        );

        let wrong_name = tls_feed(&ca.issue(&["feed.example"]), TlsVersions::All, None).await;
        let message = tls_refused(&wsm, wrong_name.url_for_host("localhost", "/ws")).await;
        assert!(message.contains("wrong name"), "{message}");
        assert!(
            message.contains("feed.example"),
            "names what the certificate is for: {message}"
        );

        let expired = tls_feed(&ca.issue_expired(&["localhost"]), TlsVersions::All, None).await;
        let message = tls_refused(&wsm, expired.url_for_host("localhost", "/ws")).await;
        assert!(message.contains("expired certificate"), "{message}");

        let plain = feed_with(FeedConfig::default()).await;
        let message = tls_refused(&wsm, plain.url("/ws").replacen("ws://", "wss://", 1)).await;
        assert!(message.contains("is it a plain ws:// port?"), "{message}");
        for feed in [&untrusted, &wrong_name, &expired] {
            assert!(feed.stats().tls_handshake_failures_total >= 1);
        }
    })
    .await;
}

#[tokio::test]
async fn a_tls_version_mismatch_is_unavailable_and_names_the_versions() {
    bounded(async {
        let ca = TestCa::new("wsm test CA");
        let feed = tls_feed(&ca.issue(&["localhost"]), TlsVersions::Tls12Only, None).await;
        let dir = tempfile::tempdir().expect("dir");
        let strict = wsm_trusting(&ca, dir.path(), &["--tls-min-version", "1.3"]).await;
        let message = tls_refused(&strict, feed.url_for_host("localhost", "/ws")).await;
        assert!(
            message.contains("TLS version or cipher mismatch"),
            "{message}"
        );
        assert!(message.contains("TLS 1.3 only"), "{message}");
        // The default offers 1.2 as well, and connects.
        let default = wsm_trusting(&ca, dir.path(), &[]).await;
        default
            .client()
            .await
            .connect(connect(feed.url_for_host("localhost", "/ws"), false))
            .await
            .expect("TLS 1.2 by default");
    })
    .await;
}

#[tokio::test]
async fn a_venue_requiring_mtls_gets_the_configured_client_certificate() {
    bounded(async {
        let ca = TestCa::new("wsm test CA");
        let feed = tls_feed(
            &ca.issue(&["localhost"]),
            TlsVersions::All,
            Some(ca.ca_pem()),
        )
        .await;
        let dir = tempfile::tempdir().expect("dir");
        let url = feed.url_for_host("localhost", "/ws");

        let without = wsm_trusting(&ca, dir.path(), &[]).await;
        let message = tls_refused(&without, url.clone()).await;
        assert!(
            message.contains("requires a client certificate"),
            "{message}"
        );

        let (cert, key) = ca.issue_client("wsm-client").write(dir.path(), "client");
        let with = wsm_trusting(
            &ca,
            dir.path(),
            &[
                "--tls-client-cert",
                cert.to_str().expect("path"),
                "--tls-client-key",
                key.to_str().expect("path"),
            ],
        )
        .await;
        with.client()
            .await
            .connect(connect(url, false))
            .await
            .expect("Connect with a client certificate");
    })
    .await;
}

#[tokio::test]
async fn the_server_refuses_to_start_without_a_usable_tls_configuration() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let key_only = TestCa::new("ca").issue_client("x").write(dir.path(), "c");
    for (args, expected) in [
        (
            vec!["--ca-file", missing.to_str().expect("path")],
            "cannot read it",
        ),
        (
            vec!["--ca-file", garbage.to_str().expect("path")],
            "holds no PEM certificate",
        ),
        (
            vec![
                "--tls-client-cert",
                key_only.1.to_str().expect("path"),
                "--tls-client-key",
                key_only.0.to_str().expect("path"),
            ],
            "--tls-client-cert",
        ),
    ] {
        let error = match Wsm::try_start(&args).await {
            Ok(_) => panic!("{args:?} started"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains(expected), "{args:?}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dial_path_has_a_crypto_provider() {
    // A service built without `wsm serve`'s start-up (as a library user would) still dials wss://:
    // the provider is chosen per configuration, never looked up in a process default.
    bounded(async {
        let ca = TestCa::new("wsm test CA");
        let feed = tls_feed(&ca.issue(&["localhost"]), TlsVersions::All, None).await;
        let dir = tempfile::tempdir().expect("dir");
        let tls = wsm::connection::TlsClient::new(&wsm::connection::TlsSettings {
            ca_file: Some(ca.write_ca_file(dir.path())),
            ..Default::default()
        })
        .expect("TLS client");
        let config = wsm::ServiceConfig {
            connection: wsm::connection::ConnectionOptions {
                network: wsm::security::NetworkPolicy::allow_private(),
                tls,
                ..Default::default()
            },
            ..Default::default()
        };
        let service = wsm::WebSocketService::start(
            config,
            Arc::new(wsm::backends::memory::MemoryStateStore::new()),
            Arc::new(wsm::backends::memory::MemoryBus::new()),
        )
        .await
        .expect("service");
        let record = tokio::time::timeout(
            Duration::from_secs(10),
            service.connect(wsm::ConnectRequest {
                url: feed.url_for_host("localhost", "/ws"),
                ..Default::default()
            }),
        )
        .await
        .expect("in time")
        .expect("Connect over wss from the library");
        assert_eq!(record.status.as_str(), "connected");
    })
    .await;
}
