//! `wsm serve`'s settings: command-line flags, each with an environment variable behind it (a flag
//! given on the command line wins). Parsing checks types and ranges, so a bad value stops the process
//! at start with a message naming the flag, never later with a vague failure.

use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::api::auth::ApiKeys;
use crate::api::listen::PortLimits;
use crate::cluster::ClusterConfig;
use crate::connection::{BackoffPolicy, ConnectionOptions, TlsClient, TlsMinVersion, TlsSettings};
use crate::security::{parse_allowed_hosts, AllowEntry, NetworkPolicy, UrlRedactor};
use crate::service::ServiceConfig;

/// The limits of the HTTP and the gRPC port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub http: PortLimits,
    pub grpc: PortLimits,
}

/// Which implementation backs the state store or the pub/sub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// In process; nothing to install. State dies with the process; the bus is readable with
    /// `wsm tail`.
    Memory,
    /// Redis directly, in Dapr's layout (state hashes, Redis Streams).
    Redis,
    /// The Dapr sidecar's HTTP API.
    Dapr,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address both ports listen on.
    #[arg(long, env = "WSM_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// HTTP port: /health, /ready, /metrics, /v1/invoke (0 = any free port, printed at start).
    #[arg(short = 's', long, env = "WSM_HTTP_PORT", default_value_t = 5001)]
    pub http_port: u16,
    /// gRPC port (h2c) (0 = any free port, printed at start).
    #[arg(short = 'g', long, env = "WSM_GRPC_PORT", default_value_t = 5002)]
    pub grpc_port: u16,
    /// State store backend.
    #[arg(long, env = "WSM_STATE", value_enum, default_value = "memory")]
    pub state: Backend,
    /// Pub/sub backend.
    #[arg(long, env = "WSM_PUBSUB", value_enum, default_value = "memory")]
    pub pubsub: Backend,
    /// Redis for the redis backends: redis://[user:password@]host:port[/db].
    #[arg(long, env = "WSM_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Trim every Redis stream to about this many entries (`XADD MAXLEN ~`, Dapr's
    /// maxLenApprox); unset = never trimmed.
    #[arg(long, env = "WSM_REDIS_MAX_LEN_APPROX", value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_max_len_approx: Option<u64>,
    /// Trim the Redis lifecycle stream (websocketmanager.lifecycle) to about this many events (0 =
    /// as every other stream).
    #[arg(long, env = "WSM_LIFECYCLE_MAX_LEN", default_value_t = crate::backends::redis::DEFAULT_LIFECYCLE_MAX_LEN)]
    pub lifecycle_max_len: u64,
    /// Dapr pub/sub component name (and `pubsubname` in Redis envelopes).
    #[arg(short = 'n', long, env = "WSM_PUBSUB_NAME", default_value = "pubsub")]
    pub pubsub_name: String,
    /// Dapr state store component name.
    #[arg(
        short = 't',
        long,
        env = "WSM_STATE_STORE_NAME",
        default_value = "statestore"
    )]
    pub state_store_name: String,
    /// The Dapr sidecar's HTTP port, for the dapr backends.
    #[arg(long, env = "DAPR_HTTP_PORT", default_value_t = 3500)]
    pub dapr_http_port: u16,
    /// App id: the CloudEvent `source`, and the Redis key prefix (`<app-id>||<key>`), as Dapr uses it.
    #[arg(long, env = "APP_ID", default_value = "websocketmanager")]
    pub app_id: String,
    /// This instance's id (default: HOSTNAME, else a random UUID).
    #[arg(long, env = "HOSTNAME")]
    pub instance_id: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(short = 'l', long, env = "WSM_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Accepted API keys (comma list); when set, every call but /health, /ready and gRPC health
    /// must carry one in `x-api-key`.
    #[arg(
        long,
        env = "WSM_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// The instances' shared credential for calls they forward to each other (sent in
    /// x-wsm-peer-key, accepted in place of an API key). Client keys are never forwarded.
    #[arg(long, env = "WSM_PEER_KEY", hide_env_values = true)]
    pub peer_key: Option<String>,
    /// Where peers may be (comma list of IPs and CIDRs): a heartbeat naming an address outside
    /// gets no forwarded call. Empty = anywhere.
    #[arg(long, env = "WSM_PEER_ALLOWED_CIDRS", default_value = "")]
    pub peer_allowed_cidrs: String,
    /// Allow Connect to loopback, private, link-local and CGNAT addresses.
    #[arg(long, env = "WSM_ALLOW_PRIVATE_NETWORKS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_networks: bool,
    /// Hosts Connect may reach whatever they resolve to (comma list: names, `*.suffix`, IPs, CIDRs).
    #[arg(long, env = "WSM_ALLOWED_HOSTS", default_value = "")]
    pub allowed_hosts: String,
    /// Extra CAs to trust for wss:// upstreams (PEM bundle), added to the compiled-in Mozilla roots.
    #[arg(long, env = "WSM_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM) presented to wss:// upstreams that require mTLS.
    #[arg(long, env = "WSM_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WSM_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<std::path::PathBuf>,
    /// Lowest TLS version offered to upstreams.
    #[arg(long, env = "WSM_TLS_MIN_VERSION", value_enum, default_value = "1.2")]
    pub tls_min_version: TlsMinVersion,
    /// Query keys whose values are redacted wherever a URL is shown (comma list), beyond the
    /// built-in list (apiKey, listenKey, token, signature, password, ...).
    #[arg(long, env = "WSM_REDACT_QUERY_PARAMS", value_delimiter = ',')]
    pub redact_query_params: Vec<String>,
    /// Most open client connections on the HTTP port; at the cap, new clients wait.
    #[arg(long, env = "WSM_HTTP_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_max_connections: u64,
    /// How long an HTTP client may take to send a request's headers, in ms; also how long a
    /// keep-alive connection may wait for its next request.
    #[arg(long, env = "WSM_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub http_header_timeout_ms: u64,
    /// How long an HTTP client may take to send a request's body, in ms.
    #[arg(long, env = "WSM_HTTP_BODY_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub http_body_timeout_ms: u64,
    /// Most open client connections on the gRPC port; at the cap, new clients wait.
    #[arg(long, env = "WSM_GRPC_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub grpc_max_connections: u64,
    /// How long a gRPC client may take to send the HTTP/2 connection preface, in ms.
    #[arg(long, env = "WSM_GRPC_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub grpc_handshake_timeout_ms: u64,
    /// Most concurrent calls (HTTP/2 streams) per gRPC connection.
    #[arg(long, env = "WSM_GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub grpc_max_concurrent_streams: u32,
    /// Most connections this instance holds (0 = no limit).
    #[arg(long, env = "WSM_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Largest message accepted from an upstream or in a request, in bytes.
    #[arg(long, env = "WSM_MAX_MESSAGE_BYTES", default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(1024..=(256 << 20)))]
    pub max_message_bytes: u64,
    /// Connection record TTL (30–3600 s); the owner refreshes it.
    #[arg(long, env = "CONNECTION_RECORD_TTL_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(30..=3600))]
    pub record_ttl_seconds: u64,
    /// Venue profiles to add to the shipped ones, or to replace them by name (TOML, the format of
    /// the shipped profiles.toml; `wsm profiles --profiles FILE` shows the result). A bad file
    /// stops the server at start, naming the file, line and field.
    #[arg(long, env = "WSM_PROFILES")]
    pub profiles: Option<std::path::PathBuf>,
    /// Remove every connection record at start.
    #[arg(long, env = "CLEAR_ALL_ON_START", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub clear_all_on_start: bool,
    /// First reconnect delay in ms (doubles per attempt, capped at 30 s, plus jitter).
    #[arg(long, env = "WSM_RECONNECT_BASE_MS", default_value_t = 1000)]
    pub reconnect_base_ms: u64,
    /// Reconnect attempts per outage (0 = forever).
    #[arg(long, env = "WSM_RECONNECT_ATTEMPTS", default_value_t = 5)]
    pub reconnect_attempts: u32,
    /// Keepalive Ping interval in ms, unless a connection asks for its own.
    #[arg(long, env = "WSM_PING_INTERVAL_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub ping_interval_ms: u64,
    /// On SIGTERM, how long queued frames may take to reach the bus, in ms.
    #[arg(long, env = "WSM_SHUTDOWN_FLUSH_MS", default_value_t = 10_000)]
    pub shutdown_flush_ms: u64,
    /// Seconds between two heartbeats of this instance.
    #[arg(long, env = "INSTANCE_HEARTBEAT_INTERVAL_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_interval_seconds: u64,
    /// Seconds without a heartbeat after which peers take an instance's connections over (at
    /// least twice the interval).
    #[arg(long, env = "INSTANCE_STALE_THRESHOLD_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..=86_400))]
    pub stale_threshold_seconds: u64,
    /// Host (name or IP) peers use to reach this instance's gRPC port (default: the bind
    /// address, or HOSTNAME when binding all interfaces).
    #[arg(long, env = "WSM_GRPC_HOST")]
    pub grpc_host: Option<String>,
    /// gRPC port peers use, when it differs from the one listened on (NAT, port mapping).
    #[arg(long, env = "WSM_GRPC_ADVERTISE_PORT")]
    pub grpc_advertise_port: Option<u16>,
}

impl ServeArgs {
    /// Where Connect may go: strict unless private networks or hosts are allowed. An invalid
    /// `--allowed-hosts` entry is an error naming it.
    pub(crate) fn network_policy(&self) -> Result<NetworkPolicy, String> {
        let allowed = parse_allowed_hosts(&self.allowed_hosts)
            .map_err(|e| format!("invalid --allowed-hosts / WSM_ALLOWED_HOSTS: {e}"))?;
        let policy = if self.allow_private_networks {
            NetworkPolicy::allow_private()
        } else {
            NetworkPolicy::strict()
        };
        Ok(policy.with_allowed_hosts(allowed))
    }

    /// TLS to upstreams: every file is read now, so a wrong path stops the start.
    pub(crate) fn tls_client(&self) -> Result<TlsClient, String> {
        TlsClient::new(&TlsSettings {
            ca_file: self.ca_file.clone(),
            client_cert: self.tls_client_cert.clone(),
            client_key: self.tls_client_key.clone(),
            min_version: self.tls_min_version,
        })
        .map_err(|e| e.to_string())
    }

    /// The service's settings.
    pub(crate) fn service_config(&self) -> Result<ServiceConfig, String> {
        let defaults = ServiceConfig::default();
        let connection = ConnectionOptions {
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            backoff: BackoffPolicy {
                base: Duration::from_millis(self.reconnect_base_ms),
                max_attempts: self.reconnect_attempts,
                ..BackoffPolicy::default()
            },
            max_message_size: self.max_message_bytes as usize,
            network: self.network_policy()?,
            tls: self.tls_client()?,
            redact: UrlRedactor::new(&self.redact_query_params),
            ..ConnectionOptions::default()
        };
        let instance_id = self
            .instance_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .unwrap_or(defaults.instance_id);
        if instance_id == "peers" || instance_id.contains(char::is_whitespace) {
            return Err(format!(
                "--instance-id / HOSTNAME {instance_id:?} cannot name an instance: it must not be \
                 \"peers\" (the peer list's key) or contain whitespace"
            ));
        }
        Ok(ServiceConfig {
            instance_id,
            app_id: self.app_id.clone(),
            connection,
            record_ttl: Duration::from_secs(self.record_ttl_seconds),
            max_connections: self.max_connections,
            clear_all_on_start: self.clear_all_on_start,
            profiles: match &self.profiles {
                Some(path) => std::sync::Arc::new(
                    crate::venue::Profiles::with_file(path).map_err(|e| e.to_string())?,
                ),
                None => defaults.profiles.clone(),
            },
            ..defaults
        })
    }

    /// Heartbeat and failover settings; `grpc_addr` is the address the gRPC port listens on.
    pub(crate) fn cluster_config(
        &self,
        grpc_addr: std::net::SocketAddr,
    ) -> Result<ClusterConfig, String> {
        if self.stale_threshold_seconds < 2 * self.heartbeat_interval_seconds {
            return Err(format!(
                "--stale-threshold-seconds / INSTANCE_STALE_THRESHOLD_SECONDS ({}) must be at least twice --heartbeat-interval-seconds / INSTANCE_HEARTBEAT_INTERVAL_SECONDS ({}): one late heartbeat must not make peers take this instance's connections",
                self.stale_threshold_seconds, self.heartbeat_interval_seconds
            ));
        }
        let host = match self.grpc_host.as_deref().map(str::trim) {
            Some(host) if !host.is_empty() => host.to_owned(),
            _ if !grpc_addr.ip().is_unspecified() => grpc_addr.ip().to_string(),
            _ => std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| "127.0.0.1".to_owned()),
        };
        let port = self.grpc_advertise_port.unwrap_or(grpc_addr.port());
        // An IPv6 literal needs brackets in host:port.
        let advertised_address = if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(ClusterConfig {
            heartbeat_interval: Duration::from_secs(self.heartbeat_interval_seconds),
            stale_after: Duration::from_secs(self.stale_threshold_seconds),
            advertised_address,
            peer_key: self.peer_key.clone().filter(|k| !k.trim().is_empty()),
            peer_allowed: self.peer_allowed()?,
        })
    }

    pub(crate) fn api_keys(&self) -> ApiKeys {
        ApiKeys::new(&self.api_keys).with_peer_key(self.peer_key.as_deref())
    }

    /// A warning for a server anyone on the network may call: it listens beyond loopback and no
    /// API key is set, so whoever reaches its ports can open and send on connections.
    pub(crate) fn exposure_warning(&self) -> Option<String> {
        if self.bind.is_loopback() || self.api_keys().enabled() {
            return None;
        }
        Some(format!(
            "listening on {} without API keys: anyone who can reach ports {} and {} can open              connections and send on them; set --api-keys / WSM_API_KEYS, or --bind 127.0.0.1              for a local try",
            self.bind, self.http_port, self.grpc_port
        ))
    }

    /// `--peer-allowed-cidrs`: IPs and CIDRs only (names would be resolved by whoever forged them).
    fn peer_allowed(&self) -> Result<Vec<AllowEntry>, String> {
        let entries = parse_allowed_hosts(&self.peer_allowed_cidrs)
            .map_err(|e| format!("invalid --peer-allowed-cidrs / WSM_PEER_ALLOWED_CIDRS: {e}"))?;
        if let Some(name) = entries
            .iter()
            .find(|e| matches!(e, AllowEntry::Host(_) | AllowEntry::Suffix(_)))
        {
            return Err(format!(
                "invalid --peer-allowed-cidrs / WSM_PEER_ALLOWED_CIDRS: {name} is a host name; \
                 give IP addresses or CIDRs"
            ));
        }
        Ok(entries)
    }

    /// The limits of both ports.
    pub(crate) fn port_limits(&self) -> Ports {
        Ports {
            http: PortLimits {
                max_connections: usize::try_from(self.http_max_connections).unwrap_or(usize::MAX),
                first_bytes_within: Duration::from_millis(self.http_header_timeout_ms),
            },
            grpc: PortLimits {
                max_connections: usize::try_from(self.grpc_max_connections).unwrap_or(usize::MAX),
                first_bytes_within: Duration::from_millis(self.grpc_handshake_timeout_ms),
            },
        }
    }

    pub(crate) fn http_body_timeout(&self) -> Duration {
        Duration::from_millis(self.http_body_timeout_ms)
    }

    pub(crate) fn shutdown_flush(&self) -> Duration {
        Duration::from_millis(self.shutdown_flush_ms)
    }

    /// The largest request body or gRPC message: a maximal message, base64-encoded in JSON, plus
    /// room for the other fields.
    pub(crate) fn max_request_bytes(&self) -> usize {
        (self.max_message_bytes as usize).saturating_mul(4) / 3 + (64 << 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(extra: &[&str]) -> ServeArgs {
        Cli::parse_from(std::iter::once("wsm").chain(extra.iter().copied())).serve
    }

    #[test]
    fn a_server_open_to_the_network_without_api_keys_is_warned_about() {
        let open = args(&[]).exposure_warning().expect("0.0.0.0 without keys");
        assert!(
            open.contains("without API keys") && open.contains("--api-keys"),
            "{open}"
        );
        assert_eq!(args(&["--bind", "127.0.0.1"]).exposure_warning(), None);
        assert_eq!(args(&["--api-keys", "k1"]).exposure_warning(), None);
    }
}
