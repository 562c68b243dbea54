//! A TLS WebSocket client with its own rustls configuration (ring provider, only the test CA as
//! root), so nothing depends on a process-wide default provider.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use wsm_testkit::tls::Leaf;

use super::LONG;

pub type TlsClient = WebSocketStream<TlsStream<TcpStream>>;

pub const ALL_VERSIONS: &[&SupportedProtocolVersion] = rustls::ALL_VERSIONS;
pub const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
pub const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A client trusting only `ca_pem`, speaking `versions`, presenting `identity` when given.
pub fn client_config(
    ca_pem: &str,
    versions: &[&'static SupportedProtocolVersion],
    identity: Option<&Leaf>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("a usable root");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate PEM");
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate and key")
        }
    };
    Arc::new(config)
}

/// TLS to `addr` as `localhost`, then the WebSocket handshake for `path`. The error names the
/// stage that failed (`tls: ...` or `websocket: ...`).
pub async fn connect_tls(
    addr: SocketAddr,
    path: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsClient, String> {
    let dial = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("tcp: {e}"))?;
        let name = ServerName::try_from("localhost").expect("a server name");
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let url = format!("wss://localhost:{}{path}", addr.port());
        let (ws, _) = tokio_tungstenite::client_async(url, tls)
            .await
            .map_err(|e| format!("websocket: {e}"))?;
        Ok(ws)
    };
    timeout(LONG, dial).await.expect("TLS connect timed out")
}
