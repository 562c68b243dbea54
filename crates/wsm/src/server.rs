//! `wsm serve`: the backends chosen by configuration, the service, and both ports, wired together;
//! and the graceful shutdown (SPEC 5, "Operations"): stop accepting, close every socket with 1001,
//! flush what is queued for the bus, and leave the records for a successor instance.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::grpc::GrpcApi;
use crate::api::listen;
use crate::api::tail::TopicTail;
use crate::backends::dapr::{DaprConfig, DaprPublisher, DaprStateStore};
use crate::backends::memory::{MemoryBus, MemoryStateStore};
use crate::backends::redis::{RedisConfig, RedisPublisher, RedisStateStore, RedisTail};
use crate::backends::{Publisher, StateStore};
use crate::cluster::Cluster;
use crate::config::{Backend, ServeArgs};
use crate::proto::{web_socket_manager_server::WebSocketManagerServer, FILE_DESCRIPTOR_SET};
use crate::service::WebSocketService;

/// How long in-flight calls (and open `Subscribe` streams) get to end once shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);
/// An HTTP/2 ping to each gRPC client this long after its last frame...
const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// ...that must be answered within this long, or the connection is closed.
const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr} ({port}): {source}")]
    Bind {
        addr: SocketAddr,
        port: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Backend(String),
}

/// A started server: its addresses, and a handle to stop it.
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub service: WebSocketService,
    pub cluster: Arc<Cluster>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the server has shut down.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// The backends the configuration names.
pub async fn backends(
    args: &ServeArgs,
) -> Result<(Arc<dyn StateStore>, Arc<dyn Publisher>, TopicTail), StartError> {
    let redis = RedisConfig {
        url: args.redis_url.clone(),
        key_prefix: Some(args.app_id.clone()),
        pubsub_name: args.pubsub_name.clone(),
        max_len_approx: args.redis_max_len_approx,
        lifecycle_max_len: (args.lifecycle_max_len > 0).then_some(args.lifecycle_max_len),
        ..RedisConfig::default()
    };
    let dapr = DaprConfig {
        base_url: format!("http://127.0.0.1:{}", args.dapr_http_port),
        store_name: args.state_store_name.clone(),
        pubsub_name: args.pubsub_name.clone(),
        ..DaprConfig::default()
    };
    let unreachable = |what: &str, e: &dyn std::fmt::Display| {
        StartError::Backend(format!("the {what} backend cannot start: {e}"))
    };
    let state: Arc<dyn StateStore> = match args.state {
        Backend::Memory => Arc::new(MemoryStateStore::new()),
        Backend::Redis => Arc::new(
            RedisStateStore::connect(&redis)
                .await
                .map_err(|e| unreachable("redis state", &e))?,
        ),
        Backend::Dapr => {
            Arc::new(DaprStateStore::new(&dapr).map_err(|e| unreachable("dapr state", &e))?)
        }
    };
    let (bus, tail): (Arc<dyn Publisher>, TopicTail) = match args.pubsub {
        Backend::Memory => {
            let bus = MemoryBus::new();
            (Arc::new(bus.clone()), TopicTail::Bus(Arc::new(bus)))
        }
        Backend::Redis => (
            Arc::new(
                RedisPublisher::connect(&redis)
                    .await
                    .map_err(|e| unreachable("redis pub/sub", &e))?,
            ),
            TopicTail::Bus(Arc::new(RedisTail::new(&args.redis_url))),
        ),
        Backend::Dapr => (
            Arc::new(DaprPublisher::new(&dapr).map_err(|e| unreachable("dapr pub/sub", &e))?),
            TopicTail::Unsupported(
                "Subscribe reads the memory or redis pub/sub; with dapr, subscribe through the sidecar"
                    .into(),
            ),
        ),
    };
    Ok((state, bus, tail))
}

/// Starts everything and serves until `shutdown` resolves; then shuts down gracefully.
pub async fn start(
    args: &ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    // Before anything can open a TLS connection: this build's provider, also as the process
    // default for any library that asks rustls for one.
    crate::connection::tls::install_default_provider();
    if args.http_port != 0 && args.http_port == args.grpc_port {
        // Otherwise the second bind fails with a bare "Address already in use".
        return Err(StartError::Config(format!(
            "--http-port (WSM_HTTP_PORT) and --grpc-port (WSM_GRPC_PORT) are both {}: the two \
             ports must differ",
            args.http_port
        )));
    }
    let config = args.service_config().map_err(StartError::Config)?;
    check_open_file_limit(args, &config);
    tracing::info!(
        provider = crate::connection::tls::crypto_provider_name(),
        ca_file = ?args.ca_file,
        client_certificate = args.tls_client_cert.is_some(),
        "TLS to upstreams: Mozilla's roots (compiled in) plus --ca-file"
    );
    let (state, bus, tail) = backends(args).await?;
    let service = WebSocketService::start(config, state, bus)
        .await
        .map_err(|e| StartError::Backend(e.to_string()))?;

    let bind = |port: u16, name: &'static str| {
        let addr = SocketAddr::new(args.bind, port);
        async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr,
                    port: name,
                    source,
                })
        }
    };
    let http_listener = bind(args.http_port, "HTTP").await?;
    let grpc_listener = bind(args.grpc_port, "gRPC").await?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|e| StartError::Config(e.to_string()))?;

    let cluster_config = args.cluster_config(grpc_addr).map_err(StartError::Config)?;
    if args.state != Backend::Memory
        && args.bind.is_unspecified()
        && cluster_config.advertised_address.starts_with("127.")
    {
        tracing::warn!(
            address = %cluster_config.advertised_address,
            "peers are told to reach this instance at a loopback address: fine on one machine, \
             but instances elsewhere cannot forward calls here; set WSM_GRPC_HOST"
        );
    }
    if let Some(warning) = args.exposure_warning() {
        tracing::warn!("{warning}");
    }
    if args.api_keys().enabled()
        && cluster_config.peer_key.is_none()
        && args.state != Backend::Memory
    {
        tracing::warn!(
            "API keys are set but no --peer-key / WSM_PEER_KEY: a call reaching an instance that \
             does not own its connection cannot be forwarded to the owner (instances never pass \
             a client's key on); set the same peer key on every instance"
        );
    }
    let cluster = Cluster::start(service.clone(), cluster_config)
        .await
        .map_err(|e| StartError::Backend(format!("joining the cluster failed: {e}")))?;

    let keys = args.api_keys();
    let api = GrpcApi::new(service.clone(), tail, Some(Arc::clone(&cluster)));
    let max_request = args.max_request_bytes();

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<WebSocketManagerServer<GrpcApi>>()
        .await;
    // Reflection describes every service served here, health included, so reflection-driven
    // clients (grpcurl, the API gateway) can call grpc.health.v1.Health/Check.
    let described = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e| StartError::Config(format!("gRPC reflection: {e}"));
    let reflection = described().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = described().build_v1alpha().map_err(reflection_error)?;
    let wsm = WebSocketManagerServer::new(api.clone())
        .max_decoding_message_size(max_request)
        .max_encoding_message_size(max_request);

    // Stop accepting on both ports when told; in-flight calls get `DRAIN` to finish.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let ports = args.port_limits();
    let grpc = tonic::transport::Server::builder()
        // HTTP/2 limits: streams per connection, and pings that find a peer that stopped
        // answering (its slot of the connection cap comes back).
        .max_concurrent_streams(Some(args.grpc_max_concurrent_streams))
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .add_service(health)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection,
            keys.interceptor(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection_v1alpha,
            keys.interceptor(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            wsm,
            keys.interceptor(),
        ))
        // Accepted sockets get TCP_NODELAY (tonic ignores its own setting for an incoming
        // stream): without it, a reply written after a small frame (a WINDOW_UPDATE) waits for
        // the client's delayed ACK, about 40 ms.
        .serve_with_incoming_shutdown(
            listen::grpc_incoming(grpc_listener, ports.grpc),
            stopped(stop_rx.clone()),
        );
    let body = crate::api::http::BodyLimits {
        max_bytes: max_request,
        within: args.http_body_timeout(),
    };
    let router = crate::api::http::router(api, keys, body);
    let http = listen::serve_http(http_listener, router, ports.http, stopped(stop_rx));
    let grpc = tokio::spawn(async move {
        if let Err(e) = grpc.await {
            tracing::error!(error = %e, "the gRPC server failed");
        }
    });
    let http = tokio::spawn(http);

    let flush = args.shutdown_flush();
    let svc = service.clone();
    let member = Arc::clone(&cluster);
    let done = tokio::spawn(async move {
        shutdown.await;
        tracing::info!(
            "shutting down: no new calls; closing sockets with 1001 and flushing queued frames"
        );
        health_reporter
            .set_not_serving::<WebSocketManagerServer<GrpcApi>>()
            .await;
        let _ = stop_tx.send(true);
        svc.shutdown(flush).await;
        // Heartbeats went on while the queues flushed; now peers may take over at once.
        member.leave().await;
        for (name, task) in [("gRPC", grpc), ("HTTP", http)] {
            let abort = task.abort_handle();
            if tokio::time::timeout(DRAIN, task).await.is_err() {
                tracing::warn!(
                    "the {name} port still had calls open after {DRAIN:?}; they are cut"
                );
                abort.abort();
            }
        }
        tracing::info!("shut down; connection records are kept for a successor instance");
    });
    Ok(Running {
        http_addr,
        grpc_addr,
        service,
        cluster,
        done,
    })
}

/// Raises the soft open-file limit to the hard one (as Go's runtime does), and warns when the
/// limit is below what the configured caps may need: every upstream and every client connection
/// takes a descriptor, and running out takes `/health` down with everything else.
fn check_open_file_limit(args: &ServeArgs, config: &crate::service::ServiceConfig) {
    let Some(limit) = raise_open_file_limit() else {
        return;
    };
    let ports = args.port_limits();
    let wanted = (config.max_connections as u64)
        .saturating_add(ports.http.max_connections as u64)
        .saturating_add(ports.grpc.max_connections as u64)
        .saturating_add(64);
    if config.max_connections > 0 && limit < wanted {
        tracing::warn!(
            open_file_limit = limit,
            wanted,
            "the open-file limit is below --max-connections + --http-max-connections + \
             --grpc-max-connections + 64; under full load, connects and calls fail for want of \
             descriptors. Raise the limit (ulimit -n) or lower the caps"
        );
    }
}

/// The open-file limit after raising the soft limit to the hard one.
#[cfg(unix)]
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    // `rlim_t` is u64 on Linux, but not on every unix.
    #[allow(clippy::unnecessary_cast)]
    Some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> Option<u64> {
    None
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "SIGTERM cannot be handled; only SIGINT stops the server gracefully");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
