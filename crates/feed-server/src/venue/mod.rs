//! Venue personalities: the connection rules of real exchanges, enforced per connection, so the
//! WebSocket Manager's tests can show both sides of each rule: the venue closes a connection that
//! breaks it and keeps one that follows it.
//!
//! | venue | rule | knobs (query) | on a breach |
//! |---|---|---|---|
//! | `okx` | text `ping` at least every `deadline_ms`, answered `pong` | `deadline_ms` (30 000) | close 4004 |
//! | `bybit` | `{"op":"ping"}` at least every `deadline_ms`, answered `{"op":"pong",...}` | `deadline_ms` (20 000) | close 4004 |
//! | `htx` | server frames are gzip binary; server `{"ping":n}` every `ping_every_ms`, client answers `{"pong":n}` | `ping_every_ms` (5 000) | 2 unanswered: close 4002 |
//! | `binance` | at most `limit` client messages (any kind) per sliding second; optional lifetime with a `serverShutdown` notice | `limit` (5), `lifetime_ms`, `notice_ms` (1 000), `close_code` (1001) | close 1008; at the end of the lifetime `close_code` |
//!
//! The venue is chosen per server ([`FeedConfig::venue`](crate::FeedConfig::venue), `--venue`)
//! and per connection (`?venue=NAME`, or `none`, overriding the server's); the knobs come from
//! the query, so tests can scale the deadlines down. An unknown name or a bad knob value is
//! refused with HTTP 400 at the handshake. Under `binance`, `?lifetime_ms`, `notice_ms` and
//! `close_code` are part of its rules, with the server's default lifetime
//! [`FeedConfig::lifetime`](crate::FeedConfig::lifetime) (`--lifetime-ms`); any other connection
//! gets the same lifetime clock (`lifetime`) from its own `?lifetime_ms`, with the notice only
//! when `notice_ms` is given.
//!
//! The session shows every client message to the connection's `Personality` before it does
//! anything else with it (`inbound`), and wakes it at `next_due` for what the venue does on its
//! own (`due`). The rules are plain state machines over the times the session passes in, so the
//! unit tests here need no sockets. A connection without a personality has no `Personality` at
//! all: today's behaviour, unchanged. Keepalives (okx/bybit pings, htx pongs) are recorded in
//! the received log, marked `keepalive`, but never taken for SUBSCRIBE or echo requests.

mod binance;
pub(crate) mod htx;
mod keepalive;
pub(crate) mod lifetime;

use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Largest value of a millisecond knob (config or query): 7 days. Keeps deadlines far from
/// `Instant` overflow whatever a client writes.
pub const MAX_KNOB_MS: u64 = 7 * 24 * 3600 * 1000;

/// A venue whose connection rules the server can enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Venue {
    /// OKX v5: text `ping` keepalive, closed after 30 s without one.
    Okx,
    /// Bybit v5: `{"op":"ping"}` keepalive every 20 s.
    Bybit,
    /// HTX (Huobi): gzip binary frames, server pings every 5 s, closed after 2 missed pongs.
    Htx,
    /// Binance spot streams: 5 incoming messages per second, a bounded connection lifetime.
    Binance,
}

impl Venue {
    /// Every venue, in the order the docs list them.
    pub const ALL: [Venue; 4] = [Venue::Okx, Venue::Bybit, Venue::Htx, Venue::Binance];

    /// The name used by `--venue` and `?venue=`.
    pub fn name(self) -> &'static str {
        match self {
            Venue::Okx => "okx",
            Venue::Bybit => "bybit",
            Venue::Htx => "htx",
            Venue::Binance => "binance",
        }
    }
}

impl std::str::FromStr for Venue {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Venue::ALL
            .into_iter()
            .find(|venue| venue.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown venue {s:?}: use okx, bybit, htx or binance"))
    }
}

/// One connection's personality with its knobs, derived from the server's
/// [`FeedConfig::venue`](crate::FeedConfig::venue) and the URL query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VenueRules {
    /// The client sends text `ping` at least every `deadline`; each is answered `pong`.
    Okx { deadline: Duration },
    /// The client sends `{"op":"ping"}` at least every `deadline`; each is answered.
    Bybit { deadline: Duration },
    /// Server frames are gzip binary; the server pings every `ping_every`.
    Htx { ping_every: Duration },
    /// At most `limit` client messages per sliding second; optionally a bounded lifetime.
    Binance {
        limit: u32,
        lifetime: Option<Lifetime>,
    },
}

/// A Binance connection's lifetime: a `serverShutdown` notice `notice` before the end, then a
/// close with `close_code` once `after` has passed since the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub after: Duration,
    /// At most `after` (clamped).
    pub notice: Duration,
    /// 1000, 1001 or 1012.
    pub close_code: u16,
}

impl VenueRules {
    /// The venue these rules belong to.
    pub fn venue(&self) -> Venue {
        match self {
            VenueRules::Okx { .. } => Venue::Okx,
            VenueRules::Bybit { .. } => Venue::Bybit,
            VenueRules::Htx { .. } => Venue::Htx,
            VenueRules::Binance { .. } => Venue::Binance,
        }
    }

    /// The rules of `venue` with the knobs of one request; `lifetime` is the server's default
    /// Binance lifetime ([`FeedConfig::lifetime`](crate::FeedConfig::lifetime)).
    pub(crate) fn new(venue: Venue, knobs: &Knobs, lifetime: Option<Duration>) -> Self {
        let ms = |value: Option<u64>, default: u64| Duration::from_millis(value.unwrap_or(default));
        match venue {
            Venue::Okx => VenueRules::Okx {
                deadline: ms(knobs.deadline_ms, 30_000),
            },
            Venue::Bybit => VenueRules::Bybit {
                deadline: ms(knobs.deadline_ms, 20_000),
            },
            Venue::Htx => VenueRules::Htx {
                ping_every: ms(knobs.ping_every_ms, 5_000),
            },
            Venue::Binance => VenueRules::Binance {
                limit: knobs.limit.unwrap_or(5),
                lifetime: knobs.lifetime(lifetime),
            },
        }
    }
}

/// The numeric knobs of one request's query, each checked when it is read. A knob that the
/// chosen venue does not use is checked too (a typo shows) and then ignored.
#[derive(Debug, Default)]
pub(crate) struct Knobs {
    deadline_ms: Option<u64>,
    ping_every_ms: Option<u64>,
    limit: Option<u32>,
    lifetime_ms: Option<u64>,
    notice_ms: Option<u64>,
    close_code: Option<u16>,
}

impl Knobs {
    /// Reads `key=value` if `key` is a venue knob: `Ok(false)` for other keys, an error (sent to
    /// the client with HTTP 400) for a knob with an unacceptable value.
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let number = || -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{key} must be a non-negative integer, got {value:?}"))
        };
        let millis = |positive: bool| -> Result<u64, String> {
            let ms = number()?;
            if positive && ms == 0 {
                return Err(format!("{key} must be above zero"));
            }
            check_knob_ms(key, ms)?;
            Ok(ms)
        };
        match key {
            "deadline_ms" => self.deadline_ms = Some(millis(true)?),
            "ping_every_ms" => self.ping_every_ms = Some(millis(true)?),
            "lifetime_ms" => self.lifetime_ms = Some(millis(false)?),
            "notice_ms" => self.notice_ms = Some(millis(false)?),
            "limit" => {
                let limit = u32::try_from(number()?).unwrap_or(u32::MAX);
                if limit == 0 {
                    return Err("limit must be at least 1".to_owned());
                }
                self.limit = Some(limit);
            }
            "close_code" => match number()? {
                code @ (1000 | 1001 | 1012) => self.close_code = Some(code as u16),
                _ => {
                    return Err(format!(
                        "close_code must be 1000, 1001 or 1012, got {value:?}"
                    ))
                }
            },
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Knobs {
    /// The lifetime the knobs `lifetime_ms`, `notice_ms` (default 1000, clamped to the lifetime)
    /// and `close_code` (default 1001) describe; `default` applies when the query has no
    /// `lifetime_ms`, and `lifetime_ms=0` turns it off.
    pub(crate) fn lifetime(&self, default: Option<Duration>) -> Option<Lifetime> {
        let after = match self.lifetime_ms {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => default,
        }?;
        Some(Lifetime {
            after,
            notice: Duration::from_millis(self.notice_ms.unwrap_or(1_000)).min(after),
            close_code: self.close_code.unwrap_or(1001),
        })
    }

    /// Whether the query set `notice_ms` (the generic lifetime sends a notice only then).
    pub(crate) fn has_notice(&self) -> bool {
        self.notice_ms.is_some()
    }
}

/// Refuses a millisecond value above [`MAX_KNOB_MS`].
pub(crate) fn check_knob_ms(key: &str, ms: u64) -> Result<(), String> {
    if ms > MAX_KNOB_MS {
        return Err(format!("{key} must be at most {MAX_KNOB_MS} (7 days)"));
    }
    Ok(())
}

/// The rule a venue closed a connection for; its [`key`](Rule::key) names it in the stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// okx, bybit: no keepalive within the deadline.
    NoPing,
    /// htx: two server pings in a row without their pong.
    PingsUnanswered,
    /// binance: more messages in one second than the limit.
    RateLimit,
    /// binance: the connection's lifetime ended.
    Lifetime,
    /// The generic lifetime (`?lifetime_ms` without the binance personality) ended.
    PlainLifetime,
}

/// A close the venue owes the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuleClose {
    pub rule: Rule,
    pub code: u16,
    pub reason: String,
}

/// What the venue makes of one client message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// None of the venue's business, or only counted: handle it as usual.
    Pass,
    /// The client's keepalive: answer with `reply`, and nothing else (not a request).
    Ping { reply: String },
    /// The client's answer to a server ping (matching or not): nothing else to do.
    Pong,
    /// The message broke a rule: close, without handling it.
    Close(RuleClose),
}

/// What the venue does on its own when [`Personality::next_due`] comes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send this server ping (text, before gzip).
    Ping(String),
    /// Send this notice of a coming disconnect (text).
    Notice(String),
    /// Close the connection.
    Close(RuleClose),
}

/// The running rules of one connection.
pub(crate) enum Personality {
    /// okx and bybit: the client pings.
    ClientPings(keepalive::ClientPings),
    /// htx: the server pings, everything is gzip.
    ServerPings(htx::ServerPings),
    /// binance: a message rate limit and a lifetime.
    Limits(binance::Limits),
}

impl Personality {
    /// Starts the rules at the handshake (`now`).
    pub(crate) fn new(rules: &VenueRules, now: Instant) -> Self {
        match *rules {
            VenueRules::Okx { deadline } => Personality::ClientPings(keepalive::ClientPings::new(
                keepalive::Style::Okx,
                deadline,
                now,
            )),
            VenueRules::Bybit { deadline } => Personality::ClientPings(
                keepalive::ClientPings::new(keepalive::Style::Bybit, deadline, now),
            ),
            VenueRules::Htx { ping_every } => {
                Personality::ServerPings(htx::ServerPings::new(ping_every, now))
            }
            VenueRules::Binance { limit, lifetime } => {
                Personality::Limits(binance::Limits::new(limit, lifetime, now))
            }
        }
    }

    /// Whether every server text message goes out as a gzip-compressed binary message.
    pub(crate) fn gzip(&self) -> bool {
        matches!(self, Personality::ServerPings(_))
    }

    /// Classifies one client message received at `now` (every kind: the rate limit counts
    /// pings and pongs too).
    pub(crate) fn inbound(&mut self, message: &Message, now: Instant) -> Inbound {
        match self {
            Personality::ClientPings(rules) => rules.inbound(message, now),
            Personality::ServerPings(rules) => rules.inbound(message),
            Personality::Limits(rules) => rules.inbound(message, now),
        }
    }

    /// binance: the client messages within the last second, this one included.
    pub(crate) fn msgs_in_last_second(&self) -> Option<u32> {
        match self {
            Personality::Limits(rules) => Some(rules.in_last_second()),
            _ => None,
        }
    }

    /// When [`due`](Self::due) has something to do next, if ever.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        match self {
            Personality::ClientPings(rules) => Some(rules.next_due()),
            Personality::ServerPings(rules) => Some(rules.next_due()),
            Personality::Limits(rules) => rules.next_due(),
        }
    }

    /// The next thing to do at `now` (`clock_ms`: ms since the Unix epoch, for the messages);
    /// call until `None`.
    pub(crate) fn due(&mut self, now: Instant, clock_ms: u64) -> Option<Action> {
        match self {
            Personality::ClientPings(rules) => rules.due(now),
            Personality::ServerPings(rules) => rules.due(now, clock_ms),
            Personality::Limits(rules) => rules.due(now, clock_ms),
        }
    }

    /// Moves every deadline `by` later: the session was stalled by control for that long, and a
    /// stall of the server is not the client's fault.
    pub(crate) fn postpone(&mut self, by: Duration) {
        match self {
            Personality::ClientPings(rules) => rules.postpone(by),
            Personality::ServerPings(rules) => rules.postpone(by),
            Personality::Limits(rules) => rules.postpone(by),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(venue: Venue, query: &[(&str, &str)], lifetime: Option<Duration>) -> VenueRules {
        let mut knobs = Knobs::default();
        for (key, value) in query {
            assert_eq!(knobs.set(key, value), Ok(true), "{key}={value}");
        }
        VenueRules::new(venue, &knobs, lifetime)
    }

    #[test]
    fn names_parse_and_unknown_ones_are_refused() {
        for venue in Venue::ALL {
            assert_eq!(venue.name().parse::<Venue>(), Ok(venue));
        }
        assert_eq!("OKX".parse::<Venue>(), Ok(Venue::Okx));
        let error = "kraken".parse::<Venue>().unwrap_err();
        assert!(
            error.contains("\"kraken\"") && error.contains("okx, bybit"),
            "{error}"
        );
    }

    #[test]
    fn defaults_follow_the_venues_docs() {
        let secs = Duration::from_secs;
        assert_eq!(
            rules(Venue::Okx, &[], None),
            VenueRules::Okx { deadline: secs(30) }
        );
        assert_eq!(
            rules(Venue::Bybit, &[], None),
            VenueRules::Bybit { deadline: secs(20) }
        );
        assert_eq!(
            rules(Venue::Htx, &[], None),
            VenueRules::Htx {
                ping_every: secs(5)
            }
        );
        assert_eq!(
            rules(Venue::Binance, &[], None),
            VenueRules::Binance {
                limit: 5,
                lifetime: None
            }
        );
    }

    #[test]
    fn knobs_scale_the_rules_and_the_notice_is_clamped_to_the_lifetime() {
        let ms = Duration::from_millis;
        assert_eq!(
            rules(Venue::Okx, &[("deadline_ms", "250"), ("limit", "3")], None),
            VenueRules::Okx { deadline: ms(250) }
        );
        assert_eq!(
            rules(
                Venue::Binance,
                &[
                    ("limit", "2"),
                    ("lifetime_ms", "400"),
                    ("close_code", "1012")
                ],
                None
            ),
            VenueRules::Binance {
                limit: 2,
                lifetime: Some(Lifetime {
                    after: ms(400),
                    notice: ms(400),
                    close_code: 1012
                })
            }
        );
        // The server's lifetime applies unless the query sets one; 0 turns it off.
        let server = Some(ms(900));
        let VenueRules::Binance { lifetime, .. } =
            rules(Venue::Binance, &[("notice_ms", "100")], server)
        else {
            panic!("binance rules");
        };
        assert_eq!(
            lifetime,
            Some(Lifetime {
                after: ms(900),
                notice: ms(100),
                close_code: 1001
            })
        );
        assert_eq!(
            rules(Venue::Binance, &[("lifetime_ms", "0")], server),
            VenueRules::Binance {
                limit: 5,
                lifetime: None
            }
        );
    }

    #[test]
    fn bad_knob_values_are_refused_and_other_keys_are_not_knobs() {
        let mut knobs = Knobs::default();
        for (key, value) in [
            ("deadline_ms", "0"),
            ("deadline_ms", "-1"),
            ("ping_every_ms", "x"),
            ("limit", "0"),
            ("close_code", "1002"),
            ("close_code", "4000"),
            ("lifetime_ms", "604800001"),
        ] {
            assert!(knobs.set(key, value).is_err(), "{key}={value} accepted");
        }
        assert_eq!(knobs.set("rate", "10"), Ok(false));
        assert_eq!(knobs.set("lifetime_ms", "0"), Ok(true));
        assert_eq!(knobs.set("limit", "99999999999"), Ok(true));
    }
}
