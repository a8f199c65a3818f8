//! What a locker of Kubernetes objects asks of the API server for one lock: read its object,
//! or compare-and-swap it. [`KubeLocker`](crate::KubeLocker) and
//! [`LeaseLocker`](crate::LeaseLocker) share this, and differ only in their [`Kept`]: which
//! objects, and how a lock's state is read from one and written into it.

use kube::Resource as _;

use super::keys::post_params;
use super::watch::{Kept, Watches};
use crate::backend::{Record, StoredStates, Written};
use crate::error::Error;

/// Reads lock `name`'s object (`None`: not stored), and remembers it for an attempt that may
/// follow.
///
/// # Errors
///
/// [`Error::Kube`] naming the object when the request fails; the decoding's error when the
/// object holds no valid lock.
pub(crate) async fn read<O: Kept>(
    objects: &O,
    watches: &Watches<O>,
    name: &str,
) -> Result<Option<Record<O::Version>>, Error> {
    let object = objects
        .api()
        .get_opt(&objects.object_name(name))
        .await
        .map_err(|source| kube_error(objects, name, source))?;
    let record = object.map(|o| objects.decode(name, o)).transpose()?;
    watches.read(name, record.as_ref());
    Ok(record)
}

/// Stores `object`, lock `name`'s object with its new state: replaces it when `replace` (the
/// object carries the resourceVersion it was read at, so the write is a compare-and-swap),
/// or else creates it. Tells this process's waiters and watchers at once, ahead of the watch.
///
/// # Errors
///
/// [`Error::Kube`] naming the object when the request fails other than by a conflict: a
/// 409 (changed, or created, meanwhile) or a 404 on a replace (deleted meanwhile) is
/// [`Written::Conflict`], and the caller reads again and decides again.
pub(crate) async fn write<O: Kept>(
    objects: &O,
    watches: &Watches<O>,
    name: &str,
    object: &O::Object,
    replace: bool,
) -> Result<Written<O::Version>, Error> {
    let api = objects.api();
    let result = if replace {
        api.replace(&objects.object_name(name), &post_params(), object)
            .await
    } else {
        api.create(&post_params(), object).await
    };
    match result {
        Ok(mut stored) => {
            // Kept without its field owners, as `decode` keeps what it reads: the next write
            // leaves them out, and the API server keeps them as they are.
            stored.meta_mut().managed_fields = None;
            match objects.decode(name, stored.clone()) {
                Ok(record) => {
                    watches.saw(name, &record);
                    Ok(Written::Stored(record.version))
                }
                Err(_) => Ok(Written::Stored(O::version(stored))),
            }
        }
        Err(err) if is_status(&err, 409) || (replace && is_status(&err, 404)) => {
            Ok(Written::Conflict)
        }
        Err(err) => Err(kube_error(objects, name, err)),
    }
}

/// Every lock of the namespace, by name, with its state or why it cannot be read.
///
/// # Errors
///
/// [`Error::Kube`] naming the namespace when the list fails.
pub(crate) async fn read_all<O: Kept>(objects: &O) -> Result<StoredStates, Error> {
    let list = objects
        .api()
        .list(&objects.list_params())
        .await
        .map_err(|source| Error::Kube {
            object: objects.namespace().to_owned(),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter(|object| objects.is_lock(object))
        .filter_map(|object| {
            let name = objects.lock_name(&object)?;
            let state = objects.decode(&name, object).map(|record| record.state);
            Some((name, state))
        })
        .collect())
}

/// `source`, naming lock `name`'s object.
pub(crate) fn kube_error<O: Kept>(objects: &O, name: &str, source: kube::Error) -> Error {
    Error::Kube {
        object: objects.object(name),
        source,
    }
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}
