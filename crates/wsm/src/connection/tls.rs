//! TLS for `wss://` upstreams: one client configuration, built when the server starts, with an
//! explicitly chosen crypto provider, so no dial can fail (or panic) for want of a process-wide
//! default. Trust is Mozilla's root list compiled in (`webpki-roots`), plus the operator's own
//! PEM bundle (`--ca-file`); an optional client certificate serves venues that require mTLS.
//!
//! Failed handshakes are described in the operator's terms: which check failed (issuer, name,
//! validity, version) and what to change, never rustls' enum names alone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!(
    "wsm needs a TLS crypto provider: enable the `ring` (default) or `aws-lc-rs` feature"
);

/// The crypto provider this build uses for every TLS connection.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "ring")]
    let provider = rustls::crypto::ring::default_provider();
    #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Arc::new(provider)
}

/// The provider's name, for the start-up log.
pub(crate) fn crypto_provider_name() -> &'static str {
    if cfg!(feature = "ring") {
        "ring"
    } else {
        "aws-lc-rs"
    }
}

/// Installs this build's provider as the process default, so code outside wsm's own dialer that
/// asks rustls for the default finds one. Idempotent.
pub(crate) fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Another thread may install one between the check and here; either is fine.
        let _ = CryptoProvider::install_default((*crypto_provider()).clone());
    }
}

/// The lowest TLS version offered to upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TlsMinVersion {
    /// TLS 1.2 and 1.3 (the default: several venues still serve 1.2).
    #[default]
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    Tls13,
}

impl TlsMinVersion {
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsMinVersion::Tls12 => &BOTH,
            TlsMinVersion::Tls13 => &TLS13,
        }
    }

    fn offered(self) -> &'static str {
        match self {
            TlsMinVersion::Tls12 => "TLS 1.2 and 1.3",
            TlsMinVersion::Tls13 => "TLS 1.3 only (--tls-min-version 1.3)",
        }
    }
}

/// What the operator configured (`wsm serve` flags).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Extra trusted CAs (PEM bundle), added to the compiled-in roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM) and its key, for venues that require mTLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub min_version: TlsMinVersion,
}

/// Why the TLS configuration could not be built; the server refuses to start with it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(String);

/// The TLS client every `wss://` dial uses. Cheap to clone.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    min_version: TlsMinVersion,
    /// Whether the operator added CAs, for the advice in errors.
    extra_cas: usize,
    /// Whether a client certificate is presented.
    client_cert: bool,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("min_version", &self.min_version)
            .field("extra_cas", &self.extra_cas)
            .finish()
    }
}

impl Default for TlsClient {
    /// Compiled-in roots, TLS 1.2+, no client certificate: what a server without TLS flags uses.
    fn default() -> Self {
        static DEFAULT: OnceLock<TlsClient> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                // Building from the compiled-in roots only involves no input that can be wrong.
                TlsClient::new(&TlsSettings::default()).unwrap_or_else(|e| {
                    unreachable!("the default TLS configuration cannot fail: {e}")
                })
            })
            .clone()
    }
}

impl TlsClient {
    /// Builds the configuration: reads and checks every file now, so a typo in a path stops the
    /// server at start instead of failing every `wss://` connect later.
    pub fn new(settings: &TlsSettings) -> Result<TlsClient, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut extra_cas = 0;
        if let Some(path) = &settings.ca_file {
            let certs = read_certs(path, "--ca-file / WSM_CA_FILE")?;
            let (added, ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsSetupError(format!(
                    "--ca-file / WSM_CA_FILE {}: none of its {ignored} certificates is a usable CA",
                    path.display()
                )));
            }
            extra_cas = added;
        }
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(settings.min_version.versions())
            .map_err(|e| TlsSetupError(format!("TLS versions: {e}")))?
            .with_root_certificates(roots);
        let client_cert = settings.client_cert.is_some();
        let config = match (&settings.client_cert, &settings.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "--tls-client-cert / WSM_TLS_CLIENT_CERT")?;
                let key = read_key(key)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsSetupError(format!(
                        "the client certificate {} and key do not go together: {e}",
                        cert.display()
                    ))
                })?
            }
            _ => {
                return Err(TlsSetupError(
                    "--tls-client-cert and --tls-client-key (WSM_TLS_CLIENT_CERT, \
                     WSM_TLS_CLIENT_KEY) are given together or not at all"
                        .into(),
                ))
            }
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            min_version: settings.min_version,
            extra_cas,
            client_cert,
        })
    }

    /// The TLS handshake over `tcp` with `host` (a DNS name, or an IP literal without brackets),
    /// which is also the name the certificate must carry. The error says why, for the operator.
    pub async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            format!("{host:?} cannot be checked against a certificate (not a DNS name or IP)")
        })?;
        self.connector.connect(name, tcp).await.map_err(|e| {
            self.explain(host, &e).unwrap_or_else(|| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "the upstream closed the connection during the TLS handshake; is it a plain \
                     ws:// port?"
                        .to_owned()
                } else {
                    e.to_string()
                }
            })
        })
    }

    /// An operator's account of a TLS failure carried in `e`, if it is one. With TLS 1.3 a
    /// refused client certificate only arrives after the handshake, with the first read.
    pub(crate) fn explain(&self, host: &str, e: &std::io::Error) -> Option<String> {
        let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(self.describe(host, tls))
    }

    /// An operator's account of a TLS error: which check failed, and what to change.
    fn describe(&self, host: &str, tls: &rustls::Error) -> String {
        let trust = if self.extra_cas > 0 {
            "the compiled-in roots or --ca-file"
        } else {
            "the compiled-in roots; a private CA is added with --ca-file / WSM_CA_FILE"
        };
        match tls {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => format!(
                    "bad certificate: it is not signed by a trusted CA (unknown issuer; trusted: {trust})"
                ),
                CertificateError::NotValidForName => {
                    format!("wrong name: the certificate is not valid for {host}")
                }
                CertificateError::NotValidForNameContext { presented, .. } => format!(
                    "wrong name: the certificate is not valid for {host}; it names {}",
                    crate::text::excerpt(&presented.join(", "), 200)
                ),
                CertificateError::Expired => "expired certificate".to_owned(),
                CertificateError::ExpiredContext { time, not_after } => format!(
                    "expired certificate: valid until {}, now is {}",
                    unix(not_after.as_secs()),
                    unix(time.as_secs())
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "the certificate is not valid yet (check this host's clock)".to_owned()
                }
                CertificateError::Revoked => "the certificate is revoked".to_owned(),
                CertificateError::BadSignature => {
                    "bad certificate: its signature does not verify".to_owned()
                }
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                    "bad certificate: it is not issued for TLS servers".to_owned()
                }
                other => format!("bad certificate: {other:?}"),
            },
            rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)
            | rustls::Error::PeerIncompatible(_) => format!(
                "TLS version or cipher mismatch: wsm offers {}, the upstream accepts none of it ({tls})",
                self.min_version.offered()
            ),
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                "the upstream requires a client certificate (mTLS): set --tls-client-cert and \
                 --tls-client-key"
                    .to_owned()
            }
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate | AlertDescription::UnknownCA,
            ) if self.client_cert => format!(
                "the upstream refused wsm's client certificate ({tls}); check that its CA \
                 trusts --tls-client-cert"
            ),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
                "the upstream did not answer in TLS ({tls}); is it a plain ws:// port?"
            ),
            other => format!("{other}"),
        }
    }
}

/// A time as RFC 3339, for certificate validity.
fn unix(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = std::fs::read(path)
        .map_err(|e| TlsSetupError(format!("{flag} {}: cannot read it: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsSetupError(format!(
                "{flag} {}: not a PEM certificate file: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError(format!(
            "{flag} {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let flag = "--tls-client-key / WSM_TLS_CLIENT_KEY";
    let bytes = std::fs::read(path)
        .map_err(|e| TlsSetupError(format!("{flag} {}: cannot read it: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        TlsSetupError(format!(
            "{flag} {}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        ))
    })
}
