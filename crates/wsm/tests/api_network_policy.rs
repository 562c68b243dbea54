//! The SSRF guard through the server: Connect to loopback is refused by default with
//! INVALID_ARGUMENT naming the reason and leaves no record; the configuration allows it.

mod support;

use feed_server::{FeedConfig, FeedServer};
use support::server::Wsm;
use wsm::proto;

fn connect(url: String) -> proto::ConnectRequest {
    proto::ConnectRequest {
        url,
        ..Default::default()
    }
}

#[tokio::test]
async fn loopback_is_refused_by_default_and_allowed_by_configuration() {
    let feed = FeedServer::start(FeedConfig::default()).await.unwrap();

    let strict_server = Wsm::start_strict(&[]).await;
    let mut strict = strict_server.client().await;
    let err = strict
        .connect(connect(feed.url("/ws")))
        .await
        .expect_err("loopback is refused by default");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("loopback"), "{}", err.message());
    assert!(
        err.message().contains("--allowed-hosts"),
        "{}",
        err.message()
    );
    let listed = strict.list(proto::ListRequest::default()).await.unwrap();
    assert!(
        listed.into_inner().connections.is_empty(),
        "no record is left"
    );
    let localhost = feed.url("/ws").replace("127.0.0.1", "localhost");
    let err = strict.connect(connect(localhost)).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "a name resolving to loopback too"
    );
    assert_eq!(feed.accepted_total(), 0, "no socket was opened");

    for allow in [
        &["--allowed-hosts", "127.0.0.1"][..],
        &["--allow-private-networks"][..],
    ] {
        let server = Wsm::start_strict(allow).await;
        let mut allowed = server.client().await;
        let ok = allowed
            .connect(connect(feed.url("/ws")))
            .await
            .unwrap_or_else(|e| panic!("{allow:?} allows loopback: {e}"));
        assert_eq!(ok.into_inner().status, "connected");
    }
    // The metadata endpoint stays refused even with private networks allowed.
    let private_server = Wsm::start_strict(&["--allow-private-networks"]).await;
    let mut private = private_server.client().await;
    let err = private
        .connect(connect("ws://169.254.169.254/latest".into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("metadata"), "{}", err.message());
}
