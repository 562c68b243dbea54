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

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Cloud metadata endpoints: AWS/GCP/Azure/OpenStack/Oracle IMDS, AWS ECS task metadata, AWS EKS
/// Pod Identity, Alibaba, Tencent.
const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(169, 254, 0, 23),
];
/// AWS IMDS and EKS Pod Identity over IPv6.
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0023),
];

/// What kind of address an IP is, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// Globally routable: always allowed.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7 (unique local), fec0::/10 (old site-local),
    /// 64:ff9b:1::/48 (local-use NAT64).
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10, carrier-grade NAT: private to the provider's network.
    CarrierGradeNat,
    /// 0.0.0.0, :: (a connect to them reaches this host on Linux).
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 224/4, ff00::/8.
    Multicast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18/15, 2001:2::/48.
    Benchmarking,
    /// Not routable on the Internet: 0/8, 192.0.0/24, 240/4, 100::/64, 2001:20::/28, the rest of
    /// ::/8, and IPv6 outside 2000::/3 that no other class covers.
    Reserved,
    /// A cloud provider's instance metadata endpoint; see the module docs.
    CloudMetadata,
}

impl AddressClass {
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::CarrierGradeNat => "carrier-grade NAT",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Multicast => "multicast",
            AddressClass::Documentation => "documentation",
            AddressClass::Benchmarking => "benchmarking",
            AddressClass::Reserved => "reserved",
            AddressClass::CloudMetadata => "cloud metadata",
        }
    }

    fn article(self) -> &'static str {
        match self {
            AddressClass::Unspecified => "an",
            _ => "a",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of `ip`.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::*;
    if METADATA_V4.contains(&ip) {
        return CloudMetadata;
    }
    if ip.is_broadcast() {
        return Broadcast;
    }
    match ip.octets() {
        [0, 0, 0, 0] => Unspecified,
        [0, ..] => Reserved,
        [127, ..] => Loopback,
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => Private,
        [169, 254, ..] => LinkLocal,
        [100, 64..=127, ..] => CarrierGradeNat,
        [192, 0, 0, _] => Reserved,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => Documentation,
        [198, 18..=19, ..] => Benchmarking,
        [224..=239, ..] => Multicast,
        [240..=255, ..] => Reserved,
        _ => Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::*;
    if METADATA_V6.contains(&ip) {
        return CloudMetadata;
    }
    if ip.is_unspecified() {
        return Unspecified;
    }
    if ip.is_loopback() {
        return Loopback;
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    match ip.segments() {
        [0x64, 0xff9b, 1, ..] => Private,
        [0x2001, 0x0db8, ..] => Documentation,
        [0x3fff, 0x0000..=0x0fff, ..] => Documentation,
        [0x2001, 0x0002, 0, ..] => Benchmarking,
        [0x2001, 0x0020..=0x002f, ..] => Reserved,
        [0x0100, 0, 0, 0, ..] => Reserved,
        [0xff00..=0xffff, ..] => Multicast,
        [0xfe80..=0xfebf, ..] => LinkLocal,
        [0xfec0..=0xfeff, ..] | [0xfc00..=0xfdff, ..] => Private,
        [0x2000..=0x3fff, ..] => Public,
        _ => Reserved,
    }
}

/// The IPv4 address an IPv6 address carries, for the forms that reach IPv4 hosts.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let [a, b] = s[6].to_be_bytes();
    let [c, d] = s[7].to_be_bytes();
    let low = Ipv4Addr::new(a, b, c, d);
    match s {
        // IPv4-mapped, IPv4-compatible (`::` and `::1` are handled before), SIIT IPv4-translated.
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0, 0, ..] | [0, 0, 0, 0, 0xffff, 0, ..] => {
            Some(low)
        }
        // NAT64 well-known prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(low),
        // 6to4: 2002:AABB:CCDD::/48.
        [0x2002, high, low16, ..] => {
            let [a, b] = high.to_be_bytes();
            let [c, d] = low16.to_be_bytes();
            Some(Ipv4Addr::new(a, b, c, d))
        }
        _ => None,
    }
}

/// One `--allowed-hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// An exact hostname, matched case-insensitively (stored lowercase, without a trailing dot).
    Host(String),
    /// `*.example.com`: any name below `example.com`, not `example.com` itself (stored as
    /// `example.com`).
    Suffix(String),
    /// An IP address: the URL's IP literal, or an address a name resolves to.
    Ip(IpAddr),
    /// A network, e.g. `10.0.0.0/8`, `::1/128`; applies to resolved addresses.
    Cidr { network: IpAddr, prefix: u8 },
}

impl AllowEntry {
    /// Whether this entry names `host` (normalized: lowercase, no brackets, no trailing dot).
    fn matches_name(&self, host: &str) -> bool {
        match self {
            AllowEntry::Host(name) => name == host,
            AllowEntry::Suffix(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            AllowEntry::Ip(_) | AllowEntry::Cidr { .. } => false,
        }
    }

    /// Whether this IP or CIDR entry contains `ip` (IPv4-mapped addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        match *self {
            AllowEntry::Ip(allowed) => allowed == ip || allowed == canonical,
            AllowEntry::Cidr { network, prefix } => {
                in_network(network, prefix, ip) || in_network(network, prefix, canonical)
            }
            AllowEntry::Host(_) | AllowEntry::Suffix(_) => false,
        }
    }

    /// Whether this entry is for `ip` alone (an IP, or a /32 or /128): what cloud metadata needs.
    fn is_exactly(&self, ip: IpAddr) -> bool {
        match *self {
            AllowEntry::Ip(_) => self.contains(ip),
            AllowEntry::Cidr { network, prefix } => {
                prefix == max_prefix(network) && self.contains(ip)
            }
            AllowEntry::Host(_) | AllowEntry::Suffix(_) => false,
        }
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Host(name) => f.write_str(name),
            AllowEntry::Suffix(suffix) => write!(f, "*.{suffix}"),
            AllowEntry::Ip(ip) => write!(f, "{ip}"),
            AllowEntry::Cidr { network, prefix } => write!(f, "{network}/{prefix}"),
        }
    }
}

impl FromStr for AllowEntry {
    type Err = String;

    /// A hostname, `*.suffix`, an IP (IPv6 with or without brackets) or a CIDR.
    fn from_str(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let bad = |why: String| format!("invalid allowed-hosts entry {entry:?}: {why}");
        if entry.is_empty() {
            return Err(bad("the entry is empty".into()));
        }
        if entry.contains("://") {
            return Err(bad("write the host alone, without a scheme".into()));
        }
        if let Some((address, prefix)) = entry.split_once('/') {
            let network: IpAddr = address.parse().map_err(|_| {
                bad("a CIDR needs an IP address before the '/', e.g. 10.0.0.0/8".into())
            })?;
            let max = max_prefix(network);
            let prefix = prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(format!("the prefix length must be 0 to {max}")))?;
            let masked = mask(network, prefix);
            if masked != network {
                return Err(bad(format!(
                    "host bits are set after the prefix; did you mean {masked}/{prefix}?"
                )));
            }
            return Ok(AllowEntry::Cidr { network, prefix });
        }
        let unbracketed = entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))
            .unwrap_or(entry);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(AllowEntry::Ip(ip));
        }
        if let Some(suffix) = entry.strip_prefix("*.") {
            return hostname(suffix).map(AllowEntry::Suffix).map_err(bad);
        }
        hostname(entry).map(AllowEntry::Host).map_err(bad)
    }
}

/// Parses a comma-separated allowed-hosts list (`--allowed-hosts`, `WSM_ALLOWED_HOSTS`). Blank
/// items are skipped, so an empty variable means no entries; any invalid entry is an error that
/// names it.
pub fn parse_allowed_hosts(list: &str) -> Result<Vec<AllowEntry>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(AllowEntry::from_str)
        .collect()
}

/// A valid DNS hostname, normalized (lowercase, no trailing dot), or why it is not one.
fn hostname(name: &str) -> Result<String, String> {
    if name.contains("://") {
        return Err("write the host alone, without a scheme".into());
    }
    if name.contains(':') {
        return Err("write the host alone, without a port".into());
    }
    if name.contains('*') {
        return Err("a wildcard is only allowed as a leading '*.', e.g. *.example.com".into());
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() {
        return Err("the hostname is empty".into());
    }
    if name.len() > 253 {
        return Err("a hostname has at most 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("the hostname has an empty label (two dots in a row?)".into());
        }
        if label.len() > 63 {
            return Err(format!("the label {label:?} is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a hostname has only letters, digits, '-', '_' and dots".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label {label:?} starts or ends with '-'"));
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(
            "neither an IP address nor a hostname (a hostname cannot end in a number)".into(),
        );
    }
    Ok(name)
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `ip` with every bit after `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & bits))
        }
    }
}

fn in_network(network: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    network.is_ipv4() == ip.is_ipv4() && mask(ip, prefix) == network
}

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
    pub fn with_target(self, target: impl Into<String>) -> Refusal {
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
pub enum ResolveError {
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
    pub fn allows_private(&self) -> bool {
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
    pub async fn resolve(
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

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn class(s: &str) -> AddressClass {
        classify(ip(s))
    }

    fn entries(list: &str) -> Vec<AllowEntry> {
        parse_allowed_hosts(list).expect("valid test list")
    }

    #[test]
    fn ipv4_classes() {
        for (addr, expected) in [
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("172.15.255.255", Public),
            ("172.32.0.0", Public),
            ("100.63.255.255", Public),
            ("100.128.0.0", Public),
            ("198.20.0.1", Public),
            ("223.255.255.255", Public),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.0.1", LinkLocal),
            ("169.254.169.253", LinkLocal),
            ("100.64.0.1", CarrierGradeNat),
            ("100.127.255.255", CarrierGradeNat),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Reserved),
            ("255.255.255.255", Broadcast),
            ("224.0.0.1", Multicast),
            ("239.255.255.255", Multicast),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("192.0.0.8", Reserved),
            ("240.0.0.1", Reserved),
            ("169.254.169.254", CloudMetadata),
            ("169.254.170.2", CloudMetadata),
            ("100.100.100.200", CloudMetadata),
        ] {
            assert_eq!(class(addr), expected, "{addr}");
        }
    }

    #[test]
    fn ipv6_classes() {
        for (addr, expected) in [
            ("2606:4700:4700::1111", Public),
            ("2001:4860:4860::8888", Public),
            ("::1", Loopback),
            ("::", Unspecified),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fec0::1", Private),
            ("64:ff9b:1::a00:1", Private),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("ff02::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001:2::1", Benchmarking),
            ("100::1", Reserved),
            ("2001:20::1", Reserved),
            ("::1:0:0:1", Reserved),
            ("4000::1", Reserved),
            ("fd00:ec2::254", CloudMetadata),
        ] {
            assert_eq!(class(addr), expected, "{addr}");
        }
    }

    #[test]
    fn ipv4_embedded_in_ipv6_is_classified_by_the_ipv4_address() {
        for (addr, expected) in [
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:169.254.169.254", CloudMetadata),
            ("::ffff:8.8.8.8", Public),
            ("::127.0.0.1", Loopback),
            ("::192.168.0.1", Private),
            ("::ffff:0:127.0.0.1", Loopback),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::a9fe:a9fe", CloudMetadata),
            ("64:ff9b::808:808", Public),
            ("2002:7f00:1::1", Loopback),
            ("2002:c0a8:101::1", Private),
            ("2002:808:808::1", Public),
        ] {
            assert_eq!(class(addr), expected, "{addr}");
        }
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

    #[test]
    fn allowed_hosts_entries_parse() {
        assert_eq!(
            entries(" example.com ,*.Feeds.Example.,127.0.0.1,[::1],fd00::/8, 10.0.0.0/8,,"),
            vec![
                AllowEntry::Host("example.com".into()),
                AllowEntry::Suffix("feeds.example".into()),
                AllowEntry::Ip(ip("127.0.0.1")),
                AllowEntry::Ip(ip("::1")),
                AllowEntry::Cidr {
                    network: ip("fd00::"),
                    prefix: 8
                },
                AllowEntry::Cidr {
                    network: ip("10.0.0.0"),
                    prefix: 8
                },
            ]
        );
        assert_eq!(entries(""), vec![]);
        assert_eq!(entries(" , "), vec![]);
        assert_eq!(
            entries("::1/128,0.0.0.0/0")
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["::1/128", "0.0.0.0/0"]
        );
        assert_eq!(entries("localhost,my_host.lan").len(), 2);
    }

    #[test]
    fn bad_allowed_hosts_entries_are_named_errors() {
        for (list, why) in [
            ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
            ("10.0.0.0/33", "the prefix length must be 0 to 32"),
            ("::1/129", "the prefix length must be 0 to 128"),
            ("10.0.0.0/x", "the prefix length must be 0 to 32"),
            ("example.com/8", "a CIDR needs an IP address"),
            ("ws://example.com", "without a scheme"),
            ("example.com:443", "without a port"),
            ("*", "a wildcard is only allowed as a leading '*.'"),
            (
                "*example.com",
                "a wildcard is only allowed as a leading '*.'",
            ),
            (
                "a.*.example.com",
                "a wildcard is only allowed as a leading '*.'",
            ),
            ("*.", "the hostname is empty"),
            ("a..b", "empty label"),
            ("-a.example", "starts or ends with '-'"),
            ("exa mple.com", "only letters, digits"),
            ("10.0.0.256", "cannot end in a number"),
            ("ok.example,bad host", "only letters, digits"),
        ] {
            let err = parse_allowed_hosts(list).expect_err(list);
            assert!(err.starts_with("invalid allowed-hosts entry"), "{err}");
            assert!(err.contains(why), "{list}: {err}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(parse_allowed_hosts(&long)
            .expect_err("long label")
            .contains("longer than 63"));
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
