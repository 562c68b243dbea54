//! Slowloris handshakes: dribbled a byte at a time or never coming, each ending at the timeout.

use std::time::Duration;

use tokio::time::Instant;
use wsm::lifecycle::LIFECYCLE_TOPIC;
use wsm::WebSocketService;

use crate::support::server::{dead_port, HANG};

use super::common::{
    alone, back_to, backoff, bus_lifecycle_until, kinds, life, local_service, request, resources,
};
use super::hostile::Hostile;

/// One Connect that succeeds and is disconnected, and one that is refused, so whatever the first
/// of each creates lazily is there before the baseline is counted.
async fn warm_up(service: &WebSocketService) {
    let upstream = Hostile::start(|mut s| async move {
        if s.accept().await.is_ok() {
            s.hold().await;
        }
    })
    .await;
    let record = service
        .connect(request(&upstream.url("/warm-up"), true))
        .await
        .expect("the warm-up upstream answers");
    service.disconnect(&record.id).await.expect("Disconnect");
    let refused = format!("ws://127.0.0.1:{}/warm-up", dead_port());
    service
        .connect(request(&refused, false))
        .await
        .expect_err("nothing listens");
    upstream.wait_all_closed_by_client().await;
    upstream.stop().await;
}

/// An upstream that accepts TCP and then sends its handshake response a byte at a time, never
/// finishing. Slowly (a byte every 250 ms): Connect fails at the connect timeout, naming the URL
/// (its token redacted) and the timeout. Quickly (a byte every 2 ms, under a long timeout): tungstenite's guard against
/// responses in tiny pieces refuses it first, and the error says so. Either way no record is left,
/// wsm closes the socket, and no task or file descriptor stays behind.
#[test]
fn a_dribbled_handshake_fails_connect_within_the_timeout_naming_the_url() {
    alone(async {
        let slow = Hostile::start(|s| s.dribble(Duration::from_millis(250))).await;
        let fast = Hostile::start(|s| s.dribble(Duration::from_millis(2))).await;
        let (short, short_bus) = local_service(Duration::from_secs(1), backoff(1)).await;
        let (long, _long_bus) = local_service(HANG, backoff(1)).await;
        warm_up(&short).await;
        warm_up(&long).await;
        let baseline = resources();

        let mut lifecycle = short_bus.subscribe(LIFECYCLE_TOPIC);
        let url = slow.url("/slow?token=t");
        let started = Instant::now();
        let err = short
            .connect(request(&url, true))
            .await
            .expect_err("a handshake that never completes");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "it waited for the whole timeout"
        );
        assert_eq!(wsm::api::status::grpc_code(&err), tonic::Code::Unavailable);
        // The token in the URL is a secret: errors and events show it redacted.
        let shown = url.replace("token=t", "token=REDACTED");
        assert_eq!(
            err.to_string(),
            format!("handshake with {shown} timed out after 1000 ms")
        );
        // The lifecycle event of the failed Connect names its own id; the connecting event comes first.
        let json = tokio::time::timeout(HANG, lifecycle.recv())
            .await
            .expect("a connecting event")
            .expect("no lag");
        let (id, connecting) = life(&json);
        assert_eq!(connecting.kind, "connecting");
        let events = bus_lifecycle_until(&mut lifecycle, &id, "error").await;
        assert_eq!(
            events.last().map(|e| e.reason.clone()),
            Some(err.to_string())
        );

        let url = fast.url("/fast");
        let err = long
            .connect(request(&url, false))
            .await
            .expect_err("a handshake in tiny pieces");
        assert_eq!(wsm::api::status::grpc_code(&err), tonic::Code::Unavailable);
        assert!(
            err.to_string().starts_with(&format!(
                "handshake with {url} failed: the upstream's handshake response came in too many small pieces"
            )),
            "{err}"
        );

        assert!(short.list(&[]).await.expect("List").is_empty(), "no record");
        assert!(long.list(&[]).await.expect("List").is_empty(), "no record");
        assert_eq!((slow.accepted(), fast.accepted()), (1, 1));
        slow.wait_all_closed_by_client().await;
        fast.wait_all_closed_by_client().await;
        let after = back_to(baseline, "tasks and fds after two dribbled handshakes").await;
        eprintln!("dribbled handshakes: baseline {baseline:?}, after {after:?}");
    });
}

/// Background reconnects meet the same upstreams: the first connection is a real WebSocket that
/// closes, and the three reconnects find a dribbling, a silent and again a dribbling handshake.
/// Each attempt ends at the connect timeout and says so; after the last the connection gives up
/// naming the cause. Every socket was closed by wsm, and its socket task and publisher are gone
/// even before Disconnect.
#[test]
fn reconnects_to_dribbling_and_silent_handshakes_each_end_at_the_connect_timeout() {
    alone(async {
        let upstream = Hostile::start(|mut s| async move {
            match s.index {
                0 => {
                    // A real handshake, then the upstream goes away.
                    let _ = s.accept().await;
                }
                2 => s.hold().await,
                _ => s.dribble(Duration::from_millis(250)).await,
            }
        })
        .await;
        let (service, bus) = local_service(Duration::from_secs(1), backoff(3)).await;
        warm_up(&service).await;
        let baseline = resources();

        let mut lifecycle = bus.subscribe(LIFECYCLE_TOPIC);
        let url = upstream.url("/reconnect");
        let record = service
            .connect(request(&url, true))
            .await
            .expect("the first handshake is answered");
        let events = bus_lifecycle_until(&mut lifecycle, &record.id, "disconnected").await;
        assert_eq!(
            kinds(&events),
            [
                "connecting",
                "connected",
                "reconnecting",
                "reconnecting",
                "reconnecting",
                "disconnected"
            ]
        );
        let timed_out = format!("handshake with {url} timed out after 1000 ms");
        assert_eq!(
            events[2..5].iter().map(|e| e.attempt).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(events[3].reason, timed_out, "the dribbling handshake");
        assert_eq!(events[4].reason, timed_out, "the silent handshake");
        assert_eq!(
            events[5].reason,
            format!("gave up reconnecting after 3 attempts: {timed_out}")
        );
        assert_eq!(
            upstream.accepted(),
            4,
            "the first connection and three attempts"
        );
        upstream.wait_all_closed_by_client().await;
        let listed = service.list(&[]).await.expect("List");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, wsm::model::Status::Disconnected);
        // Its socket task and publisher ended with it; the record stays until Disconnect.
        let ended = back_to(baseline, "tasks and fds once the connection gave up").await;
        service.disconnect(&record.id).await.expect("Disconnect");
        assert!(service.list(&[]).await.expect("List").is_empty());
        let after = back_to(baseline, "tasks and fds after Disconnect").await;
        eprintln!("reconnects to slow handshakes: baseline {baseline:?}, gave up {ended:?}, after Disconnect {after:?}");
    });
}
