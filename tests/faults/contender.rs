//! The contender processes of the fault tests: this test binary, started again with
//! [`SPEC_VAR`] set, runs [`process`] alone. Each takes the scenario's lock, runs a critical
//! section, releases, and again, until its stdin closes; it prints one JSON line per section
//! (holder, token, start, end) and per acquire that failed, for the test to check.

use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lockheed::clock::{Clock, SystemClock};
use lockheed::testing::history::{History, Section};
use lockheed::{Access, Error, KubeLocker, Lock};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::sync::CancellationToken;

/// The environment variable that makes this test binary a contender: its value is the
/// [`Spec`], as JSON.
const SPEC_VAR: &str = "LOCKHEED_FAULT_CONTENDER";

/// How long a contender waits for the lock before it gives up and tries again: behind seven
/// others (some of which hold it for two leases) and a fault, a waiter may wait that long
/// without anything being wrong, but seldom; the runs count it.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The lock the contenders share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Mutex,
    Semaphore(u32),
    /// Seven readers in ten, three writers.
    ReadWrite,
}

impl Kind {
    /// The history of this lock, to check.
    pub fn history(self, namespace: &str, lock: &str) -> History {
        match self {
            Self::Mutex => History::mutex(namespace, lock),
            Self::Semaphore(max) => History::semaphore(namespace, lock, max),
            Self::ReadWrite => History::read_write(namespace, lock),
        }
    }
}

/// What a contender does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub kubeconfig: String,
    pub lock: String,
    pub holder: String,
    pub kind: Kind,
    /// The lease, in milliseconds.
    pub lease_ms: u64,
    /// A broken contender, for the checker to catch: every section lasts three leases, and
    /// goes on when `lost()` fires.
    pub careless: bool,
}

/// One line of a contender's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A critical section started, to last `planned_ms` unless the lock is lost.
    Started {
        holder: String,
        token: u64,
        start: DateTime<Utc>,
        planned_ms: u64,
    },
    /// A critical section it ran.
    Section {
        holder: String,
        token: u64,
        shared: bool,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        /// Cut short because `lost()` fired.
        lost: bool,
    },
    /// An acquire that gave up after [`ACQUIRE_TIMEOUT`].
    Timeout { at: DateTime<Utc> },
    /// An acquire that failed otherwise.
    Failed { at: DateTime<Utc>, error: String },
    /// A guard that was lost before its section could start.
    LostBeforeStart { at: DateTime<Utc> },
    /// A release that failed (other than because the lock was lost).
    ReleaseFailed { at: DateTime<Utc>, error: String },
}

impl Event {
    /// The section, for the history.
    pub fn section(&self) -> Option<Section> {
        match self {
            Self::Section {
                holder,
                token,
                shared,
                start,
                end,
                ..
            } => Some(Section::new(holder, *token, *start, *end).shared(*shared)),
            _ => None,
        }
    }
}

/// The contender process: does nothing unless started by [`Contender::start`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the contender process of the fault tests, which start it themselves"]
async fn process() {
    let Ok(spec) = std::env::var(SPEC_VAR) else {
        return;
    };
    let spec: Spec = serde_json::from_str(&spec).expect("the contender's spec");
    // The test closes our stdin to stop us.
    let stop = CancellationToken::new();
    std::thread::spawn({
        let stop = stop.clone();
        move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.cancel();
        }
    });
    contend(&spec, &stop, |event| {
        println!(
            "{}",
            serde_json::to_string(&event).expect("an event is JSON")
        );
    })
    .await;
}

/// Takes the lock, runs a section, releases it, pauses, until `stop`. Sections are short
/// (10 to 200 ms) but one in ten lasts one to two leases, so that renewals run through the
/// faults.
async fn contend(spec: &Spec, stop: &CancellationToken, mut say: impl FnMut(Event)) {
    let kubeconfig = kube::config::Kubeconfig::read_from(&spec.kubeconfig).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("a client configuration");
    let client = kube::Client::try_from(config).expect("a client");
    let namespace = client.default_namespace().to_owned();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let locker = KubeLocker::new(client, namespace).with_clock(Arc::clone(&clock));
    let lease = Duration::from_millis(spec.lease_ms);
    let template = Lock::new(&spec.lock, locker)
        .with_holder(&spec.holder)
        .with_duration(lease);
    let template = match spec.kind {
        Kind::Semaphore(max) => template.with_max_holders(max),
        Kind::Mutex | Kind::ReadWrite => template,
    };
    let mut rng = fastrand::Rng::new();
    while !stop.is_cancelled() {
        let (lock, shared) = match spec.kind {
            Kind::ReadWrite if rng.u8(..10) < 7 => {
                (template.clone().with_access(Access::Shared), true)
            }
            Kind::ReadWrite => (template.clone().with_access(Access::Exclusive), false),
            Kind::Mutex | Kind::Semaphore(_) => (template.clone(), false),
        };
        let acquired = tokio::select! {
            acquired = lock.acquire_timeout(ACQUIRE_TIMEOUT) => acquired,
            () = stop.cancelled() => break,
        };
        let guard = match acquired {
            Ok(guard) => guard,
            Err(Error::Timeout { .. }) => {
                say(Event::Timeout { at: clock.now() });
                continue;
            }
            Err(err) => {
                say(Event::Failed {
                    at: clock.now(),
                    error: err.to_string(),
                });
                tokio::time::sleep(Duration::from_millis(rng.u64(50..250))).await;
                continue;
            }
        };
        if guard.is_lost() {
            say(Event::LostBeforeStart { at: clock.now() });
            let _ = guard.release().await;
            continue;
        }
        let start = clock.now();
        let work = if spec.careless {
            3 * lease
        } else if rng.u8(..10) == 0 {
            lease + Duration::from_millis(rng.u64(0..=spec.lease_ms))
        } else {
            Duration::from_millis(rng.u64(10..=200))
        };
        say(Event::Started {
            holder: spec.holder.clone(),
            token: guard.token(),
            start,
            planned_ms: u64::try_from(work.as_millis()).unwrap_or(u64::MAX),
        });
        // A section ends when it is done, when the test stops us, or (unless careless) when
        // the lock is lost.
        let lost = if spec.careless {
            tokio::select! {
                () = tokio::time::sleep(work) => {}
                () = stop.cancelled() => {}
            }
            guard.is_lost()
        } else {
            tokio::select! {
                biased;
                () = guard.lost() => true,
                () = tokio::time::sleep(work) => false,
                () = stop.cancelled() => false,
            }
        };
        say(Event::Section {
            holder: spec.holder.clone(),
            token: guard.token(),
            shared,
            start,
            end: clock.now(),
            lost,
        });
        match guard.release().await {
            Ok(()) | Err(Error::Lost { .. }) => {}
            Err(err) => say(Event::ReleaseFailed {
                at: clock.now(),
                error: err.to_string(),
            }),
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..=50))).await;
    }
    // Withdraw a place in the queue that a cancelled acquire left, before exiting.
    let _ = tokio::time::timeout(Duration::from_secs(15), template.settle()).await;
}

/// A contender process, seen from the test.
pub struct Contender {
    child: Child,
    stdin: Option<ChildStdin>,
    reader: tokio::task::JoinHandle<()>,
}

impl Contender {
    /// Starts this test binary again as contender `spec.holder`; its events go to `events`.
    pub fn start(spec: &Spec, events: &Arc<Mutex<Vec<Event>>>) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "contender::process",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
                "-q",
            ])
            .env(
                SPEC_VAR,
                serde_json::to_string(spec).expect("a spec is JSON"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the contender process starts");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("its stdout");
        let events = Arc::clone(events);
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // The test harness's own lines ("running 1 test", ...) are not events.
                if !line.starts_with('{') {
                    continue;
                }
                let event: Event = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("a contender printed {line:?}: {err}"));
                events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(event);
            }
        });
        Self {
            child,
            stdin,
            reader,
        }
    }

    /// Tells it to stop (closes its stdin).
    pub fn stop(&mut self) {
        self.stdin = None;
    }

    /// Waits until it has exited, and all its events are read.
    ///
    /// # Panics
    ///
    /// When it does not exit within `timeout`, or fails.
    pub async fn wait(mut self, timeout: Duration) {
        self.stop();
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("a contender exits once told to")
            .expect("a contender's status");
        assert!(status.success(), "a contender failed: {status}");
        self.reader.await.expect("its events are read");
    }
}
