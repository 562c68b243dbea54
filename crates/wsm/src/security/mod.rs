//! Guards on what callers may make this service do on their behalf, and on what it shows them:
//! the network policy (`Connect` dials URLs chosen by API callers, so without a check any caller
//! could reach loopback services, the private network or a cloud metadata endpoint through us),
//! and the redaction of secrets in URLs wherever they are shown.

pub mod network;
pub mod redact;

pub(crate) use network::ResolveError;
pub use network::{parse_allowed_hosts, AddressClass, AllowEntry, NetworkPolicy, Refusal};
pub use redact::UrlRedactor;
