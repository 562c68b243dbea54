//! TLS connections against plain ones, each through a fresh server.

use std::time::Duration;

use feed_server::FeedConfig;
use wsm::proto::ListRequest;

use crate::support::{spawn_wsm, Feed};

use super::common::{connect_all, Settings};

/// One side of figure 3: `n` connections opened through a fresh `wsm serve`.
pub(crate) struct Opened {
    pub(crate) established: Duration,
    /// RSS growth from before the first Connect to after the last.
    pub(crate) grown: u64,
    pub(crate) connected: usize,
}

/// Opens `n` silent connections to `url` through a fresh server started with `extra`.
async fn open_through_fresh_server(
    settings: &Settings,
    extra: &[&str],
    url: &str,
    n: usize,
    problems: &mut Vec<String>,
) -> Option<Opened> {
    let wsm = spawn_wsm(&settings.wsm_bin, extra);
    let client = wsm.unbounded_client().await;
    if let Err(e) = client.clone().list(ListRequest::default()).await {
        problems.push(format!("List before: {e}"));
        return None;
    }
    let (rss_before, _) = wsm.memory();
    let (established, _, failed) =
        connect_all(&client, url, n, settings.inflight, problems).await?;
    let (rss_after, _) = wsm.memory();
    if failed > 0 {
        problems.push(format!(
            "{failed} of {n} Connect calls to {url} failed; wsm's log ends:\n{}",
            wsm.logs()
        ));
    }
    let listed = client
        .clone()
        .list(ListRequest::default())
        .await
        .map(|l| l.into_inner().connections)
        .unwrap_or_default();
    let connected = listed.iter().filter(|c| c.status == "connected").count();
    if connected != n {
        problems.push(format!(
            "{connected} of {n} connections to {url} are connected"
        ));
    }
    Some(Opened {
        established,
        grown: rss_after.saturating_sub(rss_before),
        connected,
    })
}

/// Figure 3: the same number of connections over `wss://` (a TLS feed, its certificate from a
/// CA made now and trusted with `--ca-file`) and over `ws://`, each through a fresh server.
pub(crate) async fn tls_figure(
    settings: &Settings,
    problems: &mut Vec<String>,
) -> Option<(Opened, Opened)> {
    let ca = wsm_testkit::tls::TestCa::new("bench CA");
    // The IP as well: the URLs name 127.0.0.1, so no dial pays for a name lookup.
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().expect("a directory for the CA file");
    let ca_file = ca.write_ca_file(dir.path());
    let ca_file = ca_file.to_str().expect("a UTF-8 path");
    let tls = feed_server::tls::server_config(
        leaf.cert_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        feed_server::tls::TlsVersions::All,
        None,
    )
    .expect("the feed's TLS configuration");
    let plain = Feed::start(FeedConfig {
        rate: 1,
        auto_stream: false,
        record_limit: 16,
        ..FeedConfig::default()
    });
    let secure = Feed::start(FeedConfig {
        rate: 1,
        auto_stream: false,
        record_limit: 16,
        tls: Some(tls),
        ..FeedConfig::default()
    });
    let n = settings.tls_conns;
    let extra = ["--ca-file", ca_file];
    let ws_url = plain.handle.url("/ws?streams=0");
    let wss_url = secure.handle.url("/ws?streams=0");
    let ws = open_through_fresh_server(settings, &extra, &ws_url, n, problems).await;
    let wss = open_through_fresh_server(settings, &extra, &wss_url, n, problems).await;
    plain.stop();
    secure.stop();
    Some((ws?, wss?))
}
