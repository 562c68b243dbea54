//! Getting a socket again: reconnecting with backoff after a drop, a rotation's immediate dial, a
//! taken-over connection's first dial, and the end of the task when none is to be had.

use super::*;

impl SocketTask {
    /// After a lost socket: reconnects with backoff, or ends (without `auto_reconnect`, when closed
    /// on request, or when the attempts ran out). `None` when it ended.
    pub(super) async fn after_drop(&mut self, reason: String) -> Option<(Socket, u32)> {
        if !self.spec.auto_reconnect {
            self.finish(&format!("{reason}; auto_reconnect is off"));
            return None;
        }
        tracing::warn!(connection = %self.id, url = %self.shown_url(), %reason, "connection lost; reconnecting");
        match self.reconnect(reason).await {
            Ok(next) => Some(next),
            Err(None) => {
                self.finish("closed on request while reconnecting");
                None
            }
            Err(Some(reason)) => {
                self.finish(&reason);
                None
            }
        }
    }

    /// The immediate dial of a taken-over connection; on failure, reconnects as after a drop (or
    /// ends, without `auto_reconnect`). `None` when it ended.
    pub(super) async fn first_dial(&mut self) -> Option<Socket> {
        let spec = self.spec.clone();
        let options = self.options.clone();
        let dial = async move { dial::dial(&spec, &options).await };
        let reason = match self.while_down(dial).await {
            None => {
                self.finish("closed on request while connecting");
                return None;
            }
            Some(Ok(socket)) => return Some(socket),
            Some(Err(e)) => e.to_string(),
        };
        // From here on, the same as after a drop.
        self.after_drop(format!("the taken-over connection did not open: {reason}"))
            .await
            .map(|(socket, _)| socket)
    }

    /// Retries with backoff. `Ok((socket, attempt))` on success; `Err(None)` when closed on request;
    /// `Err(Some(reason))` when the attempts ran out.
    pub(super) async fn reconnect(
        &mut self,
        mut reason: String,
    ) -> Result<(Socket, u32), Option<String>> {
        self.set_status(Status::Reconnecting);
        let mut attempts = 0;
        for (attempt, delay) in self.options.backoff.delays() {
            attempts = attempt;
            self.emit(LifecycleKind::Reconnecting, &reason, attempt);
            let wait = tokio::time::sleep(delay);
            if self.while_down(wait).await.is_none() {
                return Err(None);
            }
            let spec = self.spec.clone();
            let options = self.options.clone();
            let dial = async move { dial::dial(&spec, &options).await };
            match self.while_down(dial).await {
                None => return Err(None),
                Some(Ok(socket)) => return Ok((socket, attempt)),
                Some(Err(e @ dial::DialError::Refused(_))) => {
                    // The name may now resolve elsewhere (rebinding, a moved host): the policy is
                    // checked on every attempt, and a refusal fails the attempt like any other.
                    tracing::warn!(connection = %self.id, attempt, reason = %e, "reconnect refused by the network policy");
                    reason = e.to_string();
                }
                Some(Err(e)) => {
                    tracing::warn!(connection = %self.id, attempt, error = %e, "reconnect attempt failed");
                    reason = e.to_string();
                }
            }
        }
        Err(Some(format!(
            "gave up reconnecting after {attempts} attempts: {reason}"
        )))
    }

    /// Runs `fut` while serving commands without a socket; `None` if closed on request meanwhile.
    pub(super) async fn while_down<T>(
        &mut self,
        fut: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let mut fut = std::pin::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Some(out),
                command = self.ch.commands.recv() => {
                    if self.command(command, None).await.is_some() {
                        return None;
                    }
                }
            }
        }
    }

    pub(super) fn finish(&mut self, reason: &str) {
        // Waiters of correlated requests learn at once that no response will come.
        self.correlator.clear();
        self.set_status(Status::Disconnected);
        self.emit(LifecycleKind::Disconnected, reason, 0);
        tracing::info!(connection = %self.id, url = %self.shown_url(), reason, "connection ended");
    }
}
