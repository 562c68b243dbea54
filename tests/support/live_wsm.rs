//! A real WSM server and the local feed, started in a runtime of their own for as long as a test
//! holds them: what the C host harness's HTTP gateway talks to.

/// The WSM server (`wsm serve`'s own start-up, in process) and a feed server.
pub struct LiveWsm {
    pub runtime: tokio::runtime::Runtime,
    pub http: String,
    pub grpc: String,
    pub feed: feed_server::FeedHandle,
}

impl LiveWsm {
    /// Starts both: WSM on free loopback ports with `extra` flags after the defaults (memory
    /// backends unless `extra` says otherwise), the feed at 200 frames/s once subscribed.
    pub fn start(extra: &[&str]) -> LiveWsm {
        LiveWsm::start_with(extra, None)
    }

    /// The same, with the feed serving `wss://` under `feed_tls`.
    pub fn start_with(
        extra: &[&str],
        feed_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> LiveWsm {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: wsm::config::ServeArgs,
        }
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let defaults = [
            "wsm",
            "--bind",
            "127.0.0.1",
            "-s",
            "0",
            "-g",
            "0",
            "--allow-private-networks",
        ];
        let cli = Cli::parse_from(defaults.iter().chain(extra));
        let (running, feed) = runtime.block_on(async {
            let feed = feed_server::FeedServer::start(feed_server::FeedConfig {
                rate: 200,
                auto_stream: false,
                tls: feed_tls,
                ..feed_server::FeedConfig::default()
            })
            .await
            .expect("the feed server starts");
            let running = wsm::server::start(&cli.args, std::future::pending())
                .await
                .expect("wsm starts");
            (running, feed)
        });
        LiveWsm {
            http: format!("http://{}", running.http_addr),
            grpc: format!("http://{}", running.grpc_addr),
            runtime,
            feed,
        }
    }
}
