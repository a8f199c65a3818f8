//! What kube-apiserver refuses, checked before any request: object names, and the sizes of a
//! ConfigMap's data and annotations. [`MemoryLocker`](crate::MemoryLocker) applies the same
//! checks, so that tests on it fail where production would.

use super::names::dns1123_subdomain_errors;
use crate::error::Error;

/// kube-apiserver's limit on a ConfigMap's data values.
pub(crate) const MAX_DATA_BYTES: usize = 1024 * 1024;
/// kube-apiserver's limit on all annotations of an object together (keys and values).
pub(crate) const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// Checks that lock `name` forms a valid object name with `prefix`.
///
/// # Errors
///
/// [`Error::InvalidName`] naming the object and what is wrong with its name.
pub(crate) fn check_name(prefix: &str, name: &str) -> Result<(), Error> {
    check_object_name("ConfigMap", &format!("{prefix}{name}"), name)
}

/// Checks that lock `name`'s object, a `kind` named `object`, has a valid name.
///
/// # Errors
///
/// [`Error::InvalidName`] naming the object and what is wrong with its name.
pub(crate) fn check_object_name(kind: &str, object: &str, name: &str) -> Result<(), Error> {
    let problems = if name.is_empty() {
        vec!["a lock name must not be empty".to_owned()]
    } else {
        dns1123_subdomain_errors(object)
    };
    match problems.first() {
        Some(problem) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason: format!("the {kind} name {object:?} is invalid: {problem}"),
        }),
        None => Ok(()),
    }
}

/// Checks that `size` bytes fit in the part of `object` that `limit` bounds.
///
/// # Errors
///
/// [`Error::TooLarge`] naming the object, the size and the limit.
pub(crate) fn check_state_size(object: &str, size: usize, limit: usize) -> Result<(), Error> {
    if size > limit {
        return Err(Error::TooLarge {
            object: object.to_owned(),
            size,
            limit,
        });
    }
    Ok(())
}
