//! The Prometheus text exposition `/metrics` serves, read from the counters the service, the
//! publishers and the API keep (no metrics library: a handful of atomics rendered on demand).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::auth::AuthFailures;
use super::status::code_name;
use crate::cluster::Cluster;
use crate::publish::PublishMetrics;
use crate::service::ServiceSnapshot;
use tonic::Code;

/// What the API layer counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    /// Calls by method and gRPC code name.
    requests: Mutex<HashMap<(&'static str, &'static str), u64>>,
    /// Connection-specific calls that reached an instance that does not own the connection.
    pub ownership_misses: AtomicU64,
    /// Calls forwarded to the owning instance.
    pub forwarded: AtomicU64,
    /// `Subscribe` streams open now.
    pub subscribers: AtomicU64,
    /// Calls that panicked (a defect) and were answered INTERNAL.
    pub panics: AtomicU64,
}

impl ApiMetrics {
    pub(crate) fn count(&self, method: &'static str, code: Code) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests.entry((method, code_name(code))).or_default() += 1;
    }

    /// `(method, code, calls)`, sorted.
    pub fn requests(&self) -> Vec<(&'static str, &'static str, u64)> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<_> = requests.iter().map(|(&(m, c), &n)| (m, c, n)).collect();
        rows.sort_unstable();
        rows
    }
}

/// Renders every metric, with HELP and TYPE lines.
pub fn render(
    service: &ServiceSnapshot,
    publish: &PublishMetrics,
    api: &ApiMetrics,
    auth: &AuthFailures,
    cluster: Option<&Cluster>,
) -> String {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    // (name, type, help, value) of every unlabelled metric, in exposition order.
    #[rustfmt::skip]
    let singles: [(&str, &str, &str, u64); 29] = [
        ("wsm_frames_received_total", "counter", "Data frames received from upstreams.", service.received_frames),
        ("wsm_bytes_received_total", "counter", "Payload bytes of the frames received from upstreams.", service.received_bytes),
        ("wsm_frames_published_total", "counter", "Frames published to pub/sub.", load(&publish.published)),
        ("wsm_bytes_published_total", "counter", "Payload bytes of the frames published.", load(&publish.published_bytes)),
        ("wsm_publish_errors_total", "counter", "Failed bus calls (each is retried).", load(&publish.publish_errors)),
        ("wsm_frames_dropped_total", "counter", "Frames the bus refused for good (never retried).", load(&publish.dropped)),
        ("wsm_publish_queue_frames", "gauge", "Frames waiting between sockets and the bus.", service.queued_frames as u64),
        ("wsm_pending_requests", "gauge", "Correlated Send requests waiting for their response.", service.pending_requests as u64),
        ("wsm_reconnects_total", "counter", "Reconnect attempts begun.", service.reconnects),
        ("wsm_degraded_total", "counter", "Degraded events: a connection's bus calls began failing, or its publish queue was full and its socket paused.", service.degraded),
        ("wsm_connection_errors_total", "counter", "Failed handshakes and connection errors.", service.errors),
        ("wsm_lifecycle_events_dropped_total", "counter", "Lifecycle events dropped because their publisher was behind or the bus did not take them.", service.lifecycle_dropped),
        ("wsm_forwarded_total", "counter", "Calls forwarded to the instance owning the connection.", load(&api.forwarded)),
        ("wsm_ownership_misses_total", "counter", "Connection-specific calls that reached an instance not owning the connection.", load(&api.ownership_misses)),
        ("wsm_subscribers", "gauge", "Open Subscribe streams.", load(&api.subscribers)),
        ("wsm_handler_panics_total", "counter", "Calls that hit a defect (a panic) and were answered INTERNAL.", load(&api.panics)),
        ("wsm_peers", "gauge", "Instances heartbeating now, as this one sees them (itself included).", cluster.map_or(1, |c| c.live_peers() as u64)),
        ("wsm_takeovers_total", "counter", "Connections this instance took over from stale, stopped or unreachable instances.", service.taken_over),
        ("wsm_ownership_lost_total", "counter", "Connections another instance took from this one.", service.ownership_lost),
        ("wsm_frames_fenced_total", "counter", "Frames not published because another instance took their connection over first.", load(&publish.fenced)),
        ("wsm_heartbeat_failures_total", "counter", "Heartbeats that could not be written.", cluster.map_or(0, |c| load(&c.metrics().heartbeat_failures))),
        ("wsm_venue_gaps_total", "counter", "Frames whose venue sequence (sequence.prev) skipped: the venue lost something before wsm.", service.venue_gaps),
        ("wsm_frames_refused_total", "counter", "Binary frames dropped because they did not decompress (corrupt, or over max_message_size).", service.frames_refused),
        ("wsm_venue_notices_total", "counter", "Planned-disconnect notices matched (each rotates its connection).", service.venue_notices),
        ("wsm_rotations_total", "counter", "Rotations started: a leg replaced on purpose (max_lifetime_ms, a venue notice, Rotate).", service.rotations),
        ("wsm_continuity_gaps_total", "counter", "Gaps announced: the only leg was lost, or a rotation closed its old leg without a proven overlap.", service.continuity_gaps),
        ("wsm_frames_duplicate_total", "counter", "Frames dropped by an arbiter as already published from the other leg.", service.frames_duplicate),
        ("wsm_arbiter_bytes", "gauge", "Memory held by the connections' arbiters (sequence keys and fingerprints), in bytes.", service.arbiter_bytes),
        ("wsm_keepalive_timeouts_total", "counter", "Connections dropped because a keepalive message got no pong in time.", service.keepalive_timeouts),
    ];
    let mut out = String::with_capacity(4096);
    let mut m = Writer(&mut out);
    m.family(
        "wsm_connections",
        "gauge",
        "Connections this instance owns, by status.",
    );
    for (status, n) in service.by_status {
        m.sample("wsm_connections", &[("status", status.as_str())], n as u64);
    }
    for (name, kind, help, value) in singles {
        m.family(name, kind, help);
        m.sample(name, &[], value);
    }
    m.family(
        "wsm_publish_duration_seconds",
        "summary",
        "Duration of bus calls (one call publishes a batch).",
    );
    let seconds = load(&publish.publish_micros) as f64 / 1e6;
    let _ = writeln!(m.0, "wsm_publish_duration_seconds_sum {seconds}");
    let calls = load(&publish.publish_calls);
    let _ = writeln!(m.0, "wsm_publish_duration_seconds_count {calls}");
    m.family(
        "wsm_requests_total",
        "counter",
        "API calls, by method and gRPC code.",
    );
    for (method, code, n) in api.requests() {
        m.sample(
            "wsm_requests_total",
            &[("method", method), ("code", code)],
            n,
        );
    }
    m.family(
        "wsm_auth_failures_total",
        "counter",
        "Calls refused for a missing or wrong API key, by port and reason.",
    );
    for (port, reason, n) in auth.counts() {
        m.sample(
            "wsm_auth_failures_total",
            &[("port", port), ("reason", reason)],
            n,
        );
    }
    out
}

struct Writer<'a>(&'a mut String);

impl Writer<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let _ = write!(self.0, "{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                // Label values here are fixed names (methods, codes, statuses): nothing to escape.
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}
