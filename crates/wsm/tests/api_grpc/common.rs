//! Shared by the gRPC API tests: the client, connecting, listing, and checking error statuses.

use std::collections::HashMap;
use std::fmt::Debug;

use feed_server::ReceivedMessage;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};
use wsm::proto::web_socket_manager_client::WebSocketManagerClient;
use wsm::proto::{ConnectRequest, ListRequest, TagFilter, WebSocketConnection};

type Client = WebSocketManagerClient<Channel>;

pub(crate) fn connect_request(url: String) -> ConnectRequest {
    ConnectRequest {
        url,
        ..ConnectRequest::default()
    }
}

pub(crate) fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Connects and checks the answer; the connection's id.
pub(crate) async fn connect(client: &mut Client, request: ConnectRequest) -> String {
    let response = client.connect(request).await.expect("Connect").into_inner();
    assert_eq!(response.status, "connected");
    assert!(!response.id.is_empty());
    response.id
}

pub(crate) async fn list(
    client: &mut Client,
    filters: &[(&str, &str)],
) -> Vec<WebSocketConnection> {
    let filters = filters
        .iter()
        .map(|(key, value)| TagFilter {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    client
        .list(ListRequest { filters })
        .await
        .expect("List")
        .into_inner()
        .connections
}

pub(crate) async fn listed(client: &mut Client, id: &str) -> WebSocketConnection {
    list(client, &[])
        .await
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("{id} is listed"))
}

/// The call failed with `code` and exactly `message`.
pub(crate) fn assert_error<T: Debug>(
    result: Result<Response<T>, Status>,
    code: Code,
    message: &str,
) {
    let status = result.expect_err("the call fails");
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "{status:?}"
    );
}

pub(crate) fn texts(messages: Vec<ReceivedMessage>) -> Vec<String> {
    messages
        .into_iter()
        .filter_map(|m| m.as_text().map(str::to_owned))
        .collect()
}
