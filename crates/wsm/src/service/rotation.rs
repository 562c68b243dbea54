//! The operator's rotation (SPEC 8, trigger 3): `Rotate(id)` replaces a connection's socket
//! make-before-break. The same rules as every connection call: the connection must exist, be this
//! instance's (a call elsewhere is forwarded to its owner by the API) and be connected.

use super::checks::send_error;
use super::WebSocketService;
use crate::connection::Rotated;
use crate::error::ServiceError;

/// What the rotating lifecycle event and the log name as the trigger.
const OPERATOR: &str = "an operator asked for a rotation (Rotate)";

impl WebSocketService {
    /// Rotates the connection's socket make-before-break and answers once the old leg closed:
    /// with `overlap` when the arbiter proved nothing was lost, without it when the old leg was
    /// closed at the bound and a gap was announced. NOT_FOUND for an unknown id, NotOwner for
    /// another instance's connection, FAILED_PRECONDITION when not connected or already rotating,
    /// UNAVAILABLE when the new leg did not open (the old one goes on serving).
    pub async fn rotate(&self, id: &str) -> Result<Rotated, ServiceError> {
        self.owned(id).await?;
        let connection = self.connected(id)?;
        let rotated = connection.rotate(OPERATOR).await.map_err(send_error)?;
        tracing::info!(
            connection = %id,
            overlap = rotated.overlap,
            duplicates = rotated.duplicates,
            took_ms = rotated.took.as_millis() as u64,
            "rotated on request"
        );
        Ok(rotated)
    }
}
