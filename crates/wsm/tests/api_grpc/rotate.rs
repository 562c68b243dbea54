//! `Rotate` (SPEC 8, the operator's trigger): the same refusals as every connection call, on both
//! ports and behind the API key, and the make-before-break a live connection gets.

use serde_json::json;
use tonic::Code;
use wsm::proto::{ConnectRequest, RotateRequest, SendRawRequest};

use crate::support::server::{bounded, feed, with_key, Poll, Wsm};

use super::common::{assert_error, connect, connect_request, listed};

const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

fn rotate(id: &str) -> RotateRequest {
    RotateRequest { id: id.to_owned() }
}

fn send_raw(id: &str) -> SendRawRequest {
    SendRawRequest {
        id: id.to_owned(),
        message: b"{}".to_vec(),
        ..SendRawRequest::default()
    }
}

#[tokio::test]
async fn rotate_refuses_empty_unknown_and_unconnected_ids_as_send_raw_does() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;

        // An empty id names no connection: NOT_FOUND, exactly as SendRaw answers it.
        for id in ["", UNKNOWN_ID] {
            let expected = client.send_raw(send_raw(id)).await.expect_err("SendRaw");
            assert_eq!(
                (expected.code(), expected.message()),
                (Code::NotFound, "Connection not found"),
                "{id:?}"
            );
            assert_error(
                client.rotate(rotate(id)).await,
                expected.code(),
                expected.message(),
            );
        }

        // A connection that is down cannot rotate, as it cannot send.
        let id = connect(
            &mut client,
            ConnectRequest {
                auto_reconnect: false,
                // Like a venue: every socket gets the same stream, so the legs can overlap.
                ..connect_request(feed.url("/ws?broadcast=1"))
            },
        )
        .await;
        assert_eq!(feed.drop_all().await, 1);
        let poll = Poll::new("the dropped connection to show disconnected");
        while listed(&mut client, &id).await.status != "disconnected" {
            poll.tick().await;
        }
        let not_connected = "WebSocket is not connected";
        assert_error(
            client.send_raw(send_raw(&id)).await,
            Code::FailedPrecondition,
            not_connected,
        );
        assert_error(
            client.rotate(rotate(&id)).await,
            Code::FailedPrecondition,
            not_connected,
        );
        assert_eq!(feed.accepted_total(), 1, "a refused Rotate dials nothing");
    })
    .await;
}

#[tokio::test]
async fn rotate_is_served_over_invoke_and_needs_the_api_key() {
    bounded(async {
        let wsm = Wsm::start(&["--api-keys", "k1"]).await;
        let status = wsm
            .client()
            .await
            .rotate(rotate(UNKNOWN_ID))
            .await
            .expect_err("refused without a key");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_error(
            wsm.client()
                .await
                .rotate(with_key(rotate(UNKNOWN_ID), "k1"))
                .await,
            Code::NotFound,
            "Connection not found",
        );

        let http = wsm.http_client();
        let reply = http.invoke("Rotate", &json!({"id": UNKNOWN_ID})).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        let reply = http
            .with_key("k1")
            .invoke("Rotate", &json!({"id": UNKNOWN_ID}))
            .await;
        assert_eq!(reply.status, 404, "{}", reply.body);
        assert_eq!(
            reply.json(),
            json!({"code": "NOT_FOUND", "message": "Connection not found"})
        );
        let metrics = http.with_key("k1").get("/metrics").await.body;
        assert_eq!(
            crate::support::server::metric(
                &metrics,
                r#"wsm_requests_total{method="Rotate",code="NOT_FOUND"}"#
            ),
            2.0,
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn rotate_on_a_live_connection_opens_a_second_socket_and_closes_the_first() {
    bounded(async {
        let feed = feed(20).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(
            &mut client,
            ConnectRequest {
                auto_reconnect: true,
                // Like a venue: every socket gets the same stream, so the legs can overlap.
                ..connect_request(feed.url("/ws?broadcast=1"))
            },
        )
        .await;
        let before = listed(&mut client, &id).await;
        assert_eq!(feed.accepted_total(), 1);

        let rotated = client
            .rotate(rotate(&id))
            .await
            .expect("Rotate on a live connection")
            .into_inner();
        // The old socket closes once the legs overlap: the same frames reach both.
        assert!(rotated.overlap, "{rotated:?}");
        assert!(rotated.duplicates > 0, "{rotated:?}");
        assert!(rotated.took_ms < 10_000, "{rotated:?}");

        assert_eq!(
            feed.accepted_total(),
            2,
            "the rotation dialed a second socket"
        );
        let poll = Poll::new("the first socket to be closed after the rotation");
        loop {
            let open: Vec<u64> = feed.stats().sessions.iter().map(|s| s.id).collect();
            if open.len() == 1 {
                assert_ne!(open[0], 1, "the new socket was closed, the old one kept");
                break;
            }
            poll.tick().await;
        }
        assert_eq!(
            feed.stats().client_close_codes.get(&1000),
            Some(&1),
            "the old socket was closed normally, once"
        );
        let after = listed(&mut client, &id).await;
        assert_eq!(after.status, "connected");
        // Nothing lost: the same epoch.
        assert_eq!(after.epoch, before.epoch, "{rotated:?}");
    })
    .await;
}
