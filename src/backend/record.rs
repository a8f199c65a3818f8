//! What a backend reads and writes: a lock's [`Record`] (its state and the version to compare
//! against), and the outcome of a compare-and-swap write ([`Written`]).

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::state::LockState;

/// Every lock of a backend by name: its state, or the error that says why it cannot be read.
pub type StoredStates = Vec<(String, Result<LockState, Error>)>;

/// A lock's state as a backend read it, with the version to compare against when writing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Record<V> {
    /// The state ([`LockState::empty`] for an object that exists without one).
    pub state: LockState,
    /// What the next write must find unchanged (a resourceVersion, a counter, ...).
    pub version: V,
    /// Another tool's write in progress, which makes the lock busy until it ends or the
    /// version changes (Go lockheed's `reserved/by` annotation).
    pub reservation: Option<Reservation>,
}

impl<V> Record<V> {
    /// A record without a reservation.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::{LockState, Record};
    ///
    /// // What a backend's read returns for a lock stored at version 7.
    /// let record = Record::new(LockState::empty("db"), 7_u64);
    /// assert!(record.reservation.is_none());
    /// ```
    pub fn new(state: LockState, version: V) -> Self {
        Self {
            state,
            version,
            reservation: None,
        }
    }

    /// The same record with a reservation (a backend that reads another tool's write in
    /// progress reports it with this).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::{LockState, Record, Reservation};
    ///
    /// let until = chrono::Utc::now() + chrono::Duration::seconds(30);
    /// let record = Record::new(LockState::empty("db"), 7_u64)
    ///     .with_reservation(Some(Reservation::new("6f1d2c3e-go-instance", until)));
    /// assert_eq!(record.reservation.unwrap().by, "6f1d2c3e-go-instance");
    /// ```
    #[must_use]
    pub fn with_reservation(mut self, reservation: Option<Reservation>) -> Self {
        self.reservation = reservation;
        self
    }
}

/// A write in progress by another client (Go lockheed's `reserved/by` annotation).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reservation {
    /// Who reserved the lock.
    pub by: String,
    /// Until when.
    pub until: DateTime<Utc>,
}

impl Reservation {
    /// A reservation by `by` until `until`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::Reservation;
    ///
    /// // A Go lockheed writer's `reserved/by` annotation, as a backend reports it.
    /// let until = chrono::Utc::now() + chrono::Duration::seconds(30);
    /// let reservation = Reservation::new("6f1d2c3e-go-instance", until);
    /// assert_eq!(reservation.by, "6f1d2c3e-go-instance");
    /// ```
    #[must_use]
    pub fn new(by: impl Into<String>, until: DateTime<Utc>) -> Self {
        Self {
            by: by.into(),
            until,
        }
    }
}

/// The outcome of a compare-and-swap write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written<V> {
    /// Stored; the new version to compare against next time.
    Stored(V),
    /// The stored version was not the expected one (or an object to create already exists):
    /// nothing was written. The caller re-reads and decides again.
    Conflict,
}
