//! The SSRF guard through the server: Connect to loopback is refused by default with
//! INVALID_ARGUMENT naming the reason and leaves no record; the configuration allows it.

use clap::Parser as _;
use feed_server::{FeedConfig, FeedServer};
use tonic::transport::Endpoint;
use wsm::api::proto::{self, web_socket_manager_client::WebSocketManagerClient};

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: wsm::config::ServeArgs,
}

async fn client(extra: &[&str]) -> WebSocketManagerClient<tonic::transport::Channel> {
    let argv = ["wsm", "--bind", "127.0.0.1", "-s", "0", "-g", "0"]
        .into_iter()
        .chain(extra.iter().copied());
    let args = Cli::parse_from(argv).args;
    let running = wsm::server::start(&args, std::future::pending())
        .await
        .expect("the server starts");
    let channel = Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .expect("the gRPC port accepts");
    WebSocketManagerClient::new(channel)
}

fn connect(url: String) -> proto::ConnectRequest {
    proto::ConnectRequest {
        url,
        ..Default::default()
    }
}

#[tokio::test]
async fn loopback_is_refused_by_default_and_allowed_by_configuration() {
    let feed = FeedServer::start(FeedConfig::default()).await.unwrap();

    let mut strict = client(&[]).await;
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
        let mut allowed = client(allow).await;
        let ok = allowed
            .connect(connect(feed.url("/ws")))
            .await
            .unwrap_or_else(|e| panic!("{allow:?} allows loopback: {e}"));
        assert_eq!(ok.into_inner().status, "connected");
    }
    // The metadata endpoint stays refused even with private networks allowed.
    let mut private = client(&["--allow-private-networks"]).await;
    let err = private
        .connect(connect("ws://169.254.169.254/latest".into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("metadata"), "{}", err.message());
}
