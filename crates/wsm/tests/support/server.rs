//! A real `wsm serve` in process (both ports on free loopback ports), its gRPC and HTTP clients,
//! and polling with a bound.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use feed_server::{FeedConfig, FeedHandle, FeedServer};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use wsm::config::ServeArgs;
use wsm::proto::web_socket_manager_client::WebSocketManagerClient;
use wsm::server::{Running, StartError};

// Not every test file reads metrics.
#[allow(unused_imports)]
pub use super::process::metric;

/// Bounds a whole test, against hangs only.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);
/// Bounds one wait for a condition, against hangs only.
pub const HANG: Duration = Duration::from_secs(30);
/// Pause between two looks at a condition.
const POLL: Duration = Duration::from_millis(20);

/// Runs a test body, failing it if it does not finish within [`TEST_LIMIT`].
pub async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("the test did not finish within its bound")
}

/// Waits for a condition checked in a loop: `poll.tick().await` between looks; panics naming
/// the condition once [`HANG`] has passed.
pub struct Poll {
    what: &'static str,
    deadline: Instant,
}

impl Poll {
    pub fn new(what: &'static str) -> Self {
        Poll {
            what,
            deadline: Instant::now() + HANG,
        }
    }

    pub async fn tick(&self) {
        assert!(
            Instant::now() < self.deadline,
            "timed out waiting for {}",
            self.what
        );
        tokio::time::sleep(POLL).await;
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ServeArgs,
}

/// `wsm serve` settings: loopback, free ports, connects to loopback allowed, then `extra`.
pub fn serve_args(extra: &[&str]) -> ServeArgs {
    strict_serve_args(&[&["--allow-private-networks"][..], extra].concat())
}

/// `wsm serve` settings with the default (strict) network policy: loopback, free ports, then `extra`.
pub fn strict_serve_args(extra: &[&str]) -> ServeArgs {
    let base = ["wsm", "--bind", "127.0.0.1", "-s", "0", "-g", "0"];
    // A fixed instance id unless the test names its own (several instances on one store).
    let id: &[&str] = if extra.contains(&"--instance-id") {
        &[]
    } else {
        &["--instance-id", "wsm-api-test"]
    };
    Cli::parse_from(base.iter().chain(id).chain(extra).copied()).args
}

/// A running server; shut down gracefully when dropped (its shutdown future resolves).
pub struct Wsm {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub running: Running,
    _stop: oneshot::Sender<()>,
}

impl Wsm {
    /// Memory backends unless `extra` says otherwise.
    pub async fn start(extra: &[&str]) -> Wsm {
        Wsm::try_start(extra).await.expect("wsm starts")
    }

    pub async fn try_start(extra: &[&str]) -> Result<Wsm, StartError> {
        Wsm::start_with(&serve_args(extra)).await
    }

    /// Memory backends and the default network policy unless `extra` says otherwise.
    pub async fn start_strict(extra: &[&str]) -> Wsm {
        Wsm::start_with(&strict_serve_args(extra))
            .await
            .expect("wsm starts")
    }

    async fn start_with(args: &ServeArgs) -> Result<Wsm, StartError> {
        let (stop, stopped) = oneshot::channel::<()>();
        let running = wsm::server::start(args, async {
            let _ = stopped.await;
        })
        .await?;
        Ok(Wsm {
            http: running.http_addr,
            grpc: running.grpc_addr,
            running,
            _stop: stop,
        })
    }

    /// A plain h2c channel to the gRPC port.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("a valid endpoint")
            .connect_timeout(HANG)
            .connect()
            .await
            .expect("the gRPC port accepts")
    }

    pub async fn client(&self) -> WebSocketManagerClient<Channel> {
        WebSocketManagerClient::new(self.channel().await)
    }

    pub fn http_client(&self) -> HttpClient {
        HttpClient::new(self.http)
    }
}

/// A feed server with `rate` depth updates per second per connection.
pub async fn feed(rate: u32) -> FeedHandle {
    feed_with(FeedConfig {
        rate,
        ..FeedConfig::default()
    })
    .await
}

pub async fn feed_with(config: FeedConfig) -> FeedHandle {
    FeedServer::start(config).await.expect("feed server starts")
}

/// A loopback port nothing listens on (free when looked at).
pub fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `request` with `x-api-key: key`.
pub fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().expect("an ASCII key"));
    request
}

/// The services gRPC reflection (v1) lists, with `key` in `x-api-key` when given.
pub async fn reflected_services(
    channel: Channel,
    key: Option<&str>,
) -> Result<Vec<String>, Status> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let stream = tokio_stream::iter(vec![request]);
    let request = match key {
        Some(key) => with_key(stream, key),
        None => Request::new(stream),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(request)
        .await?
        .into_inner();
    let response = responses
        .message()
        .await?
        .expect("reflection answers list_services");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("list_services answered {other:?}"),
    }
}

/// An HTTP/1.1 response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.body))
    }
}

/// A client for the HTTP port, optionally sending an API key.
#[derive(Clone)]
pub struct HttpClient {
    base: String,
    key: Option<String>,
    client: reqwest::Client,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> Self {
        HttpClient {
            base: format!("http://{addr}"),
            key: None,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(HANG)
                .build()
                .expect("an HTTP client"),
        }
    }

    pub fn with_key(&self, key: &str) -> Self {
        HttpClient {
            key: Some(key.to_owned()),
            ..self.clone()
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.send(request).await
    }

    /// `POST /v1/invoke/{method}` with a JSON body.
    pub async fn invoke(&self, method: &str, body: &serde_json::Value) -> Reply {
        self.post(&format!("/v1/invoke/{method}"), &body.to_string())
            .await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Reply {
        if let Some(key) = &self.key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.expect("the HTTP port answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.bytes().await.expect("a whole body");
        Reply {
            status,
            content_type,
            body: String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
        }
    }
}
