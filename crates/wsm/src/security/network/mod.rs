//! The network policy (SSRF guard): which addresses `Connect` may dial.
//!
//! API callers choose the URLs this service dials, so without a check any caller could use it to
//! reach what only the service's own network can reach: loopback admin ports, the private network,
//! the cloud provider's metadata endpoint (and its credentials). The policy is applied **after DNS
//! resolution**, to every address a name resolves to, and the dialer then connects only to those
//! checked addresses: a name cannot pass the check with a public answer and then be dialed at a
//! private one (DNS rebinding).
//!
//! The rules:
//! - Public addresses are always allowed.
//! - Every other class ([`AddressClass`]) is refused unless one of these allows it:
//!   - `allow_private` (`--allow-private-networks` / `WSM_ALLOW_PRIVATE_NETWORKS=true`);
//!   - an allowed-hosts entry (`--allowed-hosts` / `WSM_ALLOWED_HOSTS`) that matches the URL's
//!     hostname (exact or `*.suffix`): the operator named that host, so whatever it resolves to is
//!     accepted;
//!   - an allowed-hosts IP or CIDR entry that contains the address.
//! - If any one of a name's addresses is refused, the whole connect is refused: the resolver's
//!   order is not ours to predict, so a mixed answer is treated as hostile.
//! - **Cloud metadata** (169.254.169.254, 169.254.170.2 and 169.254.170.23 (ECS, EKS Pod Identity),
//!   100.100.100.200 (Alibaba), 169.254.0.23 (Tencent), fd00:ec2::254 and fd00:ec2::23, also when
//!   embedded in IPv6) is refused even with `allow_private` and even when a hostname or a wider CIDR
//!   entry matches. Only an allowed-hosts entry for that very address (the IP, or a /32 or /128)
//!   lets it through. Allowing the private network is a common, broad setting; handing out the
//!   instance's cloud credentials should never be a side effect of it.
//!
//! IPv4 addresses embedded in IPv6 (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
//! SIIT `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are classified by the IPv4
//! address they carry: `::ffff:127.0.0.1` is loopback.
//!
//! The files: `address.rs` (address classes), `allow.rs` (allowed-hosts entries), this one (the
//! policy and its refusals).

mod address;
mod allow;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub use address::AddressClass;
pub use allow::{parse_allowed_hosts, AllowEntry};

pub(crate) use address::classify;

/// Why a target was refused; its message names the target, the address, its class and how an
/// operator can allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused: the URL when dialing, `host:port` otherwise.
    pub target: String,
    /// The host as the URL gave it.
    pub host: String,
    /// The refused address.
    pub addr: IpAddr,
    pub class: AddressClass,
}

impl Refusal {
    /// The same refusal, reported for `target` (e.g. the URL being dialed).
    pub(crate) fn with_target(self, target: impl Into<String>) -> Refusal {
        Refusal {
            target: target.into(),
            ..self
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused {}: ", self.target)?;
        let a = self.class.article();
        let class = self.class;
        if unbracket(&self.host).parse::<IpAddr>().ok() == Some(self.addr) {
            write!(f, "{} is {a} {class} address", self.addr)?;
        } else {
            write!(
                f,
                "{} resolves to {}, {a} {class} address",
                self.host, self.addr
            )?;
        }
        if class == AddressClass::CloudMetadata {
            write!(
                f,
                "; cloud metadata is refused even with --allow-private-networks, only an \
                 --allowed-hosts entry for {} itself allows it",
                self.addr
            )
        } else {
            f.write_str("; allow it with --allow-private-networks or --allowed-hosts")
        }
    }
}

impl std::error::Error for Refusal {}

/// Why [`NetworkPolicy::resolve`] gave no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResolveError {
    /// The policy refuses the target: the caller asked for something not allowed.
    #[error(transparent)]
    Refused(Refusal),
    /// DNS gave no answer. Not a refusal: the name may resolve again later.
    #[error("could not resolve {host}: {reason}")]
    Lookup { host: String, reason: String },
}

/// Which addresses may be dialed. The default is [`NetworkPolicy::strict`]: secure unless the
/// operator opens it up.
#[derive(Debug, Clone, Default)]
pub struct NetworkPolicy {
    allow_private: bool,
    allowed: Vec<AllowEntry>,
}

impl NetworkPolicy {
    /// Public addresses only (plus allowed-hosts entries added with
    /// [`with_allowed_hosts`](Self::with_allowed_hosts)).
    pub fn strict() -> NetworkPolicy {
        NetworkPolicy::default()
    }

    /// Every address except cloud metadata (`--allow-private-networks`); for tests, demos and
    /// deployments whose upstreams live on the private network.
    pub fn allow_private() -> NetworkPolicy {
        NetworkPolicy {
            allow_private: true,
            allowed: Vec::new(),
        }
    }

    /// Adds allowed-hosts entries (see [`parse_allowed_hosts`]).
    pub fn with_allowed_hosts(mut self, entries: impl IntoIterator<Item = AllowEntry>) -> Self {
        self.allowed.extend(entries);
        self
    }

    /// Whether non-public addresses (except cloud metadata) are allowed.
    #[cfg(test)]
    fn allows_private(&self) -> bool {
        self.allow_private
    }

    pub fn allowed_hosts(&self) -> &[AllowEntry] {
        &self.allowed
    }

    /// Checks the addresses `host` resolved to (or its IP literal): every one must be allowed.
    pub fn check(&self, host: &str, addrs: &[IpAddr]) -> Result<(), Refusal> {
        let name = normalize(host);
        let name_allowed = name.parse::<IpAddr>().is_err()
            && self.allowed.iter().any(|entry| entry.matches_name(&name));
        for &addr in addrs {
            let allowed = match classify(addr) {
                AddressClass::Public => true,
                AddressClass::CloudMetadata => self.allowed.iter().any(|e| e.is_exactly(addr)),
                _ => {
                    self.allow_private
                        || name_allowed
                        || self.allowed.iter().any(|e| e.contains(addr))
                }
            };
            if !allowed {
                return Err(Refusal {
                    target: host_port(host, None),
                    host: host.to_owned(),
                    addr,
                    class: classify(addr),
                });
            }
        }
        Ok(())
    }

    /// Resolves a URL's host (IPv6 in brackets or not) and checks every address. On success the
    /// caller must connect only to the returned addresses: resolving again could give others.
    pub(crate) async fn resolve(
        &self,
        url_host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let name = unbracket(url_host);
        let addrs: Vec<SocketAddr> = match name.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                let found = tokio::net::lookup_host((name, port)).await.map_err(|e| {
                    ResolveError::Lookup {
                        host: url_host.to_owned(),
                        reason: e.to_string(),
                    }
                })?;
                found.collect()
            }
        };
        if addrs.is_empty() {
            return Err(ResolveError::Lookup {
                host: url_host.to_owned(),
                reason: "the name has no addresses".into(),
            });
        }
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        self.check(url_host, &ips).map_err(|refusal| {
            ResolveError::Refused(refusal.with_target(host_port(url_host, Some(port))))
        })?;
        Ok(addrs)
    }
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A URL host as the allow list compares it: no brackets, lowercase, no trailing dot.
fn normalize(host: &str) -> String {
    let host = unbracket(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// `host:port`, with brackets around an IPv6 literal.
fn host_port(host: &str, port: Option<u16>) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    /// An address written in a test (shared by the tests of every file of this module).
    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// A valid allowed-hosts list written in a test.
    pub(super) fn entries(list: &str) -> Vec<AllowEntry> {
        parse_allowed_hosts(list).expect("valid test list")
    }

    #[test]
    fn strict_refuses_every_non_public_class_and_allows_public() {
        let strict = NetworkPolicy::strict();
        assert!(!strict.allows_private());
        for addr in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "fe80::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
        ] {
            let refusal = strict.check(addr, &[ip(addr)]).expect_err(addr);
            assert_eq!(refusal.addr, ip(addr));
        }
        strict
            .check(
                "example.com",
                &[ip("93.184.215.14"), ip("2606:2800:21f::1")],
            )
            .expect("public addresses pass");
    }

    #[test]
    fn one_private_answer_refuses_the_whole_name() {
        let refusal = NetworkPolicy::strict()
            .check("rebind.example", &[ip("93.184.215.14"), ip("10.0.0.5")])
            .expect_err("mixed answer");
        assert_eq!((refusal.addr, refusal.class), (ip("10.0.0.5"), Private));
        assert_eq!(
            refusal.to_string(),
            "refused rebind.example: rebind.example resolves to 10.0.0.5, a private address; \
             allow it with --allow-private-networks or --allowed-hosts"
        );
    }

    #[test]
    fn allow_private_allows_everything_but_cloud_metadata() {
        let open = NetworkPolicy::allow_private();
        for addr in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "100.64.0.1",
            "fe80::1",
            "169.254.1.1",
        ] {
            open.check(addr, &[ip(addr)]).expect(addr);
        }
        for addr in [
            "169.254.169.254",
            "169.254.170.2",
            "169.254.170.23",
            "100.100.100.200",
            "169.254.0.23",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "::ffff:169.254.169.254",
            "::ffff:169.254.170.23",
        ] {
            let refusal = open.check(addr, &[ip(addr)]).expect_err(addr);
            assert_eq!(refusal.class, CloudMetadata, "{addr}");
        }
        let refusal = open
            .check("metadata.google.internal", &[ip("169.254.169.254")])
            .expect_err("by name too");
        assert!(
            refusal
                .to_string()
                .contains("cloud metadata is refused even with --allow-private-networks"),
            "{refusal}"
        );
    }

    #[test]
    fn cloud_metadata_needs_an_entry_for_the_address_itself() {
        let wide = NetworkPolicy::allow_private().with_allowed_hosts(entries(
            "169.254.0.0/16,metadata.google.internal,*.internal",
        ));
        wide.check("metadata.google.internal", &[ip("169.254.169.254")])
            .expect_err("a hostname entry does not unlock metadata");
        wide.check("169.254.169.254", &[ip("169.254.169.254")])
            .expect_err("a wider CIDR does not unlock metadata");
        for list in ["169.254.169.254", "169.254.169.254/32"] {
            let exact = NetworkPolicy::strict().with_allowed_hosts(entries(list));
            exact
                .check("169.254.169.254", &[ip("169.254.169.254")])
                .expect(list);
            exact
                .check("metadata.google.internal", &[ip("169.254.169.254")])
                .expect(list);
            exact
                .check("::ffff:169.254.169.254", &[ip("::ffff:169.254.169.254")])
                .expect(list);
        }
        NetworkPolicy::strict()
            .with_allowed_hosts(entries("fd00:ec2::254/128"))
            .check("[fd00:ec2::254]", &[ip("fd00:ec2::254")])
            .expect("an IPv6 /128");
    }

    #[test]
    fn hostname_entries_let_any_address_of_that_name_through() {
        let policy =
            NetworkPolicy::strict().with_allowed_hosts(entries("LocalHost., *.corp.example"));
        policy
            .check("localhost", &[ip("127.0.0.1"), ip("::1")])
            .expect("exact name, case and trailing dot ignored");
        policy
            .check("LOCALHOST.", &[ip("127.0.0.1")])
            .expect("the URL's case and trailing dot are ignored too");
        policy
            .check("feed.eu.corp.example", &[ip("10.1.2.3")])
            .expect("below the suffix");
        policy
            .check("corp.example", &[ip("10.1.2.3")])
            .expect_err("the suffix itself is not below it");
        policy
            .check("evilcorp.example", &[ip("10.1.2.3")])
            .expect_err("a label boundary is required");
        policy
            .check("127.0.0.1", &[ip("127.0.0.1")])
            .expect_err("a name entry does not allow its addresses by IP");
    }

    #[test]
    fn ip_and_cidr_entries_apply_to_resolved_addresses() {
        let policy =
            NetworkPolicy::strict().with_allowed_hosts(entries("127.0.0.0/8, ::1, 10.1.0.0/16"));
        policy
            .check("localhost", &[ip("127.0.0.1"), ip("::1")])
            .expect("both addresses are covered");
        policy
            .check("127.9.9.9", &[ip("127.9.9.9")])
            .expect("inside the CIDR");
        policy
            .check("::ffff:127.0.0.1", &[ip("::ffff:127.0.0.1")])
            .expect("a mapped address matches an IPv4 CIDR");
        policy
            .check("db.internal", &[ip("10.1.255.255")])
            .expect("resolved address inside the CIDR");
        let refusal = policy
            .check("db.internal", &[ip("10.1.0.1"), ip("10.2.0.1")])
            .expect_err("one address outside");
        assert_eq!(refusal.addr, ip("10.2.0.1"));
    }

    #[test]
    fn refusal_messages_speak_to_the_operator() {
        let refusal = NetworkPolicy::strict()
            .check("127.0.0.1", &[ip("127.0.0.1")])
            .expect_err("loopback")
            .with_target("ws://127.0.0.1:9/x");
        assert_eq!(
            refusal.to_string(),
            "refused ws://127.0.0.1:9/x: 127.0.0.1 is a loopback address; allow it with \
             --allow-private-networks or --allowed-hosts"
        );
        let refusal = NetworkPolicy::strict()
            .check("[::]", &[ip("::")])
            .expect_err("unspecified");
        assert_eq!(
            refusal.to_string(),
            "refused [::]: :: is an unspecified address; allow it with --allow-private-networks \
             or --allowed-hosts"
        );
        let refusal = NetworkPolicy::allow_private()
            .check("169.254.169.254", &[ip("169.254.169.254")])
            .expect_err("metadata");
        assert_eq!(
            refusal.to_string(),
            "refused 169.254.169.254: 169.254.169.254 is a cloud metadata address; cloud metadata \
             is refused even with --allow-private-networks, only an --allowed-hosts entry for \
             169.254.169.254 itself allows it"
        );
    }

    #[tokio::test]
    async fn resolve_checks_literals_and_names() {
        let strict = NetworkPolicy::strict();
        assert_eq!(
            strict.resolve("8.8.8.8", 443).await,
            Ok(vec!["8.8.8.8:443".parse().expect("addr")])
        );
        match strict.resolve("[::1]", 80).await {
            Err(ResolveError::Refused(refusal)) => {
                assert_eq!(
                    (refusal.target.as_str(), refusal.class),
                    ("[::1]:80", Loopback)
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        match strict.resolve("localhost", 80).await {
            Err(ResolveError::Refused(refusal)) => {
                assert_eq!(refusal.class, Loopback);
                assert!(
                    refusal.to_string().contains("localhost resolves to"),
                    "{refusal}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let allowed = NetworkPolicy::strict()
            .with_allowed_hosts(entries("localhost"))
            .resolve("localhost", 80)
            .await
            .expect("allowed by name");
        assert!(allowed
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 80));
        match strict.resolve("no-such-host.invalid", 80).await {
            Err(ResolveError::Lookup { host, .. }) => assert_eq!(host, "no-such-host.invalid"),
            other => panic!("expected a lookup error, got {other:?}"),
        }
    }
}
