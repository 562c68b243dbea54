//! A call for a connection another instance owns: forwarded to the owner, or, when the owner is
//! stale, stopped or unreachable, the connection is claimed so this instance serves the call. One
//! call for the API ([`Cluster::forward_or_claim`]), which only translates what comes back.

use std::future::Future;
use std::time::Duration;

use tonic::{Code, Request, Response, Status};

use super::forward::{is_timeout, is_unreachable, ForwardError, PeerClient};
use super::{Cluster, Route};
use crate::error::ServiceError;
use crate::service::TakeOver;

/// What became of a call for another instance's connection.
pub enum Outcome<Resp> {
    /// The owner answered (or our deadline for it ran out): pass this on as it is.
    Forwarded(Result<Response<Resp>, Status>),
    /// This instance owns the connection now: serve the call here.
    Claimed,
    /// Not served, and already counted as an ownership miss: answer with this.
    Refused(ServiceError),
    /// Not served: answer with this, counted like any answer.
    Failed(ServiceError),
}

impl Cluster {
    /// Serves a call on connection `id` that `owner` holds: once to the owner through `remote`
    /// (a call that was itself forwarded, `forwarded_by`, is not forwarded again), and when the
    /// owner cannot take it, the connection is claimed for this instance.
    pub(crate) async fn forward_or_claim<Req, Resp, R, RF>(
        &self,
        id: &str,
        owner: &str,
        forwarded_by: Option<String>,
        req: Req,
        timeout: Duration,
        remote: R,
    ) -> Outcome<Resp>
    where
        R: FnOnce(PeerClient, Request<Req>) -> RF,
        RF: Future<Output = Result<Response<Resp>, Status>>,
    {
        let not_owner = || ServiceError::NotOwner {
            id: id.to_owned(),
            owner: owner.to_owned(),
        };
        if let Some(from) = forwarded_by {
            // One hop only: the forwarder believed this instance the owner; the records moved.
            tracing::warn!(connection = %id, %owner, forwarded_by = %from, "a forwarded call reached a non-owner; not forwarding again. If this repeats, the owner's advertised address (WSM_GRPC_HOST) may point at this instance");
            return Outcome::Refused(not_owner());
        }
        let why = match self.route(owner).await {
            Route::Forward(address) => match self
                .forward(id, owner, &address, req, timeout, remote)
                .await
            {
                Forwarding::Answered(outcome) => return outcome,
                Forwarding::Unreachable(why) => why,
            },
            Route::Claim(why) => why,
        };
        match self.claim_for_call(id, owner, &why).await {
            Ok(TakeOver::Claimed | TakeOver::AlreadyOurs) => Outcome::Claimed,
            Ok(TakeOver::Owner(now)) => Outcome::Refused(ServiceError::NotOwner {
                id: id.to_owned(),
                owner: now,
            }),
            Ok(TakeOver::Gone) => Outcome::Failed(ServiceError::NotFound { id: id.to_owned() }),
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Sends the call to the owner at `address`; the owner's answer, or why it could not be reached.
    async fn forward<Req, Resp, R, RF>(
        &self,
        id: &str,
        owner: &str,
        address: &str,
        req: Req,
        timeout: Duration,
        remote: R,
    ) -> Forwarding<Resp>
    where
        R: FnOnce(PeerClient, Request<Req>) -> RF,
        RF: Future<Output = Result<Response<Resp>, Status>>,
    {
        let shown = crate::text::excerpt(address, 128);
        let client = match self.forwarder().client(address).await {
            Ok(client) => client,
            Err(ForwardError::NotAllowed(why)) => {
                // Not a sign the owner is dead: claiming would take a live owner's connection on
                // the word of a record nobody should have written.
                tracing::warn!(connection = %id, %owner, address = %shown, "{why}");
                return Forwarding::Answered(Outcome::Refused(ServiceError::Unavailable(why)));
            }
            Err(ForwardError::Unreachable(e)) => {
                tracing::warn!(connection = %id, %owner, address = %shown, error = %e, "the owner is unreachable; claiming its connection");
                return Forwarding::Unreachable(format!("unreachable at {shown}: {e}"));
            }
        };
        // Bounded here too: a paused owner accepts TCP but never answers, and the deadline sent
        // along is only enforced by a peer that runs.
        let call = remote(client, self.forwarder().request(req, timeout));
        let forwarded = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Status::cancelled("Timeout expired")),
        };
        let status = match forwarded {
            Ok(response) => return Forwarding::Answered(Outcome::Forwarded(Ok(response))),
            Err(status) if is_unreachable(&status) => {
                self.forwarder().forget(address);
                tracing::warn!(connection = %id, %owner, address = %shown, error = %status.message(), "the owner did not take the forwarded call; claiming its connection");
                return Forwarding::Unreachable(format!(
                    "unreachable at {shown}: {}",
                    status.message()
                ));
            }
            Err(status) => status,
        };
        // The owner's own answer, passed on as it is; or our deadline, said so.
        let status = if is_timeout(&status) {
            Status::unavailable(format!(
                "instance {owner}, which owns connection {id}, did not answer within {} ms; \
                 it may be paused or overloaded. If it stays silent for the stale \
                 threshold, another instance takes the connection over",
                timeout.as_millis()
            ))
        } else if status.code() == Code::Unauthenticated {
            Status::unauthenticated(format!(
                "instance {owner}, which owns connection {id}, refused the call \
                 forwarded to it ({}); instances forward with the peer key, which \
                 --peer-key / WSM_PEER_KEY must set to the same value on every \
                 instance",
                status.message()
            ))
        } else {
            status
        };
        Forwarding::Answered(Outcome::Forwarded(Err(status)))
    }
}

/// How forwarding went: answered (pass it on), or the owner could not be reached (claim).
enum Forwarding<Resp> {
    Answered(Outcome<Resp>),
    Unreachable(String),
}
