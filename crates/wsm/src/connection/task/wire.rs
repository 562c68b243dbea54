//! What crosses the socket, as small helpers: receive times, how a failed read ends the
//! connection, outbound messages as frames, closing, and the deadlines the task waits on.

use super::*;

/// Receive times within a burst: reading the clock costs about as much as handling a small frame
/// (the vDSO clock is slow on virtual machines), so frames read back to back share a reading,
/// taken again every [`BurstClock::EVERY`] frames. A frame's time is when it was read, within
/// microseconds.
#[derive(Debug, Default)]
pub(super) struct BurstClock {
    at: Option<SystemTime>,
    uses: u32,
}

impl BurstClock {
    const EVERY: u32 = 16;

    pub(super) fn now(&mut self) -> SystemTime {
        match self.at {
            Some(at) if self.uses < Self::EVERY => {
                self.uses += 1;
                at
            }
            _ => {
                let at = SystemTime::now();
                self.at = Some(at);
                self.uses = 1;
                at
            }
        }
    }
}

/// How a failed read ends the connection. The two cases an upstream causes by what it sends name
/// the limit or the rule it broke: "read failed: Space limit exceeded" alone would leave the
/// operator guessing which limit, and where to raise it.
pub(super) fn read_failed(e: WsError) -> End {
    match e {
        // Refused as soon as a frame header announces more than the limit, before any of its
        // payload is buffered (fragments: once their sum exceeds it).
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => End::Violation {
            reason: format!(
                "the upstream sent a message of at least {size} bytes, over the limit of \
                 {max_size} bytes (max_message_size; wsm serve: --max-message-bytes); closed \
                 with 1009"
            ),
            code: 1009,
            close_reason: "message too big",
        },
        WsError::Utf8(detail) => End::Violation {
            reason: format!(
                "the upstream sent a text message that is not valid UTF-8 ({detail}); closed \
                 with 1007"
            ),
            code: 1007,
            close_reason: "invalid UTF-8 in a text message",
        },
        other => End::Dropped(format!("read failed: {other}")),
    }
}

pub(super) fn to_frame(message: &OutboundMessage) -> Result<Message, SendError> {
    if correlation::is_text(&message.content_type) {
        Utf8Bytes::try_from(message.payload.clone())
            .map(Message::Text)
            .map_err(|_| SendError::NotUtf8)
    } else {
        Ok(Message::Binary(message.payload.clone()))
    }
}

pub(super) async fn close(socket: &mut Socket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    // A stalled upstream must not hold up a disconnect: give the handshake a bounded time.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(Some(frame))).await;
}

/// Whether a rate-limited event may go out now (at most one per [`DEGRADED_EVERY`]).
pub(super) fn every(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|at| now.duration_since(at) < DEGRADED_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
