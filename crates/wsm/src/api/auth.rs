//! Optional API keys: when any are configured, every call on either port must carry one in the
//! `x-api-key` header (gRPC metadata of the same name). Health checks stay open, so orchestrators can
//! probe without a secret. Keys are compared in constant time and never logged.

use std::sync::Arc;

use tonic::{Request, Status};

/// The header (and gRPC metadata key) a caller puts its key in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The accepted keys; empty = no authentication.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<[Vec<u8>]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.keys.len())
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
}

impl ApiKeys {
    /// Keys from a list; blank entries are ignored.
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .map(|k| k.as_ref().trim().as_bytes().to_vec())
            .filter(|k| !k.is_empty())
            .collect();
        ApiKeys { keys: keys.into() }
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks a presented key (the header's value, if any).
    pub fn check(&self, presented: Option<&[u8]>) -> Result<(), Refused> {
        if !self.enabled() {
            return Ok(());
        }
        let presented = presented.ok_or(Refused::Missing)?;
        // Every key is compared, so the time taken does not tell which one came close.
        let mut ok = false;
        for key in self.keys.iter() {
            ok |= constant_time_eq(key, presented);
        }
        if ok {
            Ok(())
        } else {
            Err(Refused::Wrong)
        }
    }

    /// A tonic interceptor enforcing the keys on a gRPC service.
    pub fn interceptor(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        let keys = self.clone();
        move |request: Request<()>| {
            let presented = request.metadata().get(API_KEY_HEADER).map(|v| v.as_bytes());
            match keys.check(presented) {
                Ok(()) => Ok(request),
                Err(refused) => Err(Status::unauthenticated(refused.message())),
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_only_when_configured() {
        assert_eq!(ApiKeys::default().check(None), Ok(()));
        let keys = ApiKeys::new(["alpha", " ", "beta "]);
        assert!(keys.enabled());
        assert_eq!(keys.check(None), Err(Refused::Missing));
        assert_eq!(keys.check(Some(b"gamma")), Err(Refused::Wrong));
        assert_eq!(keys.check(Some(b"alph")), Err(Refused::Wrong));
        assert_eq!(keys.check(Some(b"alpha")), Ok(()));
        assert_eq!(keys.check(Some(b"beta")), Ok(()));
        assert!(!format!("{keys:?}").contains("alpha"));
    }
}
