//! The Prometheus text exposition `/metrics` serves, read from the counters the service, the
//! publishers and the API keep (no metrics library: a handful of atomics rendered on demand).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::grpc::ApiMetrics;
use crate::publish::PublishMetrics;
use crate::service::ServiceSnapshot;

/// Renders every metric, with HELP and TYPE lines.
pub fn render(service: &ServiceSnapshot, publish: &PublishMetrics, api: &ApiMetrics) -> String {
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
    m.single(
        "wsm_frames_received_total",
        "counter",
        "Data frames received from upstreams.",
        service.received_frames,
    );
    m.single(
        "wsm_bytes_received_total",
        "counter",
        "Payload bytes of the frames received from upstreams.",
        service.received_bytes,
    );
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    m.single(
        "wsm_frames_published_total",
        "counter",
        "Frames published to pub/sub.",
        load(&publish.published),
    );
    m.single(
        "wsm_bytes_published_total",
        "counter",
        "Payload bytes of the frames published.",
        load(&publish.published_bytes),
    );
    m.single(
        "wsm_publish_errors_total",
        "counter",
        "Failed bus calls (each is retried).",
        load(&publish.publish_errors),
    );
    m.single(
        "wsm_frames_dropped_total",
        "counter",
        "Frames the bus refused for good (never retried).",
        load(&publish.dropped),
    );
    m.family(
        "wsm_publish_duration_seconds",
        "summary",
        "Duration of bus calls (one call publishes a batch).",
    );
    let micros = load(&publish.publish_micros);
    let _ = writeln!(
        m.0,
        "wsm_publish_duration_seconds_sum {}",
        micros as f64 / 1e6
    );
    let _ = writeln!(
        m.0,
        "wsm_publish_duration_seconds_count {}",
        load(&publish.publish_calls)
    );
    m.single(
        "wsm_publish_queue_frames",
        "gauge",
        "Frames waiting between sockets and the bus.",
        service.queued_frames as u64,
    );
    m.single(
        "wsm_reconnects_total",
        "counter",
        "Reconnect attempts begun.",
        service.reconnects,
    );
    m.single(
        "wsm_degraded_total",
        "counter",
        "Times a publish queue was full and its socket paused.",
        service.degraded,
    );
    m.single(
        "wsm_connection_errors_total",
        "counter",
        "Failed handshakes and connection errors.",
        service.errors,
    );
    m.single(
        "wsm_lifecycle_events_dropped_total",
        "counter",
        "Lifecycle events dropped because their publisher was behind.",
        service.lifecycle_dropped,
    );
    m.single(
        "wsm_forwarded_total",
        "counter",
        "Calls forwarded to the instance owning the connection.",
        load(&api.forwarded),
    );
    m.single(
        "wsm_ownership_misses_total",
        "counter",
        "Connection-specific calls that reached an instance not owning the connection.",
        load(&api.ownership_misses),
    );
    m.single(
        "wsm_subscribers",
        "gauge",
        "Open Subscribe streams.",
        load(&api.subscribers),
    );
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

    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}
