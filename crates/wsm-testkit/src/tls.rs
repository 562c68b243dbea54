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

/// A certificate (PEM, the leaf alone: clients trust the CA itself) and its private key (PEM,
/// PKCS#8).
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

    /// Writes the CA certificate to `dir/ca.crt` (e.g. for `--ca-file`) and returns the path.
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
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, Error, RootCertStore};

    use super::*;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("one PEM certificate")
    }

    fn roots(ca: &TestCa) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots
            .add(der(ca.ca_pem()))
            .expect("the CA is a usable root");
        Arc::new(roots)
    }

    /// What a TLS client that trusts `ca` says about `leaf` presented for `name`.
    fn verify_server(ca: &TestCa, leaf: &Leaf, name: &str) -> Result<(), Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca), provider)
            .build()
            .expect("verifier");
        let name = ServerName::try_from(name.to_owned()).expect("a server name");
        verifier
            .verify_server_cert(&der(&leaf.cert_pem), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn server_certificate_is_trusted_for_its_dns_and_ip_names_only() {
        let ca = TestCa::new("wsm test CA");
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let leaf = ca.issue(&["localhost", "127.0.0.1"]);
        assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        verify_server(&ca, &leaf, "localhost").expect("the DNS name is in the SANs");
        verify_server(&ca, &leaf, "127.0.0.1").expect("the IP is an IP SAN");
        let wrong = verify_server(&ca, &leaf, "feed.example").expect_err("another name");
        assert!(
            matches!(
                wrong,
                Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{wrong:?}"
        );
    }

    #[test]
    fn a_certificate_from_another_ca_is_not_trusted() {
        let ca = TestCa::new("wsm test CA");
        let other = TestCa::new("another CA").issue(&["localhost"]);
        let error = verify_server(&ca, &other, "localhost").expect_err("unknown issuer");
        assert!(
            matches!(
                error,
                Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{error:?}"
        );
    }

    #[test]
    fn the_expired_certificate_is_rejected_as_expired() {
        let ca = TestCa::new("wsm test CA");
        let error = verify_server(&ca, &ca.issue_expired(&["localhost"]), "localhost")
            .expect_err("expired");
        assert!(
            matches!(
                error,
                Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{error:?}"
        );
    }

    #[test]
    fn client_certificate_is_accepted_by_a_server_requiring_the_ca() {
        let ca = TestCa::new("wsm test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&ca), provider)
            .build()
            .expect("verifier");
        let client = ca.issue_client("wsm-client");
        verifier
            .verify_client_cert(&der(&client.cert_pem), &[], UnixTime::now())
            .expect("a client certificate from the CA");
        // A server certificate lacks the clientAuth usage.
        let server = ca.issue(&["localhost"]);
        assert!(verifier
            .verify_client_cert(&der(&server.cert_pem), &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn files_hold_the_pem_text() {
        let ca = TestCa::new("wsm test CA");
        let leaf = ca.issue(&["localhost"]);
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = leaf.write(dir.path(), "server");
        assert_eq!(std::fs::read_to_string(cert).unwrap(), leaf.cert_pem);
        assert_eq!(std::fs::read_to_string(key).unwrap(), leaf.key_pem);
        let ca_file = ca.write_ca_file(dir.path());
        assert_eq!(std::fs::read_to_string(ca_file).unwrap(), ca.ca_pem());
    }
}
