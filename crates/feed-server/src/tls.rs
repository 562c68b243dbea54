//! `wss://`: the server's TLS configuration, from PEM, with the crypto provider chosen explicitly
//! (ring), a choice of protocol versions, and optional client certificates (mTLS). Tests use it
//! to show what a TLS client does against a good certificate, a wrong one, an old protocol, or a
//! venue that wants a client certificate.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Which TLS versions the server speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersions {
    /// TLS 1.2 and 1.3.
    #[default]
    All,
    Tls12Only,
    Tls13Only,
}

impl std::str::FromStr for TlsVersions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(TlsVersions::All),
            "1.2" => Ok(TlsVersions::Tls12Only),
            "1.3" => Ok(TlsVersions::Tls13Only),
            other => Err(format!("TLS versions are all, 1.2 or 1.3, not {other:?}")),
        }
    }
}

/// A server configuration from a PEM certificate chain and key; with `client_ca_pem`, clients
/// must present a certificate signed by that CA.
pub fn server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    versions: TlsVersions,
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, String> {
    let chain = certificates(cert_chain_pem, "the certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key PEM holds no private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match versions {
        TlsVersions::All => rustls::DEFAULT_VERSIONS,
        TlsVersions::Tls12Only => &[&rustls::version::TLS12],
        TlsVersions::Tls13Only => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(pem, "the client CA")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("the client CA is not a usable CA: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    Ok(Arc::new(config))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use wsm_testkit::tls::TestCa;

    use super::*;

    #[test]
    fn a_certificate_and_its_key_make_a_config_for_every_version_choice() {
        let ca = TestCa::new("feed test CA");
        let leaf = ca.issue(&["localhost"]);
        for versions in [
            TlsVersions::All,
            TlsVersions::Tls12Only,
            TlsVersions::Tls13Only,
        ] {
            let (cert, key) = (leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes());
            server_config(cert, key, versions, None).expect("a server config");
            server_config(cert, key, versions, Some(ca.ca_pem().as_bytes())).expect("with mTLS");
        }
    }

    #[test]
    fn what_is_wrong_with_the_pem_is_named() {
        let ca = TestCa::new("feed test CA");
        let leaf = ca.issue(&["localhost"]);
        let (cert, key) = (leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes());
        let error = |result: Result<Arc<ServerConfig>, String>| result.expect_err("refused");

        let no_cert = error(server_config(b"nothing", key, TlsVersions::All, None));
        assert!(
            no_cert.contains("certificate chain holds no PEM certificate"),
            "{no_cert}"
        );
        let no_key = error(server_config(cert, cert, TlsVersions::All, None));
        assert!(no_key.contains("holds no private key"), "{no_key}");
        let other_key = ca.issue(&["localhost"]).key_pem;
        let mismatch = error(server_config(
            cert,
            other_key.as_bytes(),
            TlsVersions::All,
            None,
        ));
        assert!(mismatch.contains("do not go together"), "{mismatch}");
        let no_ca = error(server_config(cert, key, TlsVersions::All, Some(b"nothing")));
        assert!(
            no_ca.contains("client CA holds no PEM certificate"),
            "{no_ca}"
        );
    }

    #[test]
    fn versions_parse_from_their_cli_names() {
        assert_eq!("all".parse::<TlsVersions>(), Ok(TlsVersions::All));
        assert_eq!("1.2".parse::<TlsVersions>(), Ok(TlsVersions::Tls12Only));
        assert_eq!("1.3".parse::<TlsVersions>(), Ok(TlsVersions::Tls13Only));
        assert!("1.1".parse::<TlsVersions>().is_err());
    }
}
