//! Server configuration ([`FeedConfig`]) and the per-connection parameters derived from it and
//! from the request URL ([`ConnectionParams`]).

use std::net::SocketAddr;
use std::time::Duration;

use crate::venue::{check_knob_ms, Knobs, Lifetime, Venue, VenueRules};

/// Largest `size` accepted (config or query): keeps one frame, and so one batch, bounded.
pub const MAX_FRAME_SIZE: usize = 1 << 20;
/// Largest [`FeedConfig::broadcast_buffer_bytes`].
pub const MAX_BROADCAST_BUFFER_BYTES: usize = 1 << 30;

/// Settings of one feed server. Plain data: build it, then pass it to
/// [`FeedServer::start`](crate::FeedServer::start), which validates it once.
///
/// Every streaming setting is a default that a client can override per connection through the
/// URL query (see the crate docs).
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// WebSocket listen address. Default `127.0.0.1:0` (a free port; read it from
    /// [`FeedHandle::addr`](crate::FeedHandle::addr)).
    pub listen: SocketAddr,
    /// Optional HTTP control endpoint address (`/stats`, `/drop`, `/stall`, ...). Default none.
    pub control_listen: Option<SocketAddr>,
    /// Depth updates per second per connection; `0` = as fast as the socket takes them. Default 10.
    pub rate: u32,
    /// Target frame size in bytes; frames are filled with price levels and padded with JSON
    /// whitespace to exactly this size when it is at least the size of an empty update.
    /// `0` = natural size (one bid and one ask). Default 0.
    pub size: usize,
    /// Stop streaming after this many frames per connection (the connection stays open).
    /// `None` = unlimited. Default none.
    pub count: Option<u64>,
    /// Stream from the moment the client connects (`true`), or only while it has a
    /// SUBSCRIBE in effect (`false`). Default true.
    pub auto_stream: bool,
    /// Stream name used when the client has not subscribed to anything. Default
    /// `btcusdt@depth@100ms` (symbol `BTCUSDT`).
    pub stream: String,
    /// Answer correlation requests (text envelope and binary prefix). Default true.
    pub echo: bool,
    /// Delay before each echo reply. Default zero.
    pub echo_delay: Duration,
    /// Most recent client messages kept for [`FeedHandle::received`](crate::FeedHandle::received);
    /// older ones are forgotten. Default 100 000.
    pub record_limit: usize,
    /// Most delayed echo replies held per connection; when full, the server stops reading that
    /// client until the oldest reply is due. Default 1024.
    pub delayed_reply_limit: usize,
    /// A client must finish its TLS and WebSocket handshakes within this after TCP accept, or it
    /// is dropped. Default 10 s.
    pub handshake_timeout: Duration,
    /// Serve `wss://` with this TLS configuration (see [`crate::tls`]); `None` = plain `ws://`.
    /// The control endpoint stays plain HTTP. Default none.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The venue personality of every connection (see [`crate::venue`]); a client overrides it
    /// with `?venue=NAME` (or `?venue=none`). Default none: no venue rules.
    pub venue: Option<Venue>,
    /// Lifetime of connections under the `binance` personality (its `serverShutdown` notice and
    /// close); a client overrides it with `?lifetime_ms=N` (`0` = unlimited). At most 7 days.
    /// Default none: unlimited. (A connection without the binance personality gets a lifetime
    /// from its own `?lifetime_ms` only.)
    pub lifetime: Option<Duration>,
    /// Broadcast (venue-like) mode for every connection: one generator per stream name, whose
    /// frames every subscribed socket shares byte for byte, with ids global per stream (see
    /// [`crate::broadcast`]). A client overrides it with `?broadcast=0|1`. Needs `rate` above 0.
    /// Default false.
    pub broadcast: bool,
    /// Bytes of frames each broadcast channel keeps for its sockets (one channel per stream and
    /// frame variant: path form, `size`, `ids`): a socket further behind than that many bytes'
    /// worth of frames (at least 4, at most 65 536 frames, rounded down to a power of two) is
    /// closed with 1008. At most 1 GiB. Default 8 MiB.
    pub broadcast_buffer_bytes: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            control_listen: None,
            rate: 10,
            size: 0,
            count: None,
            auto_stream: true,
            stream: "btcusdt@depth@100ms".to_owned(),
            echo: true,
            echo_delay: Duration::ZERO,
            record_limit: 100_000,
            delayed_reply_limit: 1024,
            handshake_timeout: Duration::from_secs(10),
            tls: None,
            venue: None,
            lifetime: None,
            broadcast: false,
            broadcast_buffer_bytes: 8 << 20,
        }
    }
}

impl FeedConfig {
    /// Checks the settings that have no sensible meaning when wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.stream.trim().is_empty() {
            return Err("stream name must not be empty".to_owned());
        }
        if self.size > MAX_FRAME_SIZE {
            return Err(format!("size must be at most {MAX_FRAME_SIZE} bytes"));
        }
        if self.handshake_timeout.is_zero() {
            return Err("handshake_timeout must be above zero".to_owned());
        }
        if self.delayed_reply_limit == 0 {
            return Err("delayed_reply_limit must be at least 1".to_owned());
        }
        if self.broadcast && self.rate == 0 {
            return Err(
                "broadcast needs a rate above 0 (frames per second of each stream)".to_owned(),
            );
        }
        if self.broadcast_buffer_bytes == 0
            || self.broadcast_buffer_bytes > MAX_BROADCAST_BUFFER_BYTES
        {
            return Err(format!(
                "broadcast_buffer_bytes must be 1 ..= {MAX_BROADCAST_BUFFER_BYTES}"
            ));
        }
        if let Some(lifetime) = self.lifetime {
            if lifetime.is_zero() {
                return Err("lifetime must be above zero (none = unlimited)".to_owned());
            }
            check_knob_ms(
                "lifetime",
                u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
            )?;
        }
        Ok(())
    }
}

/// Shape of the frames on one connection, chosen by the URL path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameForm {
    /// `/stream`: `{"stream":"<name>","data":{...}}` (Binance combined streams).
    Combined,
    /// `/ws`, `/ws/<name>` and `/`: the bare depth update object (Binance raw streams).
    Bare,
}

/// Why a WebSocket request was turned away: the HTTP status and a reason for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
}

impl Rejection {
    fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            status: 400,
            reason: reason.into(),
        }
    }
}

/// The streaming settings of one connection: the server config overridden by the request URL.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionParams {
    pub form: FrameForm,
    pub rate: u32,
    pub size: usize,
    pub count: Option<u64>,
    pub auto_stream: bool,
    /// Streams sent while the client has no subscription (when `auto_stream`).
    pub default_streams: Vec<String>,
    pub echo: bool,
    pub echo_delay: Duration,
    /// The venue personality and its knobs; `None` = no venue rules.
    pub venue: Option<VenueRules>,
    /// The generic lifetime, from `?lifetime_ms` (with `close_code`, `notice_ms`), when the
    /// connection has no binance personality (whose rules carry their own lifetime): the socket is
    /// closed with its code that long after the handshake. `None` = unlimited.
    pub lifetime: Option<Lifetime>,
    /// Whether the generic lifetime sends the `serverShutdown` notice: only when the query sets
    /// `notice_ms`.
    pub lifetime_notice: bool,
    /// Broadcast mode (`?broadcast=1`, or [`FeedConfig::broadcast`]): frames come from the
    /// stream's global generator (see [`crate::broadcast`]).
    pub broadcast: bool,
    /// With broadcast: frames carry the global id `u` (`true`, `?ids=1`, the default) or are
    /// id-less trades with a token (`?ids=0`).
    pub ids: bool,
}

impl ConnectionParams {
    /// Derives a connection's settings from the request path and query.
    ///
    /// Query keys: `rate`, `size`, `count` (`0` = unlimited), `streams` (`0`/`1`, or a
    /// `/`-separated list of stream names as in Binance's `/stream?streams=a/b`), `echo`
    /// (`0`/`1`), `echo_delay_ms`, `venue` (a [`Venue`] name or `none`) and the venue knobs
    /// `deadline_ms`, `ping_every_ms`, `limit`, `lifetime_ms`, `notice_ms`, `close_code` (see
    /// [`crate::venue`]; the last three make the generic lifetime without a binance personality),
    /// `broadcast` (`0`/`1`) and `ids` (`0`/`1`, `0` only with broadcast). Unknown keys are
    /// ignored. The error text is sent to the client with the
    /// HTTP rejection (404 for a path, 400 for a query value).
    pub fn from_request(
        config: &FeedConfig,
        path: &str,
        query: Option<&str>,
    ) -> Result<Self, Rejection> {
        let mut params = Self {
            form: FrameForm::Bare,
            rate: config.rate,
            size: config.size,
            count: config.count,
            auto_stream: config.auto_stream,
            default_streams: vec![config.stream.clone()],
            echo: config.echo,
            echo_delay: config.echo_delay,
            venue: None,
            lifetime: None,
            lifetime_notice: false,
            broadcast: config.broadcast,
            ids: true,
        };
        let mut venue = config.venue;
        let mut knobs = Knobs::default();
        let path = percent_decode(path);
        match path.as_str() {
            "/" | "/ws" => {}
            "/stream" | "/stream/" => params.form = FrameForm::Combined,
            p => match p.strip_prefix("/ws/") {
                Some(name) if !name.is_empty() => params.default_streams = vec![name.to_owned()],
                _ => {
                    return Err(Rejection {
                        status: 404,
                        reason: format!("unknown path {p}: use /ws, /ws/<stream> or /stream"),
                    })
                }
            },
        }
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match key {
                "rate" => params.rate = parse_number(key, &value)?,
                "size" => {
                    params.size = parse_number(key, &value)?;
                    if params.size > MAX_FRAME_SIZE {
                        return Err(Rejection::bad_request(format!(
                            "size must be at most {MAX_FRAME_SIZE} bytes"
                        )));
                    }
                }
                "count" => {
                    let n: u64 = parse_number(key, &value)?;
                    params.count = (n > 0).then_some(n);
                }
                "streams" => match parse_flag(&value) {
                    Some(flag) => params.auto_stream = flag,
                    None => {
                        let names: Vec<String> = value
                            .split('/')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect();
                        if names.is_empty() {
                            return Err(Rejection::bad_request(
                                "streams must be 0, 1 or a list of stream names",
                            ));
                        }
                        params.default_streams = names;
                        params.auto_stream = true;
                    }
                },
                "echo" => {
                    params.echo =
                        parse_flag(&value).ok_or(Rejection::bad_request("echo must be 0 or 1"))?;
                }
                "echo_delay_ms" => {
                    params.echo_delay = Duration::from_millis(parse_number(key, &value)?);
                }
                "broadcast" => {
                    params.broadcast = parse_flag(&value)
                        .ok_or(Rejection::bad_request("broadcast must be 0 or 1"))?;
                }
                "ids" => {
                    params.ids =
                        parse_flag(&value).ok_or(Rejection::bad_request("ids must be 0 or 1"))?;
                }
                "venue" if value == "none" => venue = None,
                "venue" => {
                    venue =
                        Some(value.parse().map_err(|e: String| {
                            Rejection::bad_request(format!("{e} (or none)"))
                        })?);
                }
                // Other keys are venue knobs, or ignored.
                _ => {
                    knobs.set(key, &value).map_err(Rejection::bad_request)?;
                }
            }
        }
        if !params.ids && !params.broadcast {
            return Err(Rejection::bad_request(
                "ids=0 needs broadcast=1 (id-less frames exist only in broadcast mode)",
            ));
        }
        if params.broadcast && params.rate == 0 {
            return Err(Rejection::bad_request(
                "broadcast needs a rate above 0: rate=0 (as fast as the socket takes them) has no \
                 meaning for a generator shared by many sockets",
            ));
        }
        params.venue = venue.map(|venue| VenueRules::new(venue, &knobs, config.lifetime));
        if venue != Some(Venue::Binance) {
            params.lifetime = knobs.lifetime(None);
            params.lifetime_notice = knobs.has_notice();
        }
        Ok(params)
    }
}

fn parse_number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, Rejection> {
    value.parse().map_err(|_| {
        Rejection::bad_request(format!(
            "{key} must be a non-negative integer, got {value:?}"
        ))
    })
}

fn parse_flag(value: &str) -> Option<bool> {
    match value {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Decodes `%XX` escapes (clients often encode the `@` and `/` in stream names); `+` is a space.
/// Invalid escapes are kept as written.
pub(crate) fn percent_decode(input: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_overrides_the_server_defaults() {
        let config = FeedConfig::default();
        let p = ConnectionParams::from_request(
            &config,
            "/stream",
            Some("rate=0&size=100&count=5&streams=0&echo=0&echo_delay_ms=20&x=y"),
        )
        .unwrap();
        assert_eq!(p.form, FrameForm::Combined);
        assert_eq!((p.rate, p.size, p.count), (0, 100, Some(5)));
        assert!(!p.auto_stream && !p.echo);
        assert_eq!(p.echo_delay, Duration::from_millis(20));
    }

    #[test]
    fn paths_choose_the_frame_form_and_stream() {
        let config = FeedConfig::default();
        let p = ConnectionParams::from_request(&config, "/ws/ethusdt%40depth", None).unwrap();
        assert_eq!(p.form, FrameForm::Bare);
        assert_eq!(p.default_streams, vec!["ethusdt@depth".to_owned()]);
        let p = ConnectionParams::from_request(
            &config,
            "/stream",
            Some("streams=btcusdt@depth/ethusdt%40depth"),
        )
        .unwrap();
        assert_eq!(p.default_streams, ["btcusdt@depth", "ethusdt@depth"]);
        let status = |path, query| {
            ConnectionParams::from_request(&config, path, query)
                .err()
                .map(|r| r.status)
        };
        assert_eq!(status("/nope", None), Some(404));
        assert_eq!(status("/ws", Some("rate=-1")), Some(400));
        assert_eq!(status("/ws", Some("size=2000000")), Some(400));
    }

    #[test]
    fn the_venue_comes_from_the_config_or_the_query() {
        let ms = Duration::from_millis;
        let venue = |config: &FeedConfig, query| {
            ConnectionParams::from_request(config, "/ws", Some(query))
                .map(|p| p.venue)
                .map_err(|r| (r.status, r.reason))
        };
        let plain = FeedConfig::default();
        assert_eq!(venue(&plain, "deadline_ms=5"), Ok(None));
        assert_eq!(
            venue(&plain, "venue=okx&deadline_ms=250"),
            Ok(Some(VenueRules::Okx { deadline: ms(250) }))
        );
        let okx = FeedConfig {
            venue: Some(Venue::Okx),
            ..FeedConfig::default()
        };
        assert_eq!(
            venue(&okx, "rate=1"),
            Ok(Some(VenueRules::Okx {
                deadline: ms(30_000)
            }))
        );
        assert_eq!(venue(&okx, "venue=none"), Ok(None));
        assert_eq!(
            venue(&okx, "ping_every_ms=100&venue=htx"),
            Ok(Some(VenueRules::Htx {
                ping_every: ms(100)
            }))
        );
        let (status, reason) = venue(&plain, "venue=kraken").unwrap_err();
        assert_eq!(status, 400);
        assert!(reason.contains("unknown venue \"kraken\""), "{reason}");
        assert_eq!(
            venue(&plain, "venue=binance&close_code=1002")
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(venue(&plain, "venue=okx&deadline_ms=0").unwrap_err().0, 400);
    }

    #[test]
    fn broadcast_and_ids_are_flags_with_their_conditions() {
        let config = FeedConfig::default();
        let parse = |query| ConnectionParams::from_request(&config, "/stream", Some(query));
        let p = parse("broadcast=1&ids=0&rate=5").unwrap();
        assert!(p.broadcast && !p.ids);
        assert!(parse("broadcast=1").unwrap().ids);
        for bad in [
            "ids=0",
            "broadcast=1&rate=0",
            "broadcast=2",
            "broadcast=1&ids=x",
        ] {
            assert_eq!(parse(bad).err().map(|r| r.status), Some(400), "{bad}");
        }
        let broadcasting = FeedConfig {
            broadcast: true,
            ..FeedConfig::default()
        };
        assert!(broadcasting.validate().is_ok());
        let p = ConnectionParams::from_request(&broadcasting, "/ws", None).unwrap();
        assert!(p.broadcast);
        let p = ConnectionParams::from_request(&broadcasting, "/ws", Some("broadcast=0&rate=0"));
        assert!(!p.unwrap().broadcast);
        let bad = FeedConfig {
            rate: 0,
            ..broadcasting
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn a_lifetime_without_the_binance_personality_is_generic() {
        let config = FeedConfig {
            lifetime: Some(Duration::from_secs(5)),
            ..FeedConfig::default()
        };
        let parse = |query| ConnectionParams::from_request(&config, "/ws", Some(query)).unwrap();
        let p = parse("lifetime_ms=300&close_code=1012");
        assert_eq!(
            p.lifetime,
            Some(Lifetime {
                after: Duration::from_millis(300),
                notice: Duration::from_millis(300),
                close_code: 1012
            })
        );
        assert!(!p.lifetime_notice);
        assert!(parse("lifetime_ms=300&notice_ms=100").lifetime_notice);
        // The server's default lifetime stays a binance one.
        assert_eq!(parse("rate=1").lifetime, None);
        let p = parse("venue=binance&lifetime_ms=300");
        assert_eq!(p.lifetime, None, "binance keeps the lifetime in its rules");
        let p = parse("venue=okx&lifetime_ms=300");
        assert!(p.lifetime.is_some());
    }

    #[test]
    fn a_zero_or_huge_lifetime_is_refused() {
        for lifetime in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
            let config = FeedConfig {
                lifetime: Some(lifetime),
                ..FeedConfig::default()
            };
            assert!(config.validate().is_err(), "{lifetime:?}");
        }
    }

    #[test]
    fn percent_decode_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%40b+c%zz%4"), "a@b c%zz%4");
    }
}
