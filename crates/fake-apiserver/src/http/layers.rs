//! The layers a request passes, in order, before routing: the network (partitions and
//! blackholes), the faults, and access control; and the faults due once it is handled.
//!
//! Each layer either lets the request through or stops it with a [`Halt`]: the connection
//! drops, or the answer is an error.

use std::time::Duration;

use http::Response;

use super::{Dropped, IN_THE_NETWORK, ResponseBody};
use crate::Shared;
use crate::access::Verdict;
use crate::faults::{self, Outcome, PartitionKind};
use crate::request::RequestInfo;
use crate::status::ApiError;

/// How a layer stops a request.
pub(super) enum Halt {
    /// The connection drops without an answer.
    Drop,
    /// The answer is this error, and the request goes no further.
    Answer(ApiError),
}

impl From<Dropped> for Halt {
    fn from(Dropped: Dropped) -> Self {
        Self::Drop
    }
}

impl From<ApiError> for Halt {
    fn from(err: ApiError) -> Self {
        Self::Answer(err)
    }
}

/// The network layer: drops the request during a refusing partition, holds it during a
/// blackhole (of the whole server, or of the client with `token`) until it heals.
pub(super) async fn cross_network(shared: &Shared, token: Option<&str>) -> Result<(), Dropped> {
    loop {
        match shared.faults().partitioned_as() {
            None if !faults::is_cut(&shared.client_cuts.borrow(), token) => return Ok(()),
            None | Some(PartitionKind::Blackhole) => {}
            Some(PartitionKind::Refuse) => return Err(Dropped),
        }
        let _ =
            IN_THE_NETWORK.try_with(|held| held.store(true, std::sync::atomic::Ordering::SeqCst));
        let mut link = shared.link_up.subscribe();
        let mut cuts = shared.client_cuts.subscribe();
        tokio::select! {
            _ = link.changed() => {}
            _ = cuts.changed() => {}
            () = shared.shutdown.cancelled() => return Err(Dropped),
            // A blackhole with a deadline heals by itself; look again now and then.
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Waits `delay`, unless the server stops first.
async fn sleep(shared: &Shared, delay: Duration) -> Result<(), Dropped> {
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        () = shared.shutdown.cancelled() => Err(Dropped),
    }
}

/// What the fault layer keeps for after the request is handled.
pub(super) struct AfterCommit {
    /// Between handling the request and answering it.
    latency: Duration,
    /// What happens to the answer instead of sending it.
    outcome: Option<Outcome>,
}

/// The fault layer, before the request is handled: the faults decide its latency (after which
/// it crosses the network again), and whether it hangs until released, is reset, or fails;
/// an outcome due after commit is kept for [`AfterCommit::answer`].
pub(super) async fn inject_faults(
    shared: &Shared,
    info: &RequestInfo,
) -> Result<AfterCommit, Halt> {
    let decision = shared.faults().decide(info);
    if !decision.latency.is_zero() {
        sleep(shared, decision.latency).await?;
        cross_network(shared, info.token.as_deref()).await?;
    }
    let mut after = AfterCommit {
        latency: decision.latency_after,
        outcome: None,
    };
    match decision.outcome {
        Some(Outcome::Hang) => {
            hang(shared).await;
            return Err(Halt::Drop);
        }
        Some(outcome) if decision.after_commit => after.outcome = Some(outcome),
        Some(Outcome::Reset) => return Err(Halt::Drop),
        Some(Outcome::Fail(err)) => return Err(Halt::Answer(err)),
        None => {}
    }
    Ok(after)
}

/// Holds a hung request until hung requests are released or the server stops.
async fn hang(shared: &Shared) {
    let mut release = shared.hang_release.subscribe();
    tokio::select! {
        _ = release.changed() => {}
        () = shared.shutdown.cancelled() => {}
    }
}

impl AfterCommit {
    /// The fault layer, once the request is handled (committed): the answer takes its time
    /// (the client may give up meanwhile), then it is sent, lost (the connection drops), or
    /// replaced by an error.
    pub(super) async fn answer(
        self,
        shared: &Shared,
        response: Response<ResponseBody>,
    ) -> Result<Response<ResponseBody>, Halt> {
        if !self.latency.is_zero() {
            sleep(shared, self.latency).await?;
        }
        match self.outcome {
            // The request was handled; its answer is lost.
            Some(Outcome::Fail(err)) => Err(Halt::Answer(err)),
            Some(_) => Err(Halt::Drop),
            None => Ok(response),
        }
    }
}

/// The access-control layer (when the server has one): the user the request's token
/// authenticates as, or the 401 or 403 that stops it.
pub(super) fn check_access(shared: &Shared, info: &RequestInfo) -> Result<Option<String>, Halt> {
    let verdict = shared
        .access()
        .as_ref()
        .map(|access| access.check(info.token.as_deref(), info));
    match verdict {
        None => Ok(None),
        Some(Verdict::Allowed { user }) => Ok(user),
        Some(Verdict::Denied(err)) => Err(Halt::Answer(err)),
    }
}
