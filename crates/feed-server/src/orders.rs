//! Orders from the control surface ([`FeedHandle`](crate::FeedHandle), the HTTP endpoint, server
//! shutdown) to one session, and when the session carries them out:
//!
//! - **drop**: at once, even in the middle of a write (the socket is dropped, so a cut frame
//!   does not matter);
//! - **close** and **shutdown**: after the current step, so the close frame never lands inside a
//!   half-written batch; if the step cannot finish within [`CLOSE_TIMEOUT`] (a client that
//!   stopped reading), the socket is dropped instead;
//! - **stall**: between two steps; acknowledged as soon as it is filed.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::shutdown;

/// How long a close (ours or the client's) may take before the socket is simply dropped.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest stall carried out (a year); a longer order stalls this long.
const MAX_STALL: Duration = Duration::from_secs(365 * 24 * 3600);

/// An order to one session; `done` fires once it has been carried out.
pub(crate) enum SessionCommand {
    /// Drop the socket without a close frame.
    Drop { done: oneshot::Sender<()> },
    /// Send a close frame with this code, then finish the closing handshake.
    Close {
        code: u16,
        done: oneshot::Sender<()>,
    },
    /// Neither read nor write (no pongs either) for this long.
    Stall {
        duration: Duration,
        done: oneshot::Sender<()>,
    },
}

/// Why a session ended.
pub(crate) enum End {
    /// The client closed or the socket failed.
    Client(String),
    /// The venue personality closed it: the client broke one of its rules, or its lifetime ended.
    Rule(String),
    /// An order ended it; `done` (if any) fires once the socket is gone.
    Ordered {
        why: &'static str,
        done: Option<oneshot::Sender<()>>,
    },
}

impl End {
    pub(crate) fn describe(&self) -> &str {
        match self {
            Self::Client(reason) | Self::Rule(reason) => reason,
            Self::Ordered { why, .. } => why,
        }
    }

    /// Tells whoever gave the order that the session is gone.
    pub(crate) fn acknowledge(self) {
        if let Self::Ordered {
            done: Some(done), ..
        } = self
        {
            let _ = done.send(());
        }
    }
}

/// A close the session owes before doing anything else.
pub(crate) struct PendingClose {
    pub code: CloseCode,
    pub reason: &'static str,
    pub done: Option<oneshot::Sender<()>>,
    /// After this, a step that keeps the close waiting is abandoned.
    deadline: Instant,
}

impl PendingClose {
    pub(crate) fn end(self) -> End {
        End::Ordered {
            why: self.reason,
            done: self.done,
        }
    }
}

/// The receiving side of one session's orders.
pub(crate) struct Orders {
    commands: mpsc::UnboundedReceiver<SessionCommand>,
    commands_open: bool,
    stop: watch::Receiver<bool>,
    stopping: bool,
    close: Option<PendingClose>,
    stall_until: Option<Instant>,
}

impl Orders {
    pub(crate) fn new(
        commands: mpsc::UnboundedReceiver<SessionCommand>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            commands,
            commands_open: true,
            stop,
            stopping: false,
            close: None,
            stall_until: None,
        }
    }

    /// The close to perform now, if one was ordered.
    pub(crate) fn take_close(&mut self) -> Option<PendingClose> {
        self.close.take()
    }

    /// The end of a stall to begin now, if one was ordered.
    pub(crate) fn take_stall(&mut self) -> Option<Instant> {
        self.stall_until.take()
    }

    /// Waits for the next order and files it. Returns the session's end for a drop, which must
    /// happen at once; other orders are filed for [`take_close`](Self::take_close) and
    /// [`take_stall`](Self::take_stall).
    pub(crate) async fn next(&mut self) -> Option<End> {
        tokio::select! {
            biased;
            _ = shutdown::signalled(&mut self.stop), if !self.stopping => {
                self.stopping = true;
                self.file_close(CloseCode::Away, "server shutting down", None);
                None
            }
            command = self.commands.recv(), if self.commands_open => match command {
                Some(SessionCommand::Drop { done }) => Some(End::Ordered {
                    why: "dropped by control",
                    done: Some(done),
                }),
                Some(SessionCommand::Close { code, done }) => {
                    self.file_close(CloseCode::from(code), "closed by control", Some(done));
                    None
                }
                Some(SessionCommand::Stall { duration, done }) => {
                    // Capped so that no duration can overflow the clock.
                    let until = Instant::now() + duration.min(MAX_STALL);
                    self.stall_until = Some(self.stall_until.map_or(until, |u| u.max(until)));
                    let _ = done.send(());
                    None
                }
                None => {
                    self.commands_open = false;
                    None
                }
            },
            // Nothing can arrive any more.
            _ = std::future::pending::<()>(), if self.stopping && !self.commands_open => None,
        }
    }

    fn file_close(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        done: Option<oneshot::Sender<()>>,
    ) {
        match &mut self.close {
            // A second close (e.g. shutdown during close_all) joins the first.
            Some(pending) => {
                if let Some(done) = done {
                    let _ = pending.done.replace(done).map(|earlier| earlier.send(()));
                }
            }
            None => {
                self.close = Some(PendingClose {
                    code,
                    reason,
                    done,
                    deadline: Instant::now() + CLOSE_TIMEOUT,
                });
            }
        }
    }

    /// Runs one step of the session while still taking orders: a drop abandons it, a close
    /// lets it finish until the close's deadline.
    pub(crate) async fn during<T>(&mut self, step: impl Future<Output = T>) -> Result<T, End> {
        tokio::pin!(step);
        loop {
            let deadline = self.close.as_ref().map(|c| c.deadline);
            tokio::select! {
                biased;
                output = &mut step => return Ok(output),
                end = self.next() => {
                    if let Some(end) = end {
                        return Err(end);
                    }
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    if let Some(close) = self.close.take() {
                        return Err(close.end());
                    }
                }
            }
        }
    }

    /// Holds until `until`, taking orders: a drop or the server's shutdown end the session at
    /// once; a close waits for the end of the stall; another stall extends it.
    pub(crate) async fn stall(&mut self, mut until: Instant) -> Result<(), End> {
        loop {
            tokio::select! {
                biased;
                end = self.next() => {
                    if let Some(end) = end {
                        return Err(end);
                    }
                    if self.stopping {
                        return Err(End::Ordered { why: "server shutting down", done: None });
                    }
                    if let Some(more) = self.stall_until.take() {
                        until = until.max(more);
                    }
                }
                _ = sleep_until(until) => return Ok(()),
            }
        }
    }
}

pub(crate) async fn sleep_until_opt(at: Option<Instant>) {
    if let Some(at) = at {
        sleep_until(at).await;
    }
}
