//! Edges found in review of the redesigned core: races between a clean-up and a retry, writes
//! retried by the client, deadlines and cancellation at every point of a wait, failing writes.
//! Each failed before its fix (the doc comments give the traces).

use std::sync::Arc;
use std::time::Duration;

use lockheed::clock::TokioClock;
use lockheed::testing::{FakeApiServer, Fault, RequestMatcher, Verb};
use lockheed::{Access, KubeLocker, Lock, Locker};

const SECOND: Duration = Duration::from_secs(1);

/// A locker with its own client: another process, as far as the server can tell. All share
/// one wall clock that follows Tokio's paused clock.
fn process(server: &FakeApiServer, token: &str) -> KubeLocker {
    thread_local! {
        static CLOCK: Arc<TokioClock> = Arc::new(TokioClock::new());
    }
    let clock = CLOCK.with(Arc::clone);
    KubeLocker::new(server.client_for_token(token), "default").with_clock(clock)
}

fn by(token: &str) -> RequestMatcher {
    RequestMatcher::any().token(token)
}

/// A waiting acquire whose take loses the race (a 409) and whose re-read then fails
/// transiently (a 500) must back off and keep waiting, as it does for every other transient
/// error ("transient errors make it wait"). The old loop did (`Conflict => continue`, then the
/// read's transient arm); the new `Waiter::take` propagates the compare-and-swap's error with
/// `?`, so the acquire fails.
#[tokio::test(start_paused = true)]
async fn a_transient_error_after_a_lost_race_keeps_the_acquire_waiting() {
    let server = FakeApiServer::start().await.unwrap();
    let alice = Lock::new("race", process(&server, "alice"))
        .with_duration(60 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let bob = tokio::spawn({
        let lock = Lock::new("race", process(&server, "bob")).with_retry_interval(60 * SECOND);
        async move { lock.acquire_timeout(30 * SECOND).await }
    });
    tokio::time::sleep(2 * SECOND).await;
    // Bob's take is answered 409 (someone else wrote first), and the read after it 500.
    server.inject(Fault::status(409).on(by("bob").verb(Verb::Update)));
    server.inject(Fault::status(500).on(by("bob").verb(Verb::Get)));
    alice.release().await.unwrap();
    let taken = bob.await.unwrap();
    assert!(
        taken.is_ok(),
        "a transient error made the waiting acquire fail: {}",
        taken.unwrap_err()
    );
}

/// A waiting writer of a read/write lock announces its intent with a write. If the acquire
/// times out (or is dropped) while that write is in flight, and the write happened, nothing
/// withdraws the intent: `to_write` gives announces `OnUnknown::nothing()`, so new readers are
/// kept out for the intent's lifetime (up to 30 s) by a writer that is gone. With the new
/// `tokio::time::timeout` around the whole wait, the deadline itself cancels the write.
#[tokio::test(start_paused = true)]
async fn a_writer_cancelled_while_announcing_leaves_no_intent_behind() {
    let server = FakeApiServer::start().await.unwrap();
    let reader = Lock::new("rw", process(&server, "r1"))
        .with_access(Access::Shared)
        .try_acquire()
        .await
        .unwrap();
    // The writer's announce is committed, but answered late: after its acquire timed out.
    server.inject(
        Fault::latency(5 * SECOND)
            .after_commit()
            .on(by("w").verb(Verb::Update)),
    );
    let writer = Lock::new("rw", process(&server, "w")).with_access(Access::Exclusive);
    let err = writer.acquire_timeout(SECOND).await.unwrap_err();
    assert!(matches!(err, lockheed::Error::Timeout { .. }), "{err}");
    writer.settle().await;
    server.clear_faults();
    tokio::time::sleep(6 * SECOND).await; // the late answer has come and gone
    let info = process(&server, "x").get("rw").await.unwrap().unwrap();
    assert!(
        info.waiters.is_empty(),
        "the gone writer's place is still recorded: {:?}",
        info.waiters
    );
    // A new reader is not kept out by a writer that gave up.
    let second = Lock::new("rw", process(&server, "r2")).with_access(Access::Shared);
    if let Err(err) = second.try_acquire().await {
        panic!("a new reader waits for a writer that gave up: {err}");
    }
    drop(reader);
}

/// A `MemoryLocker` whose next `fail_writes` writes fail with a transient error before
/// storing anything (a 500 before commit, a refused connection).
#[derive(Debug, Clone)]
struct FailingWrites {
    inner: lockheed::MemoryLocker,
    fail_writes: Arc<std::sync::atomic::AtomicU32>,
    reads: Arc<std::sync::atomic::AtomicU32>,
    writes: Arc<std::sync::atomic::AtomicU32>,
}

impl FailingWrites {
    fn new() -> Self {
        Self {
            inner: lockheed::MemoryLocker::new().with_clock(Arc::new(TokioClock::new())),
            fail_writes: Arc::default(),
            reads: Arc::default(),
            writes: Arc::default(),
        }
    }

    /// How many reads and writes were asked of it so far.
    fn requests(&self) -> (u32, u32) {
        use std::sync::atomic::Ordering;
        (
            self.reads.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
        )
    }

    fn fail_next_writes(&self, n: u32) {
        self.fail_writes
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }
}

impl lockheed::backend::Backend for FailingWrites {
    type Version = u64;

    fn clock(&self) -> Arc<dyn lockheed::clock::Clock> {
        self.inner.clock()
    }

    async fn read(
        &self,
        name: &str,
    ) -> Result<Option<lockheed::backend::Record<u64>>, lockheed::Error> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.read(name).await
    }

    async fn write(
        &self,
        name: &str,
        expected: Option<&u64>,
        state: &lockheed::backend::LockState,
    ) -> Result<lockheed::backend::Written<u64>, lockheed::Error> {
        use std::sync::atomic::Ordering;
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self
            .fail_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(lockheed::Error::Backend {
                object: name.to_owned(),
                transient: true,
                source: "the answer was lost".into(),
            });
        }
        self.inner.write(name, expected, state).await
    }

    async fn read_all(&self) -> Result<lockheed::backend::StoredStates, lockheed::Error> {
        self.inner.read_all().await
    }

    fn changes(&self, name: &str) -> Option<lockheed::backend::Changes<u64>> {
        self.inner.changes(name)
    }
}

/// The clean-up of a take whose outcome is unknown removes "the lease with token T of this
/// holder". When the write did not happen, T is still free: the holder's next acquisition
/// (the obvious retry after a transient error) gets the same token T, and the clean-up, which
/// runs in the background afterwards, removes that new lease. The retry's guard believes it
/// holds the lock while anyone can take it. (The same is true of the old code.)
#[tokio::test(start_paused = true)]
async fn the_clean_up_of_a_failed_try_acquire_spares_the_retry() {
    let locker = FailingWrites::new();
    let lock = Lock::new("retry", locker.clone()).with_holder("me");
    locker.fail_next_writes(1);
    let err = lock.try_acquire().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    // The caller retries at once, as callers of a transient error do.
    let guard = lock.try_acquire().await.unwrap();
    assert_eq!(
        guard.token(),
        1,
        "the failed write took nothing: the same token again"
    );
    lock.settle().await;
    assert!(!guard.is_lost());
    let other = Lock::new("retry", locker.clone()).with_holder("other");
    if let Ok(other) = other.try_acquire().await {
        panic!(
            "two holders: `me` (token {}, not lost) and `other` (token {}); the clean-up \
             removed the retry's lease",
            guard.token(),
            other.token()
        );
    }
}

/// The same through `acquire`: an acquire that times out after an ambiguous take leaves a
/// pending clean-up for token T; the next `acquire` of the same lock takes it with token T,
/// and the clean-up removes that lease.
#[tokio::test(start_paused = true)]
async fn the_clean_up_of_a_timed_out_acquire_spares_the_next_acquire() {
    let locker = FailingWrites::new();
    let lock = Lock::new("retry", locker.clone()).with_holder("me");
    // Every write fails for longer than the acquire waits.
    locker.fail_next_writes(1000);
    let err = lock.acquire_timeout(SECOND).await.unwrap_err();
    assert!(matches!(err, lockheed::Error::Timeout { .. }), "{err}");
    locker.fail_next_writes(0);
    let guard = lock.acquire().await.unwrap();
    lock.settle().await;
    assert!(!guard.is_lost());
    let info = locker.get("retry").await.unwrap().unwrap();
    assert!(
        info.is_held(),
        "the guard with token {} has no lease: {info:?}",
        guard.token()
    );
}

/// A waiter whose writes keep failing (the server answers reads but refuses writes with 5xx,
/// say an admission webhook that is down) should back off exponentially up to its 10 s cap.
/// `Waiter::decide` resets the failure backoff after every successful read, and every failed
/// write is followed by a read, so the delay never grows past its first step (50..100 ms):
/// about 10 writes a second for as long as the outage lasts (the old loop did the same).
/// Each failed write also pushes one more clean-up into `Waiter::pending` (the old loop kept
/// one): when the acquire ends, every one of them is spawned and reads the lock.
#[tokio::test(start_paused = true)]
async fn failing_writes_back_off_and_leave_one_clean_up() {
    let locker = FailingWrites::new();
    let lock = Lock::new("storm", locker.clone()).with_holder("me");
    locker.fail_next_writes(u32::MAX);
    let err = lock.acquire_timeout(20 * SECOND).await.unwrap_err();
    assert!(matches!(err, lockheed::Error::Timeout { .. }), "{err}");
    let (reads, writes) = locker.requests();
    locker.fail_next_writes(0);
    lock.settle().await;
    let (reads_after, _) = locker.requests();
    let clean_up_reads = reads_after - reads;
    // 100 ms doubling to 10 s: about 8 attempts in 20 s; allow twice that.
    assert!(
        writes <= 16 && clean_up_reads <= 2,
        "{writes} writes and {reads} reads in 20 s, then {clean_up_reads} clean-up reads"
    );
}

/// Waiters of one lock in one process take turns (`Changes::turn`). A holder that acquires
/// the lock again (a re-entry, which succeeds at once without waiting) queues behind a local
/// waiter that waits for this very holder: a deadlock until one of them times out. The rules
/// avoid exactly this for shared re-entries (`blockers`: "making it wait for a writer that
/// waits for it would deadlock"), but the turn reintroduces it for every kind. (The old loop
/// took the turn first too.)
#[tokio::test(start_paused = true)]
async fn a_reentry_does_not_wait_for_the_turn_of_a_waiter_it_blocks() {
    let locker = lockheed::MemoryLocker::new().with_clock(Arc::new(TokioClock::new()));
    let mine = Lock::new("turn", locker.clone()).with_holder("me");
    let held = mine.try_acquire().await.unwrap();
    let waiter = tokio::spawn({
        let lock = Lock::new("turn", locker.clone()).with_holder("other");
        async move { lock.acquire().await.map(|g| g.token()) }
    });
    tokio::time::sleep(SECOND).await;
    // try_acquire takes it again at once; acquire should too.
    let again = mine.acquire_timeout(5 * SECOND).await;
    assert!(
        again.is_ok(),
        "a re-entry waited behind a waiter it blocks: {}",
        again.unwrap_err()
    );
    drop((held, again, waiter));
}

/// Cancel safety, swept: an `acquire` (a mutex waiter, or a writer of a read/write lock that
/// waits for a reader) is dropped at every 10 ms of its life, while each request takes time
/// and each write's answer comes late (after the commit). After `settle`, nothing of the
/// dropped acquire is left: no lease, no intent.
async fn drop_everywhere(access: Option<Access>) -> Vec<String> {
    let server = FakeApiServer::start().await.unwrap();
    server.inject(
        Fault::latency(Duration::from_millis(30)).on(RequestMatcher::any().verb(Verb::Get)),
    );
    server.inject(
        Fault::latency(Duration::from_millis(70))
            .after_commit()
            .on(RequestMatcher::any().verb(Verb::Update).verb(Verb::Create)),
    );
    let mut leftovers = Vec::new();
    for step in 0..45u64 {
        let name = format!("sweep-{step}");
        let with = |lock: Lock<KubeLocker>, access: Option<Access>| match access {
            Some(a) => lock.with_access(a),
            None => lock,
        };
        let holder = with(
            Lock::new(&name, process(&server, "holder")).with_duration(10 * SECOND),
            access.map(|_| Access::Shared),
        )
        .try_acquire()
        .await
        .unwrap();
        let lock = with(
            Lock::new(&name, process(&server, "waiter")).with_holder("waiter"),
            access.map(|_| Access::Exclusive),
        );
        let acquire = tokio::spawn({
            let lock = lock.clone();
            async move { lock.acquire().await.map(|g| g.forget()) }
        });
        // The holder lets go at 300 ms; the waiter is dropped at `step` * 10 ms.
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            holder.release().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(step * 10)).await;
        let finished = acquire.is_finished();
        acquire.abort();
        let _ = acquire.await;
        release.await.unwrap();
        lock.settle().await;
        tokio::time::sleep(SECOND).await; // late answers come and go
        let info = process(&server, "x").get(&name).await.unwrap().unwrap();
        let left: Vec<_> = info
            .holders
            .iter()
            .chain(&info.waiters)
            .filter(|h| h.id == "waiter")
            .collect();
        if !finished && !left.is_empty() {
            leftovers.push(format!("dropped at {} ms: {left:?}", step * 10));
        }
    }
    leftovers
}

#[tokio::test(start_paused = true)]
async fn a_mutex_acquire_dropped_anywhere_leaves_nothing() {
    let leftovers = drop_everywhere(None).await;
    assert!(leftovers.is_empty(), "{leftovers:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_writer_acquire_dropped_anywhere_leaves_nothing() {
    let leftovers = drop_everywhere(Some(Access::Shared)).await;
    assert!(leftovers.is_empty(), "{leftovers:#?}");
}

/// Many readers of a read/write lock, in different processes, wait for a writer; when it
/// lets go they may all take the lock together. Each of them that loses a compare-and-swap
/// re-reads and writes again at once, inside one `compare_and_swap`, which gives up after 32
/// conflicts with `Error::Contended` (transient): `Waiter::take` returns it, and `acquire`
/// fails although nobody holds the lock exclusively. About 5 % of 140 readers fail; the
/// spread is random (fastrand), so the count varies. Slow on two cores (30 s): ignored.
#[tokio::test(start_paused = true)]
#[ignore = "slow (30 s on two cores); run with --ignored"]
async fn many_readers_woken_together_all_get_the_lock() {
    let server = FakeApiServer::start().await.unwrap();
    server.inject(
        Fault::latency_between(Duration::from_millis(5), Duration::from_millis(50))
            .on(RequestMatcher::any().verb(Verb::Update).verb(Verb::Get)),
    );
    let writer = Lock::new("readers", process(&server, "w"))
        .with_access(Access::Exclusive)
        .with_duration(60 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let readers: Vec<_> = (0..140)
        .map(|i| {
            let lock = Lock::new("readers", process(&server, &format!("r{i}")))
                .with_access(Access::Shared)
                .with_duration(60 * SECOND);
            tokio::spawn(async move { lock.acquire().await.map(|g| g.forget()) })
        })
        .collect();
    tokio::time::sleep(5 * SECOND).await;
    writer.release().await.unwrap();
    let mut failed = Vec::new();
    for reader in readers {
        if let Err(err) = reader.await.unwrap() {
            failed.push(err.to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} readers failed: {failed:?}",
        failed.len()
    );
}

/// The old loop applied the acquire deadline to the waiting (the turn, sleeps, waits for a
/// change), never to a read or write in flight: a free lock was taken however slow the server
/// was. `Lock::wait` now runs the whole `Waiter::run` under `tokio::time::timeout`, so a
/// timeout shorter than a round trip never takes a free lock, the write it cancels becomes a
/// background clean-up (which races the caller's next attempt, see above), and the error
/// blames "other waiters of this process, or the lock could not be read". kube-lock's `poll`
/// ends an `acquire_timeout` at every polling tick, so every tick that falls during a take
/// cancels it.
#[tokio::test(start_paused = true)]
async fn a_deadline_does_not_cancel_the_write_that_takes_a_free_lock() {
    let server = FakeApiServer::start().await.unwrap();
    let locker = process(&server, "slow");
    server.inject(Fault::latency(2 * SECOND).on(by("slow").verb(Verb::Create)));
    let lock = Lock::new("free", locker.clone());
    match lock.acquire_timeout(SECOND).await {
        Ok(guard) => guard.release().await.unwrap(),
        Err(err) => panic!("a free lock was not taken: {err}"),
    }
}

/// kube's client retries a request answered 503 (its default retry policy). A write that was
/// committed and then answered 503 is sent again with the same resourceVersion and gets 409:
/// `compare_and_swap` takes that for someone else's write, re-reads, and decides again on its
/// own write. For a release, the lease is gone, so `release` fails with `Error::Lost` ("taken
/// over by force, or expired and taken") although it released the lock itself. (The old loop
/// did the same.)
#[tokio::test(start_paused = true)]
async fn a_release_retried_by_the_client_after_its_commit_is_not_lost() {
    let server = FakeApiServer::start().await.unwrap();
    let guard = Lock::new("retried", process(&server, "a"))
        .try_acquire()
        .await
        .unwrap();
    server.inject(
        Fault::status(503)
            .after_commit()
            .on(by("a").verb(Verb::Update)),
    );
    let released = guard.release().await;
    let updates = server
        .requests()
        .iter()
        .filter(|r| r.verb == Verb::Update)
        .map(|r| r.status)
        .collect::<Vec<_>>();
    assert!(
        released.is_ok(),
        "the release was reported as {:?}; the client's updates were answered {updates:?}",
        released.unwrap_err().to_string()
    );
}

/// The same client retry, for a take: the create is committed and answered 503, kube sends it
/// again and gets 409, and `compare_and_swap` disarms the take's clean-up ("a conflict is a
/// known outcome: nothing was written"). If the read after that conflict fails, the error is
/// returned with nothing armed: the lease that was written stays, forever with a zero
/// duration, and nobody holds a guard for it.
#[tokio::test(start_paused = true)]
async fn a_take_retried_by_the_client_after_its_commit_leaves_no_lease() {
    let server = FakeApiServer::start().await.unwrap();
    let locker = process(&server, "a");
    let lock = Lock::new("orphan", locker.clone()).with_duration(Duration::ZERO);
    server.inject(
        Fault::status(503)
            .after_commit()
            .on(by("a").verb(Verb::Create)),
    );
    let attempt = tokio::spawn({
        let lock = lock.clone();
        async move { lock.try_acquire().await.map(|g| g.token()) }
    });
    // Once the first create has been answered, the next read fails.
    while server.counts().get(Verb::Create) == 0 {
        tokio::task::yield_now().await;
    }
    server.inject(Fault::status(500).on(by("a").verb(Verb::Get)));
    let outcome = attempt.await.unwrap();
    lock.settle().await;
    let info = locker.get("orphan").await.unwrap().unwrap();
    let requests: Vec<_> = server
        .requests()
        .iter()
        .map(|r| (r.verb, r.status))
        .collect();
    assert!(
        outcome.is_ok() || !info.is_held(),
        "try_acquire failed ({}) and left its lease: {:?}; requests {requests:?}",
        outcome.unwrap_err(),
        info.holders
    );
}

/// `acquire_timeout` bounds the whole call, the moment it gives the lock's background work
/// (the release of a guard just dropped) included: here that release hangs, the lease stays,
/// and the acquire gives up after its own 200 ms, not after the second it lets the release
/// have first plus its 200 ms.
#[tokio::test(start_paused = true)]
async fn a_timeout_includes_the_wait_for_background_work() {
    let server = FakeApiServer::start().await.unwrap();
    let lock = Lock::new("slow", process(&server, "me")).with_holder("me");
    let guard = lock.try_acquire().await.unwrap();
    // The release's write hangs; later writes go through.
    server.inject(Fault::hang().times(1).on(by("me").verb(Verb::Update)));
    drop(guard);
    let started = tokio::time::Instant::now();
    let next = lock.clone().with_holder("next");
    let err = tokio::time::timeout(
        10 * SECOND,
        next.acquire_timeout(Duration::from_millis(200)),
    )
    .await
    .expect("the acquire returns")
    .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, lockheed::Error::Timeout { .. }), "{err}");
    assert!(took < Duration::from_millis(500), "gave up after {took:?}");
    server.clear_faults();
}
