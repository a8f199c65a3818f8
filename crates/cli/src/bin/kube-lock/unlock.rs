//! `--unlock`: removing a holder from the semaphore, as the Go tool's `UnLock`.

use lockheed::{Evict, KubeLocker, Locker as _};

use crate::args::Settings;
use crate::exit::Failure;
use crate::say::{self, PROGRAM};
use crate::shared::log::log_info;

/// Removes the holder `settings.holder` from the semaphore (one write with the
/// resourceVersion read). A missing ConfigMap, or a holder that is not in the semaphore, is
/// nothing to do: a success.
///
/// # Errors
///
/// The cluster's errors (a [`Failure::Failed`]), a ConfigMap name the API cannot take (a
/// [`Failure::Config`]).
pub(crate) async fn unlock(locker: &KubeLocker, settings: &Settings) -> Result<(), Failure> {
    let target = &settings.target;
    let holder = &settings.holder;
    let fail = |err| Failure::from_lock(err, "unlock", target);
    log_info!(PROGRAM, "Processing unlock over {target}");
    let removed = locker
        .evict(&target.configmap, Evict::Holder(holder))
        .await
        .map_err(fail)?;
    if let Some(removed) = removed.first() {
        log_info!(
            PROGRAM,
            "Unlock current holder {holder} took on {} with reason: {:?}",
            say::date(removed.since),
            removed.reason.as_deref().unwrap_or_default()
        );
        log_info!(
            PROGRAM,
            "Successfully unlocked {target} for holder {holder}"
        );
        return Ok(());
    }
    // Nothing was removed: say why, as the Go tool did.
    let why = match locker.get(&target.configmap).await.map_err(fail)? {
        None => format!("configmaps {:?} not found", target.configmap),
        Some(_) => "not in semaphore".to_owned(),
    };
    log_info!(PROGRAM, "Unlock non needed: {target}: {why}");
    Ok(())
}
