//! The right to publish: a fence asked before every bus call. With several instances, peers take an instance's connections once its heartbeat has not changed
//! for the stale threshold, as *they* observe it; the instance itself stops publishing somewhat
//! earlier, counted from when it last started a heartbeat write that succeeded. So an instance that
//! was paused (SIGSTOP, a frozen VM) or cut off from the store holds its frames on waking instead of
//! publishing next to the instance that took over, until it has checked which connections are still
//! its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

/// Asked before every bus call whether this instance may publish the connection's frames: with
/// several instances, an owner that may have been declared dead (a pause, a cut to the store) must
/// not publish until it knows it still owns the connection, and never once another instance took it.
#[async_trait::async_trait]
pub(crate) trait PublishFence: Send + Sync + 'static {
    /// Waits until publishing is allowed; `false` when it never will be again (the batch is
    /// discarded).
    async fn admit(&self) -> bool;
}

/// Always admits: a single instance, or tests.
pub(crate) struct Unfenced;

#[async_trait::async_trait]
impl PublishFence for Unfenced {
    async fn admit(&self) -> bool {
        true
    }
}

/// Valid until an instant (`None`: always, when no heartbeat bounds it).
#[derive(Debug)]
pub struct Lease {
    until: watch::Sender<Option<Instant>>,
}

impl Lease {
    /// A lease that never lapses: a lone instance, until heartbeats start.
    pub fn unbounded() -> Self {
        Lease {
            until: watch::Sender::new(None),
        }
    }

    /// Valid until `until` (a heartbeat was written).
    pub(crate) fn renew(&self, until: Instant) {
        self.until.send_replace(Some(until));
    }

    pub(crate) fn is_valid(&self) -> bool {
        match *self.until.borrow() {
            None => true,
            Some(until) => Instant::now() < until,
        }
    }

    /// Returns once the lease is valid.
    pub(crate) async fn wait_valid(&self) {
        let mut renewed = self.until.subscribe();
        while !self.is_valid() {
            if renewed.changed().await.is_err() {
                return;
            }
        }
    }
}

/// One connection's fence: the instance's lease, and whether this connection was taken over.
pub(crate) struct OwnershipFence {
    pub lease: Arc<Lease>,
    pub revoked: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl PublishFence for OwnershipFence {
    async fn admit(&self) -> bool {
        if !self.lease.is_valid() {
            self.lease.wait_valid().await;
        }
        !self.revoked.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lease_holds_publishing_until_renewed_and_a_revoked_fence_refuses() {
        let lease = Arc::new(Lease::unbounded());
        assert!(lease.is_valid());
        lease.renew(Instant::now() + Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!lease.is_valid());

        let revoked = Arc::new(AtomicBool::new(false));
        let fence = OwnershipFence {
            lease: Arc::clone(&lease),
            revoked: Arc::clone(&revoked),
        };
        let admitted = tokio::spawn(async move { fence.admit().await });
        tokio::task::yield_now().await;
        assert!(!admitted.is_finished(), "held while the lease is lapsed");
        revoked.store(true, Ordering::Release);
        lease.renew(Instant::now() + Duration::from_secs(2));
        assert!(!admitted.await.unwrap(), "taken over meanwhile: refused");
    }
}
