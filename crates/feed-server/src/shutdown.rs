//! The server-wide stop signal: a `watch` flag set by `FeedHandle::shutdown` or its drop.

use tokio::sync::watch;

/// Resolves once the server is stopping: the flag is set or the handle is gone.
pub(crate) async fn signalled(stop: &mut watch::Receiver<bool>) {
    // Err means the sender (the handle) was dropped, which also means stop.
    let _ = stop.wait_for(|stopping| *stopping).await;
}
