//! A thousand connects to a refusing port leave no tasks or file descriptors behind.

use tokio::task::JoinSet;
use wsm::proto::{ConnectRequest, DisconnectRequest};

use crate::support::server::{dead_port, Poll, Wsm};

use super::common::{alone, back_to, connect, listed, resources};
use super::hostile::Hostile;

/// Through the gRPC API of an in-process server: 1,000 Connects to a port nothing listens on (half
/// with auto-reconnect) fail at once, each naming the URL; then 250 connections with auto-reconnect
/// lose their upstream and retry against the now refusing port until at least 1,000 attempts have
/// failed, and are disconnected mid-retry. Tasks and file descriptors return to their baseline.
#[test]
fn a_thousand_refused_connects_leave_no_tasks_or_file_descriptors_behind() {
    alone(async {
        const FAILING: usize = 1000;
        const RETRYING: usize = 250;
        const WORKERS: usize = 10;
        let wsm = Wsm::start(&["--reconnect-base-ms", "10", "--reconnect-attempts", "0"]).await;
        let client = wsm.client().await;
        let service = wsm.running.service.clone();
        let refused = dead_port();

        // Warm-up: a refused Connect, and a connection that loses its upstream, retries and is
        // disconnected.
        {
            let mut client = client.clone();
            let err = client
                .connect(ConnectRequest {
                    url: format!("ws://127.0.0.1:{refused}/warm-up"),
                    ..ConnectRequest::default()
                })
                .await
                .expect_err("refused");
            assert_eq!(err.code(), tonic::Code::Unavailable);
            let upstream = Hostile::start(|mut s| async move {
                if s.accept().await.is_ok() {
                    s.hold().await;
                }
            })
            .await;
            let id = connect(&mut client, &upstream.url("/warm-up"), true).await;
            let reconnects = service.snapshot().reconnects;
            upstream.stop().await;
            let poll = Poll::new("the warm-up connection to retry");
            while service.snapshot().reconnects < reconnects + 3 {
                poll.tick().await;
            }
            client
                .disconnect(DisconnectRequest { id })
                .await
                .expect("Disconnect");
        }
        let baseline = resources();

        // 1,000 Connects that fail at once.
        let mut workers = JoinSet::new();
        for worker in 0..WORKERS {
            let mut client = client.clone();
            workers.spawn(async move {
                for i in (worker..FAILING).step_by(WORKERS) {
                    let url = format!("ws://127.0.0.1:{refused}/refused/{i}");
                    let err = client
                        .connect(ConnectRequest {
                            url: url.clone(),
                            auto_reconnect: i % 2 == 0,
                            ..ConnectRequest::default()
                        })
                        .await
                        .expect_err("nothing listens there");
                    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
                    assert!(
                        err.message().starts_with(&format!("handshake with {url} failed: could not connect to 127.0.0.1:{refused}: Connection refused")),
                        "{}",
                        err.message()
                    );
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done.expect("a worker");
        }
        assert!(
            listed(&mut client.clone()).await.is_empty(),
            "a failed Connect leaves no record"
        );

        // 250 connections that lose their upstream and retry against a refusing port.
        let upstream = Hostile::start(|mut s| async move {
            if s.accept().await.is_ok() {
                s.hold().await;
            }
        })
        .await;
        let url = upstream.url("/retrying");
        let mut ids = Vec::with_capacity(RETRYING);
        for _ in 0..RETRYING {
            ids.push(connect(&mut client.clone(), &url, true).await);
        }
        let reconnects = service.snapshot().reconnects;
        upstream.stop().await; // closes every connection and the listener: the port now refuses
        let poll = Poll::new("1,000 reconnect attempts against the refusing port");
        while service.snapshot().reconnects < reconnects + FAILING as u64 {
            poll.tick().await;
        }
        let retried = service.snapshot().reconnects - reconnects;
        let statuses: Vec<String> = listed(&mut client.clone())
            .await
            .into_iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(statuses.len(), RETRYING);
        assert!(
            statuses.iter().all(|s| s == "reconnecting"),
            "every connection is still retrying: {statuses:?}"
        );
        let mut workers = JoinSet::new();
        for chunk in ids.chunks(RETRYING / WORKERS) {
            let mut client = client.clone();
            let chunk = chunk.to_vec();
            workers.spawn(async move {
                for id in chunk {
                    client
                        .disconnect(DisconnectRequest { id })
                        .await
                        .expect("Disconnect while reconnecting");
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done.expect("a worker");
        }
        assert!(listed(&mut client.clone()).await.is_empty());
        let after = back_to(
            baseline,
            "tasks and fds after 1,000 refused Connects and 250 disconnected retries",
        )
        .await;
        eprintln!(
            "refused connects: {FAILING} Connects and {retried} reconnect attempts; baseline {baseline:?}, after {after:?}"
        );
    });
}
