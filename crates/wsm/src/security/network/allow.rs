//! `--allowed-hosts` entries: hostnames (exact or `*.suffix`), IP addresses and CIDRs, parsed with
//! errors that say what was meant.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

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
    pub(super) fn matches_name(&self, host: &str) -> bool {
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
    pub(super) fn is_exactly(&self, ip: IpAddr) -> bool {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{entries, ip};
    use super::*;

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
}
