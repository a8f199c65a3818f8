//! Metrics (feature `metrics`): what operators alert on, recorded through the [`metrics`
//! facade](https://docs.rs/metrics), so that the application picks the exporter (Prometheus,
//! OpenTelemetry, a log...) by installing its recorder. The [crate docs](crate#metrics) list
//! every metric, its labels and what it means; [`describe`] gives the recorder their
//! descriptions and units, and the constants name them, for an exporter's configuration.

// Every metric name, label key and description is written here once; the rest of the crate
// calls the hooks below, one line each: `acquisition` (around `try_acquire` and `acquire`),
// `holding` (around a guard's renewal task: held locks, hold time, lost locks),
// `renewal_failed` (keep-alive) and `Leadership` (leader election). Without the feature the
// hooks are the same signatures doing nothing (the futures are passed through as they are), so
// they compile to nothing and the library behaves the same.
//
// The crate `metrics` is named in this file only, as `::metrics`: this module keeps the name
// users look for (`lockheed::metrics`), and shadows nothing anywhere else.

#[cfg(feature = "metrics")]
pub use self::recorded::{
    ACQUISITIONS, HELD, HOLD_SECONDS, LEADER_STATUS, LOCK_LABEL, LOCKS_LOST, RENEWALS_FAILED,
    RESULT_LABEL, WAIT_SECONDS, describe,
};
#[cfg(feature = "metrics")]
pub(crate) use self::recorded::{Leadership, acquisition, holding, renewal_failed};
#[cfg(not(feature = "metrics"))]
pub(crate) use self::unrecorded::{Leadership, acquisition, holding, renewal_failed};

/// How a lock is being taken, for [`acquisition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `try_acquire`: one attempt, no waiting (no wait time recorded).
    Try,
    /// `acquire` or `acquire_timeout`: waits while the lock is held.
    Wait,
}

#[cfg(feature = "metrics")]
mod recorded {
    use std::future::Future;

    use ::metrics::{
        Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge,
        describe_histogram, gauge, histogram,
    };
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::Call;
    use crate::error::Error;

    /// Counter `lockheed_acquisitions_total`: calls to take a lock, by [lock](LOCK_LABEL) and
    /// [result](RESULT_LABEL).
    pub const ACQUISITIONS: &str = "lockheed_acquisitions_total";
    /// Histogram `lockheed_wait_seconds`: how long a waiting acquire took to take its lock, by
    /// [lock](LOCK_LABEL).
    pub const WAIT_SECONDS: &str = "lockheed_wait_seconds";
    /// Histogram `lockheed_hold_seconds`: how long a guard held its lock, by [lock](LOCK_LABEL).
    pub const HOLD_SECONDS: &str = "lockheed_hold_seconds";
    /// Gauge `lockheed_held`: the guards of this process holding a lock now, by
    /// [lock](LOCK_LABEL).
    pub const HELD: &str = "lockheed_held";
    /// Counter `lockheed_renewals_failed_total`: renewals that failed and are retried, by
    /// [lock](LOCK_LABEL).
    pub const RENEWALS_FAILED: &str = "lockheed_renewals_failed_total";
    /// Counter `lockheed_locks_lost_total`: guards whose lock was lost, by [lock](LOCK_LABEL).
    pub const LOCKS_LOST: &str = "lockheed_locks_lost_total";
    /// Gauge `lockheed_leader_status`: 1 while this process leads the election on a lock, else
    /// 0, by [lock](LOCK_LABEL) (client-go's `leader_election_master_status`).
    pub const LEADER_STATUS: &str = "lockheed_leader_status";

    /// Label key of every metric: the lock's name (for an election, its Lease's name).
    pub const LOCK_LABEL: &str = "lock";
    /// Label key of [`ACQUISITIONS`]: `acquired`, `held` (a `try_acquire` found the lock held),
    /// `timeout` (an acquire gave up) or `error` (any other error).
    pub const RESULT_LABEL: &str = "result";

    /// Describes every metric of this crate to the installed recorder: its description and
    /// unit (Prometheus' `# HELP` lines, and the unit of the histograms, in seconds). Call it
    /// once after installing the recorder; metrics are recorded without it, only undescribed.
    ///
    /// # Examples
    ///
    /// ```
    /// // First install the exporter of your choice, such as metrics-exporter-prometheus:
    /// // metrics_exporter_prometheus::PrometheusBuilder::new().install()?;
    /// lockheed::metrics::describe();
    /// ```
    pub fn describe() {
        describe_counter!(
            ACQUISITIONS,
            Unit::Count,
            "Calls to take a lock (try_acquire, acquire), by lock and result: acquired, held \
             (try_acquire found it held), timeout (acquire gave up), error."
        );
        describe_histogram!(
            WAIT_SECONDS,
            Unit::Seconds,
            "Time a waiting acquire took to take its lock, by lock."
        );
        describe_histogram!(
            HOLD_SECONDS,
            Unit::Seconds,
            "Time a guard held its lock, from taking it until it was released, dropped or lost, \
             by lock."
        );
        describe_gauge!(
            HELD,
            Unit::Count,
            "Guards of this process holding a lock now, by lock."
        );
        describe_counter!(
            RENEWALS_FAILED,
            Unit::Count,
            "Renewals of a held lease that failed and are retried until the lease ends, by lock."
        );
        describe_counter!(
            LOCKS_LOST,
            Unit::Count,
            "Guards whose lock was lost (not renewed in time, taken over, or yielded to a \
             preferred holder), by lock."
        );
        // A status, 0 or 1: no unit.
        describe_gauge!(
            LEADER_STATUS,
            "1 while this process leads the election on a lock, 0 while it campaigns, by lock."
        );
    }

    /// Runs `taking` (a `try_acquire` or an `acquire` of lock `lock`), counting its result and,
    /// for a waiting call that took the lock, how long it waited. A call dropped before it
    /// ends records nothing.
    pub(crate) async fn acquisition<T>(
        lock: &str,
        call: Call,
        taking: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let taken = taking.await;
        let result = match &taken {
            Ok(_) => "acquired",
            Err(Error::Held { .. }) => "held",
            Err(Error::Timeout { .. }) => "timeout",
            Err(_) => "error",
        };
        counter!(ACQUISITIONS, LOCK_LABEL => lock.to_owned(), RESULT_LABEL => result).increment(1);
        if call == Call::Wait && taken.is_ok() {
            histogram!(WAIT_SECONDS, LOCK_LABEL => lock.to_owned()).record(started.elapsed());
        }
        taken
    }

    /// Wraps the renewal task of a guard of `lock`: the lock counts as held from now until
    /// the task ends (the guard was released, dropped or forgotten, or `lost` fired), and
    /// then as lost if `lost` has fired. The task ends at most once, so a lost lock is counted
    /// once, however many times `lost` is fired.
    pub(crate) fn holding<F: Future<Output = ()>>(
        lock: &str,
        lost: &CancellationToken,
        task: F,
    ) -> impl Future<Output = ()> + use<F> {
        let hold = Hold::start(lock, lost.clone());
        async move {
            task.await;
            drop(hold);
        }
    }

    /// A hold in progress; ends when dropped (with the task, however it ends).
    struct Hold {
        since: Instant,
        lost: CancellationToken,
        held: Gauge,
        seconds: Histogram,
        lost_total: Counter,
    }

    impl Hold {
        fn start(lock: &str, lost: CancellationToken) -> Self {
            let labels = [(LOCK_LABEL, lock.to_owned())];
            let held = gauge!(HELD, &labels);
            held.increment(1.0);
            let lost_total = counter!(LOCKS_LOST, &labels);
            // Both counters exist from a lock's first hold, at 0: a rate over them starts then,
            // not at the first loss or failure.
            lost_total.increment(0);
            counter!(RENEWALS_FAILED, &labels).increment(0);
            Self {
                since: Instant::now(),
                lost,
                held,
                seconds: histogram!(HOLD_SECONDS, &labels),
                lost_total,
            }
        }
    }

    impl Drop for Hold {
        fn drop(&mut self) {
            self.held.decrement(1.0);
            self.seconds.record(self.since.elapsed());
            if self.lost.is_cancelled() {
                self.lost_total.increment(1);
            }
        }
    }

    /// Counts a renewal of `lock` that failed (and is retried).
    pub(crate) fn renewal_failed(lock: &str) {
        counter!(RENEWALS_FAILED, LOCK_LABEL => lock.to_owned()).increment(1);
    }

    /// The leader status of an election on a lock: 0 from its creation, 1 while leading, back
    /// to 0 when dropped. Elections of the same lock in one process add up (two replicas in
    /// one test process show at most 1, as one leads).
    pub(crate) struct Leadership {
        gauge: Gauge,
        leading: bool,
    }

    impl Leadership {
        pub(crate) fn new(lock: &str) -> Self {
            let gauge = gauge!(LEADER_STATUS, LOCK_LABEL => lock.to_owned());
            // A campaigning replica's series exists, at 0.
            gauge.increment(0.0);
            Self {
                gauge,
                leading: false,
            }
        }

        /// This process leads now.
        pub(crate) fn lead(&mut self) {
            if !self.leading {
                self.leading = true;
                self.gauge.increment(1.0);
            }
        }

        /// This process no longer leads.
        pub(crate) fn follow(&mut self) {
            if self.leading {
                self.leading = false;
                self.gauge.decrement(1.0);
            }
        }
    }

    impl Drop for Leadership {
        fn drop(&mut self) {
            self.follow();
        }
    }
}

/// The same hooks, doing nothing: the crate without the feature.
#[cfg(not(feature = "metrics"))]
mod unrecorded {
    use std::future::Future;

    use tokio_util::sync::CancellationToken;

    use super::Call;

    pub(crate) fn acquisition<F>(_lock: &str, _call: Call, taking: F) -> F {
        taking
    }

    pub(crate) fn holding<F: Future<Output = ()>>(
        _lock: &str,
        _lost: &CancellationToken,
        task: F,
    ) -> F {
        task
    }

    pub(crate) fn renewal_failed(_lock: &str) {}

    pub(crate) struct Leadership;

    // The same methods as with the feature, so that the election's code is the same.
    #[allow(clippy::unused_self)]
    impl Leadership {
        pub(crate) fn new(_lock: &str) -> Self {
            Self
        }

        pub(crate) fn lead(&mut self) {}

        pub(crate) fn follow(&mut self) {}
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    /// The rows of the metrics table in `doc` (Markdown, or `//!` lines).
    fn table_rows(doc: &str) -> Vec<String> {
        doc.lines()
            .map(|line| line.trim_start_matches("//!").trim())
            .filter(|line| line.starts_with("| `lockheed_"))
            .map(str::to_owned)
            .collect()
    }

    /// What the code records, as the tables must say it: name, type and labels.
    fn recorded() -> Vec<String> {
        let lock = format!("`{LOCK_LABEL}`");
        let both = format!("`{LOCK_LABEL}`, `{RESULT_LABEL}`");
        [
            (ACQUISITIONS, "counter", both.as_str()),
            (WAIT_SECONDS, "histogram", &lock),
            (HOLD_SECONDS, "histogram", &lock),
            (HELD, "gauge", &lock),
            (RENEWALS_FAILED, "counter", &lock),
            (LOCKS_LOST, "counter", &lock),
            (LEADER_STATUS, "gauge", &lock),
        ]
        .iter()
        .map(|(name, kind, labels)| format!("| `{name}` | {kind} | {labels} |"))
        .collect()
    }

    #[test]
    fn the_readme_and_the_crate_docs_list_every_metric_with_its_type_and_labels() {
        for (doc, text) in [
            ("README.md", include_str!("../README.md")),
            ("src/lib.rs", include_str!("lib.rs")),
        ] {
            let rows = table_rows(text);
            let recorded = recorded();
            assert_eq!(rows.len(), recorded.len(), "{doc}: {rows:#?}");
            for (row, expected) in rows.iter().zip(&recorded) {
                assert!(
                    row.starts_with(expected),
                    "{doc}: {row:?} is not {expected:?}"
                );
            }
        }
    }
}
