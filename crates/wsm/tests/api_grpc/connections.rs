//! Connect, List, Disconnect and the tag RPCs on healthy connections.

use tonic::Code;
use wsm::proto::{
    ConnectRequest, DisconnectRequest, GetTagRequest, GetTagsRequest, ListRequest, OutboundMessage,
    SetTagRequest, SetTagsRequest, WebSocketConnection,
};

use crate::support::server::{bounded, feed, Poll, Wsm, HANG};
use crate::support::upstream::Upstream;

use super::common::{assert_error, connect, connect_request, list, listed, tags};

#[tokio::test]
async fn connect_sends_headers_subprotocols_and_on_connect_and_keeps_the_tags() {
    bounded(async {
        let upstream = Upstream::start().await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(
            &mut client,
            ConnectRequest {
                url: upstream.url(),
                auto_reconnect: false,
                tags: tags(&[("desk", "fx"), ("region", "eu")]),
                headers: tags(&[("X-Client", "api-test"), ("X-Trace", "t-1")]),
                subprotocols: vec!["feed.v2".into(), "feed.v1".into()],
                on_connect: vec![
                    OutboundMessage {
                        message: br#"{"op":"login"}"#.to_vec(),
                        content_type: "application/json".into(),
                    },
                    OutboundMessage {
                        message: br#"{"op":"subscribe"}"#.to_vec(),
                        content_type: "application/json".into(),
                    },
                ],
                ping_interval_ms: 5000,
                ..ConnectRequest::default()
            },
        )
        .await;

        let poll = Poll::new("the on_connect messages at the upstream");
        let session = loop {
            if let Some(s) = upstream.sessions().into_iter().next() {
                if s.texts.len() >= 2 {
                    break s;
                }
            }
            poll.tick().await;
        };
        assert_eq!(session.header("x-client"), Some("api-test"));
        assert_eq!(session.header("x-trace"), Some("t-1"));
        assert_eq!(
            session.header("sec-websocket-protocol"),
            Some("feed.v2, feed.v1"),
            "the subprotocols are offered in order"
        );
        assert_eq!(
            session.texts,
            [r#"{"op":"login"}"#, r#"{"op":"subscribe"}"#]
        );

        let listed = listed(&mut client, &id).await;
        assert_eq!(listed.url, upstream.url());
        assert_eq!(listed.status, "connected");
        assert_eq!(listed.tags, tags(&[("desk", "fx"), ("region", "eu")]));
        assert_eq!(listed.instance_id, "wsm-api-test");
        assert_eq!(listed.topic, "");
        assert_eq!(listed.epoch, 1);
        assert!(listed.created_at.ends_with('Z'), "{}", listed.created_at);
    })
    .await;
}

#[tokio::test]
async fn list_shows_every_connection_and_filters_by_tags() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        assert!(list(&mut client, &[]).await.is_empty());
        let prod = connect(
            &mut client,
            ConnectRequest {
                tags: tags(&[("env", "prod"), ("team", "fx")]),
                ..connect_request(feed.url("/ws"))
            },
        )
        .await;
        let dev = connect(
            &mut client,
            ConnectRequest {
                tags: tags(&[("env", "dev"), ("team", "fx")]),
                ..connect_request(feed.url("/ws"))
            },
        )
        .await;
        let untagged = connect(&mut client, connect_request(feed.url("/ws"))).await;

        let ids = |connections: Vec<WebSocketConnection>| {
            let mut ids: Vec<String> = connections.into_iter().map(|c| c.id).collect();
            ids.sort();
            ids
        };
        let mut all = vec![prod.clone(), dev.clone(), untagged];
        all.sort();
        assert_eq!(ids(list(&mut client, &[]).await), all);
        assert_eq!(
            ids(list(&mut client, &[("env", "prod")]).await),
            vec![prod.clone()]
        );
        let mut fx = vec![prod.clone(), dev.clone()];
        fx.sort();
        assert_eq!(ids(list(&mut client, &[("team", "fx")]).await), fx);
        assert_eq!(
            ids(list(&mut client, &[("team", "fx"), ("env", "dev")]).await),
            [dev],
            "all filters must match"
        );
        assert!(list(&mut client, &[("env", "staging")]).await.is_empty());
        assert!(list(&mut client, &[("env", "prod"), ("env", "dev")])
            .await
            .is_empty());
    })
    .await;
}

#[tokio::test]
async fn list_never_shows_handshake_header_values() {
    bounded(async {
        let upstream = Upstream::start().await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        connect(
            &mut client,
            ConnectRequest {
                headers: tags(&[("Authorization", "secret-token")]),
                ..connect_request(upstream.url())
            },
        )
        .await;
        // The header was used...
        let poll = Poll::new("the upstream to record the handshake");
        let session = loop {
            if let Some(session) = upstream.sessions().into_iter().next() {
                break session;
            }
            poll.tick().await;
        };
        assert_eq!(session.header("authorization"), Some("secret-token"));
        // ...and is not shown.
        let response = client
            .list(ListRequest::default())
            .await
            .expect("List")
            .into_inner();
        assert_eq!(response.connections.len(), 1);
        let text = format!("{response:?}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("authorization"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn disconnect_closes_the_socket_and_removes_the_connection() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(&mut client, connect_request(feed.url("/ws"))).await;
        assert!(feed.wait_for_connections(1, HANG).await);
        client
            .disconnect(DisconnectRequest { id: id.clone() })
            .await
            .expect("Disconnect");
        assert!(
            feed.wait_for_connections(0, HANG).await,
            "the upstream socket is closed"
        );
        assert!(list(&mut client, &[]).await.is_empty());
        assert_error(
            client.get_tags(GetTagsRequest { id: id.clone() }).await,
            Code::NotFound,
            "Connection not found",
        );
        assert_error(
            client.disconnect(DisconnectRequest { id }).await,
            Code::NotFound,
            "Connection not found",
        );
    })
    .await;
}

#[tokio::test]
async fn tags_are_set_and_read_one_at_a_time_and_all_at_once() {
    bounded(async {
        let feed = feed(10).await;
        let wsm = Wsm::start(&[]).await;
        let mut client = wsm.client().await;
        let id = connect(
            &mut client,
            ConnectRequest {
                tags: tags(&[("initial", "1")]),
                ..connect_request(feed.url("/ws"))
            },
        )
        .await;
        client
            .set_tag(SetTagRequest {
                id: id.clone(),
                key: "desk".into(),
                value: "fx".into(),
            })
            .await
            .expect("SetTag");
        let get_tag = |key: &str| GetTagRequest {
            id: id.clone(),
            key: key.into(),
        };
        let value = client.get_tag(get_tag("desk")).await.expect("GetTag");
        assert_eq!(value.into_inner().value, "fx");
        let absent = client.get_tag(get_tag("absent")).await.expect("GetTag");
        assert_eq!(absent.into_inner().value, "", "an absent tag reads empty");
        let all = client
            .get_tags(GetTagsRequest { id: id.clone() })
            .await
            .expect("GetTags")
            .into_inner();
        assert_eq!(all.tags, tags(&[("initial", "1"), ("desk", "fx")]));

        let replacement = tags(&[("a", "1"), ("b", "2")]);
        client
            .set_tags(SetTagsRequest {
                id: id.clone(),
                tags: replacement.clone(),
            })
            .await
            .expect("SetTags");
        let all = client
            .get_tags(GetTagsRequest { id: id.clone() })
            .await
            .expect("GetTags")
            .into_inner();
        assert_eq!(all.tags, replacement, "SetTags replaces every tag");
        assert_eq!(listed(&mut client, &id).await.tags, replacement);
        let by_tag = list(&mut client, &[("b", "2")]).await;
        assert_eq!(by_tag.len(), 1);
        assert_eq!(by_tag[0].id, id);
    })
    .await;
}
