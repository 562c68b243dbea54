//! `feed-server`: the market-feed WebSocket server as a process, for scripts and the demo.
//!
//! Prints `listening ws://<addr>` (`wss://` with `--tls-cert`) and, with `--control-port`,
//! `control http://<addr>` on stdout once it accepts connections; logs go to stderr. Exits
//! cleanly on SIGINT or SIGTERM. `--venue` gives every connection an exchange's connection rules
//! (see `feed_server::venue`).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use feed_server::{FeedConfig, FeedServer};
use tracing_subscriber::EnvFilter;

/// Local Binance-like market-feed WebSocket server.
#[derive(Parser, Debug)]
#[command(version, about, after_help = VENUE_HELP)]
struct Args {
    /// WebSocket listen address (port 0 = a free port; read it from the `listening` line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Depth updates per second per connection (0 = as fast as possible).
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// Frame size in bytes (0 = natural size, one bid and one ask).
    #[arg(long, default_value_t = 0)]
    size: usize,
    /// Stop each connection's stream after this many frames (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stream sent to clients that have not subscribed.
    #[arg(long, default_value = "btcusdt@depth@100ms")]
    stream: String,
    /// Send frames only while a client has a SUBSCRIBE in effect.
    #[arg(long)]
    wait_for_subscribe: bool,
    /// Do not answer correlated requests.
    #[arg(long)]
    no_echo: bool,
    /// Delay before each correlation echo, in milliseconds.
    #[arg(long, default_value_t = 0)]
    echo_delay_ms: u64,
    /// Serve the HTTP control endpoint (/stats, /drop, /stall, ...) on this port of the listen
    /// address's IP (0 = a free port).
    #[arg(long)]
    control_port: Option<u16>,
    /// Serve wss:// with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM); needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// TLS versions served: all, 1.2 or 1.3.
    #[arg(long, default_value = "all", requires = "tls_cert")]
    tls_versions: feed_server::tls::TlsVersions,
    /// Require client certificates signed by this CA (PEM): mTLS.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Venue personality of every connection: okx, bybit, htx or binance (a client overrides it
    /// with ?venue=NAME or ?venue=none). Default: none, no venue rules.
    #[arg(long, value_name = "NAME")]
    venue: Option<feed_server::Venue>,
    /// Lifetime of connections under the binance personality, in milliseconds (0 = unlimited;
    /// a client's ?lifetime_ms overrides it).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    lifetime_ms: u64,
    /// Broadcast (venue-like) mode for every connection: one generator per stream name at
    /// --rate, the same frames (byte for byte) for every subscribed socket, ids global per
    /// stream (a client overrides it with ?broadcast=0|1; ?ids=0 for id-less frames).
    #[arg(long)]
    broadcast: bool,
    /// Log filter when RUST_LOG is not set (e.g. info, debug, feed_server=trace).
    #[arg(long, default_value = "info")]
    log_level: String,
}

impl Args {
    fn config(&self) -> Result<FeedConfig, String> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let read = |path: &std::path::Path| {
                    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
                };
                let client_ca = self.tls_client_ca.as_deref().map(read).transpose()?;
                Some(feed_server::tls::server_config(
                    &read(cert)?,
                    &read(key)?,
                    self.tls_versions,
                    client_ca.as_deref(),
                )?)
            }
            _ => None,
        };
        Ok(FeedConfig {
            listen: self.listen,
            control_listen: self
                .control_port
                .map(|port| SocketAddr::new(self.listen.ip(), port)),
            rate: self.rate,
            size: self.size,
            count: (self.count > 0).then_some(self.count),
            auto_stream: !self.wait_for_subscribe,
            stream: self.stream.clone(),
            echo: !self.no_echo,
            echo_delay: Duration::from_millis(self.echo_delay_ms),
            tls,
            venue: self.venue,
            lifetime: (self.lifetime_ms > 0).then(|| Duration::from_millis(self.lifetime_ms)),
            broadcast: self.broadcast,
            ..FeedConfig::default()
        })
    }
}

/// The venue rules and their query knobs, after the flags in `--help`.
const VENUE_HELP: &str = "\
Venue personalities (--venue NAME, or ?venue=NAME|none per connection; knobs by query):
  okx      the client sends the text `ping` at least every deadline_ms (default 30000),
           answered `pong`; otherwise closed with 4004
  bybit    the client sends {\"op\":\"ping\"} (optional req_id) at least every deadline_ms
           (default 20000), answered {\"op\":\"pong\",\"success\":true,\"ret_msg\":\"pong\"};
           otherwise closed with 4004
  htx      server messages are gzip binary; the server sends {\"ping\":<ms>} every
           ping_every_ms (default 5000), the client answers {\"pong\":<same>}; 2 unanswered
           pings close with 4002
  binance  more than `limit` (default 5) client messages of any kind, ping and pong frames
           too, within a sliding second close with 1008; with lifetime_ms (or --lifetime-ms)
           a serverShutdown event notice_ms (default 1000) before the end, then a close with
           close_code (1000, 1001 or 1012; default 1001)
Without binance, ?lifetime_ms=N&close_code=C closes a connection N ms after its handshake
(generic lifetime; the serverShutdown notice only with ?notice_ms=M).
Counters: GET /stats has venue_closes {no_ping, pings_unanswered, rate_limit, lifetime},
venue_pings_answered, venue_pings_sent, venue_pongs_received, venue_notices_sent and
max_client_msgs_per_sec.";

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let config = match args.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("feed-server: TLS: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = config.validate() {
        eprintln!("feed-server: {error}");
        return ExitCode::FAILURE;
    }
    let feed = match FeedServer::start(config).await {
        Ok(feed) => feed,
        Err(error) => {
            eprintln!("feed-server: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening {}://{}", feed.scheme(), feed.addr());
    if let Some(control) = feed.control_addr() {
        let _ = writeln!(stdout, "control http://{control}");
    }
    let _ = stdout.flush();
    drop(stdout);

    match wait_for_signal().await {
        Ok(signal) => tracing::info!(signal, "shutting down"),
        Err(error) => tracing::error!(%error, "cannot listen for signals; shutting down"),
    }
    feed.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<&'static str> {
    tokio::signal::ctrl_c().await.map(|()| "Ctrl-C")
}
