//! Optional API keys: when any are configured, every call on either port must carry one in the
//! `x-api-key` header (gRPC metadata of the same name). Health checks stay open, so orchestrators can
//! probe without a secret.
//!
//! Instances forward calls to each other with their own credential, the peer key
//! (`--peer-key`, header `x-wsm-peer-key`), never with a client's key: a client's key stays
//! between that client and the instance it called.
//!
//! Keys are kept and compared as SHA-256 digests, in constant time over the digest's fixed length,
//! so neither the time taken nor an early return tells a caller how long a key is or how close a
//! guess came. Keys are never logged. Refused calls are counted (`wsm_auth_failures_total`) and
//! logged with the caller's address, at most once a second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

pub(crate) use crate::cluster::forward::PEER_KEY_HEADER;

/// The header (and gRPC metadata key) a caller puts its key in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// At most one log line about refused calls per this long; the others are counted into it.
const LOG_EVERY: Duration = Duration::from_secs(1);

type KeyDigest = [u8; 32];

fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// The accepted keys; no client keys = no authentication.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<[KeyDigest]>,
    peer: Option<KeyDigest>,
    failures: Arc<AuthFailures>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ApiKeys({} configured, peer key {})",
            self.keys.len(),
            if self.peer.is_some() { "set" } else { "unset" }
        )
    }
}

/// Why a call was refused; the text is what the caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Wrong,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::Missing => {
                "this WebSocket Manager requires an API key in the x-api-key header"
            }
            Refused::Wrong => "the x-api-key header does not hold a valid API key",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Refused::Missing => "missing",
            Refused::Wrong => "wrong",
        }
    }
}

/// Which port refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Http,
    Grpc,
}

impl Port {
    fn as_str(self) -> &'static str {
        match self {
            Port::Http => "http",
            Port::Grpc => "grpc",
        }
    }
}

/// Refused calls by port and reason, and the log's rate limit.
#[derive(Debug, Default)]
pub struct AuthFailures {
    /// `[port][reason]`: http/grpc × missing/wrong.
    counts: [[AtomicU64; 2]; 2],
    log: Mutex<LogLimit>,
}

#[derive(Debug, Default)]
struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl AuthFailures {
    fn record(&self, port: Port, refused: Refused, peer: Option<SocketAddr>) {
        self.counts[port as usize][refused as usize].fetch_add(1, Ordering::Relaxed);
        let suppressed = {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if log
                .last
                .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
            {
                log.suppressed += 1;
                return;
            }
            log.last = Some(now);
            std::mem::take(&mut log.suppressed)
        };
        let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        tracing::warn!(
            port = port.as_str(),
            %peer,
            reason = refused.as_str(),
            more_refused_since_last_log = suppressed,
            "refused a call without a valid API key; the caller got UNAUTHENTICATED"
        );
    }

    /// `(port, reason, refused calls)` for the metrics.
    pub fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut rows = Vec::with_capacity(4);
        for port in [Port::Http, Port::Grpc] {
            for reason in [Refused::Missing, Refused::Wrong] {
                let n = self.counts[port as usize][reason as usize].load(Ordering::Relaxed);
                rows.push((port.as_str(), reason.as_str(), n));
            }
        }
        rows
    }
}

impl ApiKeys {
    /// Keys from a list; blank entries are ignored.
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys: Vec<KeyDigest> = keys
            .into_iter()
            .map(|k| k.as_ref().trim().as_bytes().to_vec())
            .filter(|k| !k.is_empty())
            .map(|k| digest(&k))
            .collect();
        ApiKeys {
            keys: keys.into(),
            peer: None,
            failures: Arc::default(),
        }
    }

    /// Also accepts calls that carry `peer_key` in `x-wsm-peer-key` (forwarded by an instance).
    pub(crate) fn with_peer_key(mut self, peer_key: Option<&str>) -> Self {
        self.peer = peer_key
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| digest(k.as_bytes()));
        self
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Refused calls so far.
    pub fn failures(&self) -> &Arc<AuthFailures> {
        &self.failures
    }

    /// Checks a call's credentials: the peer key, if it carries one, else its API key.
    pub fn check(&self, api_key: Option<&[u8]>, peer_key: Option<&[u8]>) -> Result<(), Refused> {
        if !self.enabled() {
            return Ok(());
        }
        if let (Some(expected), Some(presented)) = (&self.peer, peer_key) {
            if constant_time_eq(expected, &digest(presented)) {
                return Ok(());
            }
        }
        let presented = digest(api_key.ok_or(Refused::Missing)?);
        // Every key is compared, so the time taken does not tell which one came close.
        let mut ok = false;
        for key in self.keys.iter() {
            ok |= constant_time_eq(key, &presented);
        }
        if ok {
            Ok(())
        } else {
            Err(Refused::Wrong)
        }
    }

    /// [`check`](Self::check), counting and logging a refusal.
    pub fn admit(
        &self,
        port: Port,
        api_key: Option<&[u8]>,
        peer_key: Option<&[u8]>,
        peer: Option<SocketAddr>,
    ) -> Result<(), Refused> {
        self.check(api_key, peer_key).inspect_err(|refused| {
            self.failures.record(port, *refused, peer);
        })
    }

    /// A tonic interceptor enforcing the keys on a gRPC service.
    pub fn interceptor(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        let keys = self.clone();
        move |request: Request<()>| {
            let metadata = request.metadata();
            let api_key = metadata.get(API_KEY_HEADER).map(|v| v.as_bytes());
            let peer_key = metadata.get(PEER_KEY_HEADER).map(|v| v.as_bytes());
            match keys.admit(Port::Grpc, api_key, peer_key, request.remote_addr()) {
                Ok(()) => Ok(request),
                Err(refused) => Err(Status::unauthenticated(refused.message())),
            }
        }
    }
}

/// Equality of two digests in time independent of where they differ.
fn constant_time_eq(a: &KeyDigest, b: &KeyDigest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_only_when_configured() {
        assert_eq!(ApiKeys::default().check(None, None), Ok(()));
        let keys = ApiKeys::new(["alpha", " ", "beta "]);
        assert!(keys.enabled());
        assert_eq!(keys.check(None, None), Err(Refused::Missing));
        assert_eq!(keys.check(Some(b"gamma"), None), Err(Refused::Wrong));
        assert_eq!(keys.check(Some(b"alph"), None), Err(Refused::Wrong));
        assert_eq!(keys.check(Some(b"alphaa"), None), Err(Refused::Wrong));
        assert_eq!(keys.check(Some(b"alpha"), None), Ok(()));
        assert_eq!(keys.check(Some(b"beta"), None), Ok(()));
        assert!(!format!("{keys:?}").contains("alpha"));
    }

    #[test]
    fn the_peer_key_admits_forwarded_calls_and_a_wrong_one_falls_back_to_the_api_key() {
        let keys = ApiKeys::new(["client"]).with_peer_key(Some("peer"));
        assert_eq!(keys.check(None, Some(b"peer")), Ok(()));
        assert_eq!(keys.check(None, Some(b"client")), Err(Refused::Missing));
        assert_eq!(keys.check(Some(b"client"), Some(b"nope")), Ok(()));
        assert_eq!(
            ApiKeys::new(["client"]).check(Some(b"peer"), Some(b"peer")),
            Err(Refused::Wrong),
            "no peer key configured: it admits nothing"
        );
    }

    #[test]
    fn refusals_are_counted_by_port_and_reason() {
        let keys = ApiKeys::new(["k"]);
        let peer: SocketAddr = "192.0.2.7:4000".parse().expect("addr");
        for _ in 0..3 {
            let _ = keys.admit(Port::Grpc, Some(b"x"), None, Some(peer));
        }
        let _ = keys.admit(Port::Http, None, None, None);
        assert_eq!(keys.admit(Port::Http, Some(b"k"), None, None), Ok(()));
        let counts = keys.failures().counts();
        assert!(counts.contains(&("grpc", "wrong", 3)), "{counts:?}");
        assert!(counts.contains(&("http", "missing", 1)), "{counts:?}");
        assert!(counts.contains(&("http", "wrong", 0)), "{counts:?}");
    }
}
