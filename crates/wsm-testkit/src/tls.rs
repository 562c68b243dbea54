//! A certificate authority made at test time, for `wss://` tests: server certificates valid now,
//! for the wrong name, or expired; client certificates for mTLS. Nothing is checked in: every run
//! makes its own keys.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// A test CA.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate (PEM) and its private key (PEM, PKCS#8).
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// Writes `<stem>.crt` and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("the certificate is written");
        std::fs::write(&key, &self.key_pem).expect("the key is written");
        (cert, key)
    }
}

impl TestCa {
    /// A self-signed CA named `name`, valid from yesterday for a year.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name = named(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let (not_before, not_after) = valid_now();
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("the CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM: what a client adds to its trust.
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// Writes the CA certificate to `dir/<file>` (e.g. for `--ca-file`).
    pub fn write_ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.crt");
        std::fs::write(&path, &self.pem).expect("the CA file is written");
        path
    }

    /// A server certificate for `names` (DNS names, or IPs), valid now.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let (not_before, not_after) = valid_now();
        self.leaf(
            names,
            not_before,
            not_after,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A server certificate for `names` whose validity ended yesterday.
    pub fn issue_expired(&self, names: &[&str]) -> Leaf {
        let now = OffsetDateTime::now_utc();
        let not_before = now - Duration::days(30);
        let not_after = now - Duration::days(1);
        self.leaf(
            names,
            not_before,
            not_after,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate (mTLS) naming `name`, valid now.
    pub fn issue_client(&self, name: &str) -> Leaf {
        let (not_before, not_after) = valid_now();
        self.leaf(
            &[name],
            not_before,
            not_after,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn leaf(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        usage: ExtendedKeyUsagePurpose,
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf parameters");
        params.distinguished_name = named(names.first().map_or("leaf", String::as_str));
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("the leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// From yesterday (clock skew between test processes does not matter) for a year.
fn valid_now() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - Duration::days(1), now + Duration::days(365))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_pem_and_the_expired_one_lies_in_the_past() {
        let ca = TestCa::new("wsm test CA");
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let leaf = ca.issue(&["localhost", "127.0.0.1"]);
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = leaf.write(dir.path(), "server");
        assert!(cert.exists() && key.exists());
        assert!(ca.write_ca_file(dir.path()).exists());
        let client = ca.issue_client("wsm-client");
        assert!(client.cert_pem.contains("BEGIN CERTIFICATE"));
        let expired = ca.issue_expired(&["localhost"]);
        assert_ne!(expired.cert_pem, leaf.cert_pem);
    }
}
