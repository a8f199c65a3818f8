//! Liveness under faults (issue 18): a release that races a waiter's queueing costs no read,
//! a waiter whose watch breaks keeps looking, and a handover its recipient does not see passes
//! on. Every process of a test has its own client; time runs on Tokio's paused clock, which
//! the lockers' clocks follow.

use std::sync::Arc;
use std::time::Duration;

use lockheed::clock::{Clock as _, TokioClock};
use lockheed::testing::history::{History, Section};
use lockheed::testing::{FakeApiServer, Fault, RequestMatcher, Verb};
use lockheed::{KubeLocker, Lock, LockGuard, Locker as _};
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// The wall clock every process of a test shares (and the server, for its commit log).
fn clock() -> Arc<TokioClock> {
    thread_local! {
        static CLOCK: Arc<TokioClock> = Arc::new(TokioClock::new());
    }
    CLOCK.with(Arc::clone)
}

/// A locker with its own client (another process).
fn process(server: &FakeApiServer, token: &str) -> KubeLocker {
    KubeLocker::new(server.client_for_token(token), "default").with_clock(clock())
}

/// A server on the test's clock that logs its commits, for the history checker.
async fn logged_server() -> FakeApiServer {
    FakeApiServer::builder()
        .clock(clock())
        .commit_log_unbounded()
        .start()
        .await
        .unwrap()
}

/// Holds `guard` for `hold`, records the section, and releases it.
async fn section(guard: LockGuard<KubeLocker>, hold: Duration) -> Section {
    let start = clock().now();
    tokio::time::sleep(hold).await;
    let section = Section::new(guard.holder(), guard.token(), start, clock().now());
    guard.release().await.unwrap();
    section
}

/// Who waits for lock `name`, as another process reads it.
async fn waiters(server: &FakeApiServer, name: &str) -> Vec<String> {
    let info = process(server, "observer")
        .get(name)
        .await
        .unwrap()
        .unwrap();
    info.waiters.into_iter().map(|w| w.id).collect()
}

/// `holder`'s lock `name` in its own process, with 30 s leases.
fn lock(server: &FakeApiServer, name: &str, holder: &str) -> Lock<KubeLocker> {
    Lock::new(name, process(server, holder))
        .with_holder(holder)
        .with_duration(30 * SECOND)
}

/// The holder's watch is slow to come back after a close, so its view of the lock still lacks
/// the place a waiter just took when it releases: its write is refused. The watch then
/// delivers the waiter's write, and the release is decided again on that, handing the lock
/// over, without reading the lock (the old code read it: one GET more per race).
#[tokio::test(start_paused = true)]
async fn a_release_that_meets_a_newer_queue_write_does_not_read_the_lock() {
    let server = FakeApiServer::start().await.unwrap();
    // Taken by a waiting acquire, so that the holder's process watches the lock.
    let held = lock(&server, "race", "holder").acquire().await.unwrap();
    server.inject(
        Fault::latency(50 * MS)
            .always()
            .on(RequestMatcher::any().token("holder").verb(Verb::Watch)),
    );
    server.close_watches();
    let waiter = lock(&server, "race", "waiter");
    let waiter = tokio::spawn(async move { waiter.acquire().await });
    // The waiter has queued; the holder's watch is not back yet.
    tokio::time::sleep(10 * MS).await;
    assert_eq!(waiters(&server, "race").await, ["waiter"]);
    server.reset_counters();
    held.release().await.unwrap();
    let counts = server.counts();
    assert_eq!(
        counts.get(Verb::Get),
        0,
        "the release read the lock: {counts:?}"
    );
    assert_eq!(
        counts.get(Verb::Update),
        2,
        "refused, then handed over: {counts:?}"
    );
    let guard = waiter.await.unwrap().unwrap();
    assert_eq!(guard.token(), 2);
    guard.release().await.unwrap();
}

/// A waiter's watch breaks and cannot come back (every watch request of its process fails):
/// the waiter reads the lock at once, and keeps reading it while the watch is down, so that
/// the lock handed over to it then is taken within about its retry interval (1 s). The old
/// code waited for the watch, and saw the handover only when it refreshed its place in the
/// queue (half of its 30 s lease).
#[tokio::test(start_paused = true)]
async fn a_waiter_whose_watch_breaks_keeps_reading_the_lock() {
    let server = FakeApiServer::start().await.unwrap();
    let held = lock(&server, "broken", "holder")
        .try_acquire()
        .await
        .unwrap();
    let waiter = lock(&server, "broken", "waiter");
    let waiter = tokio::spawn(async move {
        let guard = waiter.acquire().await.unwrap();
        (tokio::time::Instant::now(), guard)
    });
    tokio::time::sleep(SECOND).await;
    assert_eq!(waiters(&server, "broken").await, ["waiter"]);
    server.inject(
        Fault::status(500)
            .always()
            .on(RequestMatcher::any().token("waiter").verb(Verb::Watch)),
    );
    server.close_watches();
    // Long enough for the reads to have backed off to the retry interval.
    tokio::time::sleep(5 * SECOND).await;
    let released = tokio::time::Instant::now();
    held.release().await.unwrap();
    let (taken, guard) = waiter.await.unwrap();
    assert!(
        taken - released <= 1200 * MS,
        "the handover was seen after {:?}",
        taken - released
    );
    assert_eq!(guard.token(), 2);
    assert!(
        server.faults_injected()["status 500"] > 0,
        "the watch did fail"
    );
    guard.release().await.unwrap();
}

/// A waiter whose watch is down and whose reads fail ten times in a row (the 5xx a poll meets
/// when the server is in trouble) backs off no further than its retry interval (1 s): once the
/// reads succeed again, it sees the lock handed over to it within a second. The old code backed
/// off to 10 s between tries, and took the lock some 20 s and more after its release.
#[tokio::test(start_paused = true)]
async fn a_waiter_whose_reads_keep_failing_backs_off_no_further_than_its_retry_interval() {
    let server = FakeApiServer::start().await.unwrap();
    let held = lock(&server, "failing", "holder")
        .try_acquire()
        .await
        .unwrap();
    let waiter = lock(&server, "failing", "waiter");
    let waiter = tokio::spawn(async move { waiter.acquire().await.unwrap() });
    tokio::time::sleep(SECOND).await;
    let waiter_reads = || RequestMatcher::any().token("waiter");
    server.inject(
        Fault::status(500)
            .always()
            .on(waiter_reads().verb(Verb::Watch)),
    );
    server.inject(
        Fault::status(500)
            .times(10)
            .on(waiter_reads().verb(Verb::Get)),
    );
    server.close_watches();
    let released = tokio::time::Instant::now();
    held.release().await.unwrap();
    let guard = waiter.await.unwrap();
    // Ten failures a second apart at most, then the read that sees the handover.
    let waited = released.elapsed();
    assert!(waited < 10 * SECOND, "taken {waited:?} after the release");
    let failed = server.faults_injected()["status 500"];
    assert!(failed > 10, "the reads and the watch did fail: {failed}");
    guard.release().await.unwrap();
}

/// The recipient of a handover never sees it (its process is cut off: no request, no watch
/// event gets through). The handed lease lasts the claim window (15 s of its 30 s lease) and
/// nobody claims it, so the next waiter takes the lock once the window and the skew
/// allowance (2 s) have passed: 17 s after the release, where the old code kept everyone out
/// for the whole lease and the allowance (32 s). Once back, the blind waiter queues again and
/// takes its turn; the history holds.
#[tokio::test(start_paused = true)]
async fn a_blind_recipients_handover_passes_on_after_the_claim_window() {
    let server = logged_server().await;
    let first = lock(&server, "blind", "a").try_acquire().await.unwrap();
    let mut turns = Vec::new();
    for holder in ["b", "c"] {
        let waiter = lock(&server, "blind", holder);
        turns.push(tokio::spawn(async move {
            let guard = waiter.acquire().await.unwrap();
            let taken = Instant::now();
            (taken, section(guard, SECOND).await)
        }));
        tokio::time::sleep(SECOND).await;
    }
    assert_eq!(waiters(&server, "blind").await, ["b", "c"]);
    server.blackhole_client("b");
    let released = Instant::now();
    let first = section(first, Duration::ZERO).await;
    let c = turns.pop().unwrap();
    let (taken, c) = c.await.unwrap();
    let passed_on = taken - released;
    assert!(
        (17 * SECOND..18 * SECOND).contains(&passed_on),
        "the next waiter took the lock {passed_on:?} after the release"
    );
    assert_eq!(
        (c.holder.as_str(), c.token),
        ("c", 3),
        "b's handed token was 2"
    );
    server.heal_client("b");
    let (_, b) = turns.pop().unwrap().await.unwrap();
    assert_eq!((b.holder.as_str(), b.token), ("b", 4), "b queued again");
    let mut history = History::mutex("default", "blind");
    history.commits(server.commits());
    for section in [first, c, b] {
        history.section(section);
    }
    history.finish().assert_valid();
}

/// The recipient of a handover sees it too late to trust the handed lease (its process was
/// cut off for 13 s, beyond the 12 s it would trust the 15 s claim window): the lease is still
/// there (nobody passed the lock on yet), so it claims the lock with a write of its own, a
/// new acquisition with the next token, and runs its section on that, at once.
#[tokio::test(start_paused = true)]
async fn a_recipient_that_sees_its_handover_late_claims_it_with_a_write() {
    let server = logged_server().await;
    let first = lock(&server, "late", "a").try_acquire().await.unwrap();
    let waiter = lock(&server, "late", "b");
    let waiter = tokio::spawn(async move {
        let guard = waiter.acquire().await.unwrap();
        let taken = Instant::now();
        (taken, section(guard, SECOND).await)
    });
    tokio::time::sleep(SECOND).await;
    server.blackhole_client_for("b", 13 * SECOND);
    let released = Instant::now();
    let first = section(first, Duration::ZERO).await;
    let (taken, b) = waiter.await.unwrap();
    let waited = taken - released;
    assert!(
        (13 * SECOND..14 * SECOND).contains(&waited),
        "b took the lock {waited:?} after the release"
    );
    assert_eq!(
        b.token, 3,
        "claimed with a write of its own (handed token 2)"
    );
    let mut history = History::mutex("default", "late");
    history.commits(server.commits());
    for section in [first, b] {
        history.section(section);
    }
    history.finish().assert_valid();
}

/// A holder that never renews (renewal turned off) still claims a lease handed over to it,
/// once: its section may outlast the claim window (15 s) and keep the lock for the whole lease.
#[tokio::test(start_paused = true)]
async fn a_handed_lease_is_claimed_even_without_renewals() {
    let server = FakeApiServer::start().await.unwrap();
    let first = lock(&server, "once", "a").try_acquire().await.unwrap();
    let waiter = lock(&server, "once", "b").with_renew_interval(Duration::ZERO);
    let waiter = tokio::spawn(async move { waiter.acquire().await.unwrap() });
    tokio::time::sleep(SECOND).await;
    first.release().await.unwrap();
    let guard = waiter.await.unwrap();
    tokio::time::sleep(20 * SECOND).await;
    assert!(!guard.is_lost(), "the handed lease was claimed");
    let held = process(&server, "observer")
        .get("once")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.holders[0].id, "b");
    guard.release().await.unwrap();
}

/// A waiter whose writes keep failing (every refresh of its place meets a 500, so it backs off
/// towards 10 s) still sees the lock handed over to it through its watch, and takes it at once
/// instead of sitting out its backoff.
#[tokio::test(start_paused = true)]
async fn a_waiter_backing_off_after_failed_writes_takes_its_handover_at_once() {
    let server = FakeApiServer::start().await.unwrap();
    let held = lock(&server, "backoff", "holder")
        .try_acquire()
        .await
        .unwrap();
    let waiter = lock(&server, "backoff", "waiter");
    let waiter = tokio::spawn(async move {
        let guard = waiter.acquire().await.unwrap();
        (Instant::now(), guard)
    });
    tokio::time::sleep(SECOND).await;
    assert_eq!(waiters(&server, "backoff").await, ["waiter"]);
    let writes = RequestMatcher::any().token("waiter").verb(Verb::Update);
    server.inject(Fault::status(500).always().on(writes));
    // The place is refreshed from 15 s on, and every refresh fails: the backoff grows (to
    // seconds by 25 s, before the place would end at 31 s).
    tokio::time::sleep(24 * SECOND).await;
    assert!(server.faults_injected()["status 500"] >= 5);
    let released = Instant::now();
    held.release().await.unwrap();
    let waited = tokio::time::timeout(10 * SECOND, waiter).await;
    let (taken, guard) = waited.expect("the waiter takes its turn").unwrap();
    assert!(
        taken - released < SECOND,
        "taken {:?} after the release",
        taken - released
    );
    server.clear_faults();
    guard.release().await.unwrap();
}

/// A waiter refreshes its place just as the lock is handed over to it: its write loses the race
/// to the release. Decided again on what the release wrote, it takes the lock handed over to it
/// (token 2) instead of deciding as a newcomer would: the old code took the lock again with a
/// write of its own (token 3), or, once the handed lease had ended by its clock, queued behind
/// the others and left the lock idle.
#[tokio::test(start_paused = true)]
async fn a_waiter_whose_write_loses_the_race_to_its_handover_takes_it() {
    let server = FakeApiServer::start().await.unwrap();
    let held = lock(&server, "race-handed", "holder")
        .try_acquire()
        .await
        .unwrap();
    let waiter = lock(&server, "race-handed", "waiter");
    let waiter = tokio::spawn(async move { waiter.acquire().await.unwrap() });
    // The waiter refreshes its place (30 s) after 15 s; that write is slow to arrive.
    let writes = RequestMatcher::any().token("waiter").verb(Verb::Update);
    tokio::time::sleep(SECOND).await;
    server.inject(Fault::latency(100 * MS).always().on(writes));
    tokio::time::sleep(14 * SECOND + 50 * MS).await;
    held.release().await.unwrap();
    let guard = waiter.await.unwrap();
    assert_eq!(guard.token(), 2, "the lease handed over");
    server.clear_faults();
    guard.release().await.unwrap();
}

/// A waiter whose write is held back (here the refresh of its place answered 10 s late; in
/// issue 18's faults, a 429 that kube's client retried after a second, twice) takes the lock
/// handed over to it meanwhile as its feed shows it, without waiting for the write: the
/// write, decided on the lock before the handover, is refused when it lands, and removes
/// nothing. Before, the waiter saw its handover only once the write came back.
#[tokio::test(start_paused = true)]
async fn a_waiter_whose_write_is_held_back_takes_its_handover_at_once() {
    let server = logged_server().await;
    let held = lock(&server, "held-back", "holder")
        .try_acquire()
        .await
        .unwrap();
    let held_section = clock().now();
    let waiter = lock(&server, "held-back", "waiter");
    let waiter = tokio::spawn(async move {
        let guard = waiter.acquire().await.unwrap();
        (Instant::now(), guard)
    });
    tokio::time::sleep(SECOND).await;
    assert_eq!(waiters(&server, "held-back").await, ["waiter"]);
    // The place is refreshed from 15 s on: that write takes 10 s.
    let writes = RequestMatcher::any().token("waiter").verb(Verb::Update);
    server.inject(Fault::latency(10 * SECOND).on(writes).times(1));
    tokio::time::sleep(16 * SECOND).await;
    assert_eq!(server.faults_injected().get("latency").copied(), Some(1));
    let released = Instant::now();
    let holder_section_token = held.token();
    let holder_section = Section::new("holder", held.token(), held_section, clock().now());
    held.release().await.unwrap();
    let waited = tokio::time::timeout(20 * SECOND, waiter).await;
    let (taken, guard) = waited.expect("the waiter takes its turn").unwrap();
    assert!(
        taken - released < SECOND,
        "taken {:?} after the release",
        taken - released
    );
    // The write held back lands, refused; the handed lease stays the waiter's.
    tokio::time::sleep(10 * SECOND).await;
    assert!(!guard.is_lost(), "the guard still holds the lock");
    let token = guard.token();
    let section = section(guard, MS).await;
    assert_eq!(token, holder_section_token + 1, "the handed token");
    let mut history = History::mutex("default", "held-back");
    history.commits(server.commits());
    history.section(holder_section);
    history.section(section);
    history.finish().assert_valid();
}

/// A waiter whose own write takes the lock, and whose answer is late (10 s after the commit),
/// sees its write on its feed and goes on at once: the lease is its own, and nothing removes
/// it, neither then nor when the late answer comes.
#[tokio::test(start_paused = true)]
async fn a_waiter_that_sees_its_own_take_before_the_answer_keeps_the_lease() {
    let server = logged_server().await;
    let crashed = lock(&server, "own-take", "crashed")
        .try_acquire()
        .await
        .unwrap();
    let waiter = lock(&server, "own-take", "waiter");
    let waiter = tokio::spawn(async move {
        let guard = waiter.acquire().await.unwrap();
        (clock().now(), guard)
    });
    tokio::time::sleep(SECOND).await;
    assert_eq!(waiters(&server, "own-take").await, ["waiter"]);
    let expires = crashed.expires().await.unwrap();
    crashed.forget();
    // The waiter refreshes its place at 15 s and 30 s; the lease ends at 30 s, and the skew
    // allowance (2 s) after it the waiter takes the lock: that answer comes 10 s late.
    tokio::time::sleep(31 * SECOND).await;
    let writes = RequestMatcher::any().token("waiter").verb(Verb::Update);
    server.inject(
        Fault::latency(10 * SECOND)
            .after_commit()
            .on(writes)
            .times(1),
    );
    let (taken, guard) = waiter.await.unwrap();
    let injected = server.faults_injected();
    assert_eq!(
        injected.values().sum::<u64>(),
        1,
        "{injected:?} at {taken}, lease to {expires}"
    );
    let late = (taken - expires).to_std().unwrap();
    assert!(late < 3 * SECOND, "taken {late:?} after the lease ended");
    tokio::time::sleep(15 * SECOND).await;
    assert!(!guard.is_lost(), "the guard lost its lease");
    let info = process(&server, "observer")
        .get("own-take")
        .await
        .unwrap()
        .unwrap();
    let holders: Vec<_> = info.holders.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(holders, ["waiter"]);
    guard.release().await.unwrap();
}

/// A release whose write meets 429s (kube's client waits out each `Retry-After`, a second)
/// gives a try up after a tenth of the lease (400 ms here) and makes it again: the lock is
/// handed over in well under the two seconds the client would have waited (issue 18's gaps of
/// 2 to 4 s behind chains of 429s).
#[tokio::test(start_paused = true)]
async fn a_release_held_back_by_429s_tries_again_in_a_tenth_of_the_lease() {
    let server = logged_server().await;
    let four_seconds = |holder: &str| lock(&server, "throttled", holder).with_duration(4 * SECOND);
    let held = four_seconds("holder").try_acquire().await.unwrap();
    let waiter = four_seconds("waiter");
    let waiter = tokio::spawn(async move {
        let guard = waiter.acquire().await.unwrap();
        (Instant::now(), guard)
    });
    tokio::time::sleep(100 * MS).await;
    assert_eq!(waiters(&server, "throttled").await, ["waiter"]);
    let writes = RequestMatcher::any().token("holder").verb(Verb::Update);
    server.inject(Fault::too_many_requests(200 * MS).on(writes).times(2));
    let released = Instant::now();
    held.release().await.unwrap();
    let release_took = released.elapsed();
    let (taken, guard) = waiter.await.unwrap();
    assert_eq!(server.faults_injected().values().sum::<u64>(), 2);
    assert!(
        release_took < 1200 * MS,
        "the release took {release_took:?}"
    );
    assert!(
        taken - released < 1200 * MS,
        "taken {:?} after",
        taken - released
    );
    guard.release().await.unwrap();
}
