//! The network policy (SSRF guard) through the service, against the real local feed server on
//! loopback: refused by default with INVALID_ARGUMENT and nothing left behind, and each way an
//! operator can allow it.

use std::sync::Arc;
use std::time::Duration;

use feed_server::{FeedConfig, FeedHandle, FeedServer};
use wsm::backends::memory::{MemoryBus, MemoryStateStore};
use wsm::connection::ConnectionOptions;
use wsm::model::Status;
use wsm::security::{parse_allowed_hosts, NetworkPolicy};
use wsm::{ConnectRequest, ServiceConfig, WebSocketService};

async fn feed() -> FeedHandle {
    FeedServer::start(FeedConfig {
        rate: 10,
        ..FeedConfig::default()
    })
    .await
    .expect("feed server starts")
}

async fn service(network: NetworkPolicy) -> WebSocketService {
    let config = ServiceConfig {
        instance_id: "wsm-policy-1".into(),
        connection: ConnectionOptions {
            network,
            ..ConnectionOptions::default()
        },
        ..ServiceConfig::default()
    };
    let bus = MemoryBus::new();
    WebSocketService::start(config, Arc::new(MemoryStateStore::new()), Arc::new(bus))
        .await
        .expect("service starts")
}

fn allowed_hosts(list: &str) -> NetworkPolicy {
    NetworkPolicy::strict().with_allowed_hosts(parse_allowed_hosts(list).expect("valid list"))
}

fn request(url: String) -> ConnectRequest {
    ConnectRequest {
        url,
        ..ConnectRequest::default()
    }
}

/// `url` on the feed server's port, with `host` in place of 127.0.0.1.
fn url_via(feed: &FeedHandle, host: &str) -> String {
    format!("ws://{host}:{}/ws", feed.addr().port())
}

async fn connects(service: &WebSocketService, url: String) {
    let record = service
        .connect(request(url.clone()))
        .await
        .unwrap_or_else(|e| panic!("{url} should connect: {e}"));
    assert_eq!(record.status, Status::Connected);
    assert_eq!(service.list(&[]).await.expect("list").len(), 1);
    service.disconnect(&record.id).await.expect("disconnect");
}

#[tokio::test]
async fn loopback_is_refused_by_default_before_any_connection_and_leaves_no_record() {
    let feed = feed().await;
    // While refusing, the feed server counts every TCP connection it is offered.
    feed.refuse(true).await;
    let service = service(NetworkPolicy::default()).await;
    let url = feed.url("/ws");
    let err = service
        .connect(request(url.clone()))
        .await
        .expect_err("loopback is refused");
    assert_eq!(
        wsm::api::status::grpc_code(&err),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        err.to_string(),
        format!(
            "refused {url}: 127.0.0.1 is a loopback address; allow it with \
             --allow-private-networks or --allowed-hosts"
        )
    );
    assert!(
        service.list(&[]).await.expect("list").is_empty(),
        "no record left"
    );
    assert_eq!(
        feed.refused_total(),
        0,
        "not even a TCP connection was tried"
    );
    assert_eq!(feed.accepted_total(), 0);
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
    let feed = feed().await;
    let url = url_via(&feed, "localhost");
    let err = service(NetworkPolicy::strict())
        .await
        .connect(request(url.clone()))
        .await
        .expect_err("localhost resolves to loopback");
    assert_eq!(
        wsm::api::status::grpc_code(&err),
        tonic::Code::InvalidArgument
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("refused {url}: localhost resolves to ")),
        "{message}"
    );
    assert!(message.contains("a loopback address"), "{message}");
    // An allowed entry for another name, or for a network that does not hold loopback, changes
    // nothing.
    for list in ["example.com", "*.localhost", "10.0.0.0/8"] {
        let err = service(allowed_hosts(list))
            .await
            .connect(request(url.clone()))
            .await
            .expect_err(list);
        assert_eq!(
            wsm::api::status::grpc_code(&err),
            tonic::Code::InvalidArgument,
            "{list}: {err}"
        );
    }
    assert_eq!(feed.accepted_total(), 0);
}

#[tokio::test]
async fn allow_private_networks_allows_loopback() {
    let feed = feed().await;
    let service = service(NetworkPolicy::allow_private()).await;
    connects(&service, feed.url("/ws")).await;
    connects(&service, url_via(&feed, "localhost")).await;
}

#[tokio::test]
async fn an_allowed_hosts_ip_entry_allows_that_address() {
    let feed = feed().await;
    connects(&service(allowed_hosts("127.0.0.1")).await, feed.url("/ws")).await;
}

#[tokio::test]
async fn an_allowed_hosts_name_entry_allows_whatever_the_name_resolves_to() {
    let feed = feed().await;
    let service = service(allowed_hosts("LOCALHOST")).await;
    connects(&service, url_via(&feed, "localhost")).await;
    // The entry names the host, not its addresses: the IP literal is still refused.
    let err = service
        .connect(request(feed.url("/ws")))
        .await
        .expect_err("the IP literal is not localhost");
    assert_eq!(
        wsm::api::status::grpc_code(&err),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test]
async fn an_allowed_hosts_cidr_entry_allows_the_addresses_in_it() {
    let feed = feed().await;
    connects(
        &service(allowed_hosts("127.0.0.0/8")).await,
        feed.url("/ws"),
    )
    .await;
}

#[tokio::test]
async fn cloud_metadata_is_refused_even_with_allow_private_networks() {
    let service = service(NetworkPolicy::allow_private()).await;
    for url in [
        "ws://169.254.169.254/latest/meta-data/",
        "ws://[fd00:ec2::254]/",
        "ws://[::ffff:169.254.169.254]/",
    ] {
        refused_as_metadata(&service, url).await;
    }
    assert!(service.list(&[]).await.expect("list").is_empty());
}

#[tokio::test]
async fn eks_pod_identity_is_refused_as_cloud_metadata() {
    let service = service(NetworkPolicy::allow_private()).await;
    for url in ["ws://169.254.170.23/v1/credentials", "ws://[fd00:ec2::23]/"] {
        refused_as_metadata(&service, url).await;
    }
}

#[tokio::test]
async fn tencent_cloud_metadata_is_refused() {
    let service = service(NetworkPolicy::allow_private()).await;
    refused_as_metadata(&service, "ws://169.254.0.23/meta-data/").await;
}

async fn refused_as_metadata(service: &WebSocketService, url: &str) {
    let err = service.connect(request(url.into())).await.expect_err(url);
    assert_eq!(
        wsm::api::status::grpc_code(&err),
        tonic::Code::InvalidArgument,
        "{url}: {err}"
    );
    assert!(err.to_string().contains("cloud metadata"), "{err}");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_unavailable_not_refused() {
    let service = {
        let config = ServiceConfig {
            connection: ConnectionOptions {
                connect_timeout: Duration::from_secs(5),
                ..ConnectionOptions::default()
            },
            ..ServiceConfig::default()
        };
        WebSocketService::start(
            config,
            Arc::new(MemoryStateStore::new()),
            Arc::new(MemoryBus::new()),
        )
        .await
        .expect("service starts")
    };
    // `.invalid` never resolves (RFC 6761); without a resolver the lookup fails or times out.
    let err = service
        .connect(request("ws://no-such-host.invalid/ws".into()))
        .await
        .expect_err("no such host");
    assert_eq!(
        wsm::api::status::grpc_code(&err),
        tonic::Code::Unavailable,
        "{err}"
    );
    assert!(service.list(&[]).await.expect("list").is_empty());
}
