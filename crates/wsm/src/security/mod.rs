//! Guards on what callers may make this service do on their behalf. Today that is the network
//! policy: `Connect` dials URLs chosen by API callers, so without a check any caller could reach
//! loopback services, the private network or a cloud metadata endpoint through us (SSRF).

pub mod network;

pub use network::{
    classify, parse_allowed_hosts, AddressClass, AllowEntry, NetworkPolicy, Refusal, ResolveError,
};
