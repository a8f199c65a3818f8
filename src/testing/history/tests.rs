//! Each check fires on a history that a deliberately broken rule would write, and stays quiet
//! on the histories the real rules write. The broken rules are the real ones with one thing
//! changed (a token not advanced, another holder's lease renewed, a live lease ignored, a
//! handover to the wrong waiter, ...), applied to the states the real rules produced.

// Holders named a, b, c and their tokens read best with the same short names.
#![allow(clippy::many_single_char_names)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{History, Report, Section, Violation};
use crate::rules::{self, Acquire, Judgement, Queue, Request};
use crate::state::LockState;
use crate::state::kind::{Access, Kind};
use lockheed_fake_apiserver::{Commit, Operation};

const LEASE: Duration = Duration::from_secs(10);

fn t(secs: f64) -> DateTime<Utc> {
    let base: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
    #[allow(clippy::cast_possible_truncation)] // Test times in milliseconds.
    let millis = (secs * 1000.0) as i64;
    base + chrono::Duration::milliseconds(millis)
}

/// The commit of `state` by `author` at `at`, as the fake server logs it.
fn commit(revision: u64, at: DateTime<Utc>, author: &str, state: &LockState) -> Commit {
    let operation = if revision == 1 {
        Operation::Create
    } else {
        Operation::Update
    };
    let object = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "lockheed-x",
            "namespace": "default",
            "resourceVersion": revision.to_string(),
            "labels": { "lockheed/lock": "" },
            "annotations": { "lockheed/fencing-token": state.fencing_token.to_string() },
        },
        "data": { "lock": state.to_json() },
    });
    Commit::new(revision, at, operation, "configmaps", object).by(Some(author.to_owned()), None)
}

/// A history being written: each step is a rule's decision (or a broken one) by a holder.
struct Script {
    state: LockState,
    commits: Vec<Commit>,
}

impl Script {
    fn new() -> Self {
        Self {
            state: LockState::empty("x"),
            commits: Vec::new(),
        }
    }

    fn write(&mut self, at: f64, author: &str, state: LockState) {
        let revision = self.commits.len() as u64 + 1;
        self.commits.push(commit(revision, t(at), author, &state));
        self.state = state;
    }

    fn request(holder: &str, kind: Kind, queue: bool) -> Request<'_> {
        Request {
            holder,
            kind,
            duration: LEASE,
            tags: &[],
            reset_tags: false,
            force: None,
            reason: None,
            nonce: "n",
            queue: if queue { Queue::Joins } else { Queue::Respects },
            judgement: Judgement::default(),
        }
    }

    /// `holder` takes the lock (or queues for it) at `at`; returns the token taken.
    fn acquire(&mut self, at: f64, holder: &str, kind: Kind) -> u64 {
        let decided = rules::acquire(
            "x",
            &self.state,
            None,
            Self::request(holder, kind, true),
            t(at),
        );
        match decided.unwrap() {
            Acquire::Take { state, token, .. } => {
                self.write(at, holder, state);
                token
            }
            Acquire::Queue { state, .. } => {
                self.write(at, holder, state);
                0
            }
            Acquire::Busy(_) => panic!("{holder} found the lock busy and queued already"),
        }
    }

    fn renew(&mut self, at: f64, holder: &str, token: u64) {
        let (state, _) = rules::renew("x", &self.state, holder, token, LEASE, t(at)).unwrap();
        self.write(at, holder, state);
    }

    fn release(&mut self, at: f64, holder: &str, token: u64) {
        let state = rules::release(
            &self.state,
            holder,
            token,
            &[],
            false,
            t(at),
            Duration::ZERO,
        )
        .unwrap();
        self.write(at, holder, state);
    }

    fn check(&self, history: History, sections: &[Section]) -> Report {
        let mut history = history.skew_allowance(Duration::ZERO);
        history.commits(self.commits.clone());
        for section in sections {
            history.section(section.clone());
        }
        history.finish()
    }
}

fn section(holder: &str, token: u64, start: f64, end: f64) -> Section {
    Section::new(holder, token, t(start), t(end))
}

/// The names of the violations found, in order.
fn kinds(report: &Report) -> Vec<&'static str> {
    report
        .violations
        .iter()
        .map(|v| match v {
            Violation::Overlap { .. } => "Overlap",
            Violation::TokenOrder { .. } => "TokenOrder",
            Violation::OutsideLease { .. } => "OutsideLease",
            Violation::TooManyHolders { .. } => "TooManyHolders",
            Violation::Unexplained { .. } => "Unexplained",
            Violation::Unreadable { .. } => "Unreadable",
        })
        .collect()
}

/// Alice takes the mutex, renews, releases to Bob who queued, Bob releases.
fn a_valid_mutex_history() -> (Script, Vec<Section>) {
    let mut s = Script::new();
    let a = s.acquire(0.0, "alice", Kind::Mutex);
    s.acquire(1.0, "bob", Kind::Mutex); // queues
    s.renew(3.0, "alice", a);
    s.release(5.0, "alice", a); // hands over to bob
    let b = s.state.leases["bob"].token.unwrap();
    s.release(6.0, "bob", b);
    let sections = vec![section("alice", a, 0.1, 4.9), section("bob", b, 5.1, 5.9)];
    (s, sections)
}

#[test]
fn the_real_rules_write_valid_histories() {
    let (script, sections) = a_valid_mutex_history();
    let report = script.check(History::mutex("default", "x"), &sections);
    report.assert_valid();
    assert_eq!((report.sections, report.commits), (2, 5));

    let mut s = Script::new();
    let sem = Kind::Semaphore(2);
    let a = s.acquire(0.0, "a", sem);
    let b = s.acquire(0.5, "b", sem);
    s.acquire(1.0, "c", sem); // queues
    s.release(2.0, "a", a); // hands over to c
    let c = s.state.leases["c"].token.unwrap();
    s.release(3.0, "b", b);
    s.release(4.0, "c", c);
    let sections = [
        section("a", a, 0.1, 1.9),
        section("b", b, 0.6, 2.9),
        section("c", c, 2.1, 3.9),
    ];
    s.check(History::semaphore("default", "x", 2), &sections)
        .assert_valid();

    let mut s = Script::new();
    let shared = Kind::ReadWrite(Access::Shared);
    let r1 = s.acquire(0.0, "r1", shared);
    let r2 = s.acquire(0.2, "r2", shared);
    s.acquire(0.5, "w", Kind::ReadWrite(Access::Exclusive)); // queues
    s.release(1.0, "r1", r1);
    s.release(2.0, "r2", r2); // hands over to w
    let w = s.state.leases["w"].token.unwrap();
    s.release(3.0, "w", w);
    let sections = [
        section("r1", r1, 0.1, 0.9).shared(true),
        section("r2", r2, 0.3, 1.9).shared(true),
        section("w", w, 2.1, 2.9),
    ];
    s.check(History::read_write("default", "x"), &sections)
        .assert_valid();
}

/// The violations the sections alone show (their leases aside), by name.
fn in_sections(admits: super::Admits, sections: &[Section]) -> Vec<(&'static str, String)> {
    let report = Report {
        violations: super::sections::check(
            admits,
            &mut sections.to_vec(),
            &std::collections::BTreeMap::new(),
        ),
        ..Report::default()
    };
    kinds(&report)
        .into_iter()
        .zip(&report.violations)
        .filter(|(kind, _)| *kind != "OutsideLease")
        .map(|(kind, v)| match v {
            Violation::Overlap { second, .. } | Violation::TokenOrder { later: second, .. } => {
                (kind, second.holder.clone())
            }
            _ => (kind, String::new()),
        })
        .collect()
}

#[test]
fn overlapping_sections_are_found() {
    let (script, _) = a_valid_mutex_history();
    // Bob started before Alice stopped (a guard that ignored lost(), or a broken handover).
    let (a, b) = (script.state.fencing_token - 1, script.state.fencing_token);
    let sections = [section("alice", a, 0.1, 5.5), section("bob", b, 5.1, 5.9)];
    let report = script.check(History::mutex("default", "x"), &sections);
    assert_eq!(kinds(&report), ["Overlap", "OutsideLease"], "{report:?}");
    // Sections that touch do not overlap.
    let touching = [section("a", 1, 0.0, 1.0), section("b", 2, 1.0, 2.0)];
    assert!(in_sections(super::Admits::Mutex, &touching).is_empty());
    // Three at once in a semaphore of two (two at once are fine).
    let three = [
        section("a", 1, 0.0, 3.0),
        section("b", 2, 1.0, 3.0),
        section("c", 3, 2.0, 3.0),
    ];
    assert_eq!(
        in_sections(super::Admits::Semaphore(2), &three),
        [("Overlap", "c".to_owned())]
    );
    assert!(in_sections(super::Admits::Semaphore(3), &three).is_empty());
    // A writer beside a reader; readers together are fine.
    let rw = [
        section("r1", 1, 0.0, 3.0).shared(true),
        section("r2", 2, 0.5, 3.0).shared(true),
        section("w", 3, 1.0, 2.0),
    ];
    assert_eq!(
        in_sections(super::Admits::ReadWrite, &rw),
        [("Overlap", "w".to_owned())]
    );
}

#[test]
fn tokens_out_of_order_are_found() {
    // A mutex: a later section with a lower token (a fencing counter that went back).
    let backwards = [section("a", 5, 0.0, 1.0), section("b", 4, 2.0, 3.0)];
    assert_eq!(
        in_sections(super::Admits::Mutex, &backwards),
        [("TokenOrder", "b".to_owned())]
    );
    // A semaphore: sections may start out of token order, but never share a token.
    let reordered = [section("a", 5, 0.0, 1.0), section("b", 4, 0.5, 3.0)];
    assert!(in_sections(super::Admits::Semaphore(2), &reordered).is_empty());
    let shared_token = [section("a", 5, 0.0, 1.0), section("b", 5, 0.5, 3.0)];
    assert_eq!(
        in_sections(super::Admits::Semaphore(2), &shared_token),
        [("TokenOrder", "b".to_owned())]
    );
    // A read/write lock: a reader after a writer with a token below the writer's, and a
    // writer below a reader before it.
    let rw = [
        section("r1", 2, 0.0, 1.0).shared(true),
        section("w", 3, 1.0, 2.0),
        section("r2", 1, 2.0, 3.0).shared(true),
    ];
    assert_eq!(
        in_sections(super::Admits::ReadWrite, &rw),
        [("TokenOrder", "r2".to_owned())]
    );
    let rw = [
        section("r1", 4, 0.0, 1.0).shared(true),
        section("w", 3, 1.0, 2.0),
    ];
    assert_eq!(
        in_sections(super::Admits::ReadWrite, &rw),
        [("TokenOrder", "w".to_owned())]
    );
}

#[test]
fn sections_outside_their_leases_are_found() {
    let (script, _) = a_valid_mutex_history();
    let history = || History::mutex("default", "x");
    let outside = |sections: &[Section]| {
        let report = script.check(history(), sections);
        report
            .violations
            .iter()
            .map(|v| match v {
                Violation::OutsideLease { why, .. } => why.clone(),
                other => panic!("unexpected: {other}"),
            })
            .collect::<Vec<_>>()
    };
    // Bob's lease was handed over at 5 s and released at 6 s.
    let b = script.state.fencing_token;
    assert!(outside(&[section("bob", b, 5.0, 6.0)]).is_empty());
    assert!(outside(&[section("bob", b, 4.9, 5.5)])[0].starts_with("it started before"));
    assert!(outside(&[section("bob", b, 5.5, 6.1)])[0].starts_with("it ended after"));
    assert!(outside(&[section("carol", b, 5.5, 5.6)])[0].contains("bob's"));
    assert!(outside(&[section("bob", 99, 5.5, 5.6)])[0].starts_with("no committed lease"));
    // A lease that was never renewed ends with its expiry, whoever removes it later.
    let mut s = Script::new();
    let a = s.acquire(0.0, "alice", Kind::Mutex);
    s.acquire(20.0, "bob", Kind::Mutex);
    let report = s.check(history(), &[section("alice", a, 1.0, 10.5)]);
    assert!(matches!(
        &report.violations[..],
        [Violation::OutsideLease { .. }]
    ));
}

/// A state with a lease of `holder` until `until`, next to the others.
fn with_lease(state: &LockState, holder: &str, token: u64, until: f64) -> LockState {
    let mut next = state.clone();
    let mut lease =
        crate::state::Lease::until(holder, crate::state::gotime::GoTime::from(t(until)));
    lease.token = Some(token);
    lease.duration_millis = Some(10_000);
    lease.since = Some(crate::state::gotime::GoTime::from(t(until - 10.0)));
    lease.nonce = Some("n".into());
    next.leases.insert(holder.to_owned(), lease);
    next.fencing_token = next.fencing_token.max(token);
    next
}

#[test]
fn committed_states_with_too_many_live_holders_are_found() {
    // A broken take that ignores a live lease: Bob takes the mutex at 2 s, Alice's lease
    // runs until 10 s.
    let mut s = Script::new();
    let a = s.acquire(0.0, "alice", Kind::Mutex);
    let broken = with_lease(&s.state, "bob", a + 1, 12.0);
    s.write(2.0, "bob", broken);
    let report = s.check(History::mutex("default", "x"), &[]);
    assert_eq!(
        kinds(&report),
        ["TooManyHolders", "Unexplained"],
        "{report:?}"
    );
    assert!(report.violations[0].to_string().contains("alice, bob"));
    // Three live holders of a semaphore of two; the capacity the history knows wins over a
    // stored one that was tampered with.
    let mut s = Script::new();
    let sem = Kind::Semaphore(2);
    s.acquire(0.0, "a", sem);
    s.acquire(0.0, "b", sem);
    let mut broken = with_lease(&s.state, "c", 3, 10.0);
    broken.max_holders = 3;
    s.write(1.0, "c", broken);
    let report = s.check(History::semaphore("default", "x", 2), &[]);
    assert_eq!(
        kinds(&report),
        ["TooManyHolders", "Unexplained"],
        "{report:?}"
    );
    // A writer beside a reader.
    let mut s = Script::new();
    s.acquire(0.0, "r", Kind::ReadWrite(Access::Shared));
    let broken = with_lease(&s.state, "w", 2, 10.0);
    s.write(1.0, "w", broken);
    let report = s.check(History::read_write("default", "x"), &[]);
    assert_eq!(
        kinds(&report),
        ["TooManyHolders", "Unexplained"],
        "{report:?}"
    );
}

#[test]
fn transitions_no_rule_explains_are_found() {
    let history = || History::mutex("default", "x");
    let unexplained = |s: &Script| {
        let report = s.check(history(), &[]);
        assert_eq!(kinds(&report), ["Unexplained"], "{report:?}");
        report.violations[0].to_string()
    };
    // A take that does not advance the fencing counter (a token used twice).
    let mut s = Script::new();
    let a = s.acquire(0.0, "alice", Kind::Mutex);
    s.release(1.0, "alice", a);
    let reused = with_lease(&s.state, "bob", a, 12.0);
    s.write(2.0, "bob", reused);
    assert!(unexplained(&s).contains("by bob"));
    // A renewal of another holder's lease: Bob extends Alice's.
    let mut s = Script::new();
    let a = s.acquire(0.0, "alice", Kind::Mutex);
    let (extended, _) = rules::renew("x", &s.state, "alice", a, LEASE, t(3.0)).unwrap();
    s.write(3.0, "bob", extended);
    unexplained(&s);
    // A renewal of a lease that had ended (and a resurrection is no renewal).
    let mut s = Script::new();
    let a = s.acquire(0.0, "alice", Kind::Mutex);
    let mut late = s.state.clone();
    let lease = late.leases.get_mut("alice").unwrap();
    lease.expires = crate::state::gotime::GoTime::from(t(21.0));
    s.write(11.0, "alice", late);
    assert!(unexplained(&s).contains(&format!("alice#{a}")));
    // A release of someone else's live lease (a release that matched by name alone).
    let mut s = Script::new();
    s.acquire(0.0, "alice", Kind::Mutex);
    let mut removed = s.state.clone();
    removed.leases.clear();
    s.write(2.0, "bob", removed);
    unexplained(&s);
    // A handover to the second waiter instead of the head of the queue.
    let mut s = Script::new();
    let a = s.acquire(0.0, "alice", Kind::Mutex);
    s.acquire(1.0, "bob", Kind::Mutex);
    s.acquire(2.0, "carol", Kind::Mutex);
    let mut skipped = s.state.clone();
    skipped.leases.clear();
    skipped.queue.retain(|e| e.instance_id != "carol");
    let skipped = with_lease(&skipped, "carol", a + 1, 13.0);
    s.write(3.0, "alice", skipped);
    unexplained(&s);
    // The lock's object deleted.
    let mut s = Script::new();
    s.acquire(0.0, "alice", Kind::Mutex);
    let mut deleted = s.commits[0].clone();
    (deleted.revision, deleted.operation) = (2, Operation::Delete);
    s.commits.push(deleted);
    assert!(unexplained(&s).contains("deleted"));
}

#[test]
fn unreadable_states_are_found() {
    let mut s = Script::new();
    s.acquire(0.0, "alice", Kind::Mutex);
    let mut corrupt = s.commits[0].clone();
    corrupt.revision = 2;
    corrupt.object["data"]["lock"] = json!("{not json");
    s.commits.push(corrupt);
    let report = s.check(History::mutex("default", "x"), &[]);
    assert_eq!(kinds(&report), ["Unreadable"], "{report:?}");
    assert!(
        report.violations[0]
            .to_string()
            .contains("default/lockheed-x")
    );
}

#[test]
fn commits_of_other_objects_and_known_clients_are_handled() {
    let (mut script, sections) = a_valid_mutex_history();
    // Another lock's commit is skipped.
    let mut other = script.commits[0].clone();
    other.name = "lockheed-y".into();
    other.object["data"]["lock"] = json!("garbage");
    script.commits.insert(1, other);
    // One process (token "p") ran both holders.
    for commit in &mut script.commits {
        commit.token = Some("p".into());
    }
    let history = History::mutex("default", "x").client("p", ["alice", "bob"]);
    let report = script.check(history, &sections);
    report.assert_valid();
    assert_eq!(report.commits, 5);
    // Told the wrong identities, the replay finds no holder that could have written them.
    let history = History::mutex("default", "x").client("p", ["mallory"]);
    let report = script.check(history, &sections);
    assert!(
        kinds(&report).iter().all(|k| *k == "Unexplained"),
        "{report:?}"
    );
}

/// A waiter that held the lock before (its ended lease still in the state: only takes drop
/// ended leases) is handed the lock: its new lease replaces the ended one. Found by a long
/// run, where the replay missed it (it took only new holders for handovers).
#[test]
fn a_handover_to_a_waiter_with_an_ended_lease_is_explained() {
    let mut start = LockState::semaphore("x", 1, []);
    start = with_lease(&start, "b", 3, 5.0);
    start = with_lease(&start, "a", 5, 20.0);
    let queued = rules::acquire(
        "x",
        &start,
        None,
        Script::request("b", Kind::Semaphore(1), true),
        t(8.0),
    )
    .unwrap();
    let Acquire::Queue { state: queued, .. } = queued else {
        panic!("b queues behind a")
    };
    let mut s = Script::new();
    s.write(8.0, "b", queued);
    // Decided at 10 s, committed at 10.5 s: the replay must find the time from the lease.
    let released = rules::release(&s.state, "a", 5, &[], false, t(10.0), Duration::ZERO).unwrap();
    s.write(10.5, "a", released);
    assert_eq!(s.state.leases["b"].token, Some(6), "handed over to b");
    let report = s.check(History::semaphore("default", "x", 1), &[]);
    // The first commit (from nothing to two leases) is not explained, and is not the point.
    assert!(
        report
            .violations
            .iter()
            .all(|v| matches!(v, Violation::Unexplained { revision: 1, .. })),
        "{report:?}"
    );
}

/// The commits of `script` as a watch sees them: each `late` after it was made, and (with
/// `earliest`) saying when it was made at the earliest.
fn seen_late(script: &Script, late: f64, earliest: Option<f64>) -> Vec<Commit> {
    let ms = |secs: f64| {
        #[allow(clippy::cast_possible_truncation)] // Test times in milliseconds.
        chrono::Duration::milliseconds((secs * 1000.0) as i64)
    };
    script
        .commits
        .iter()
        .map(|c| {
            let mut seen = c.clone();
            seen.at = c.at + ms(late);
            match earliest {
                Some(before) => seen.made_after(c.at - ms(before)),
                None => seen,
            }
        })
        .collect()
}

fn check_commits(history: History, commits: Vec<Commit>, sections: &[Section]) -> Report {
    let mut history = history.skew_allowance(Duration::ZERO);
    history.commits(commits);
    for section in sections {
        history.section(section.clone());
    }
    history.finish()
}

/// Commits seen 30 ms late (by a watch): sections start as soon as their lease is committed,
/// and writers decide on what they read before the watch shows it. Checked as if the times
/// were exact, that is a history of violations; within the windows the commits say or the
/// delay allows, it is valid.
#[test]
fn commits_seen_late_are_checked_within_their_windows() {
    let mut s = Script::new();
    let a = s.acquire(0.0, "alice", Kind::Mutex);
    s.acquire(0.01, "bob", Kind::Mutex); // queues, 10 ms after Alice's take
    s.release(2.0, "alice", a); // hands over to Bob
    let b = s.state.leases["bob"].token.unwrap();
    s.release(3.0, "bob", b);
    let sections = [section("alice", a, 0.0, 2.0), section("bob", b, 2.0, 3.0)];
    check_commits(History::mutex("default", "x"), s.commits.clone(), &sections).assert_valid();

    let late = check_commits(
        History::mutex("default", "x"),
        seen_late(&s, 0.03, None),
        &sections,
    );
    assert_eq!(
        kinds(&late),
        ["Unexplained", "OutsideLease", "OutsideLease"],
        "{late:?}"
    );
    // A delay that covers the watch's, or commits that say when they were made at the
    // earliest.
    let delay = History::mutex("default", "x").commit_delay(Duration::from_millis(30));
    check_commits(delay, seen_late(&s, 0.03, None), &sections).assert_valid();
    let said = seen_late(&s, 0.03, Some(0.0));
    check_commits(History::mutex("default", "x"), said, &sections).assert_valid();
    // A delay shorter than the watch's is not enough.
    let short = History::mutex("default", "x").commit_delay(Duration::from_millis(20));
    assert!(
        !check_commits(short, seen_late(&s, 0.03, None), &sections)
            .violations
            .is_empty()
    );
}

/// The windows of late commits hide no violation that is one whenever the commits were made:
/// a take beside a live lease, a section that started long before its lease, a section that
/// outlasted its lease, a writer whose clock runs ahead of the commit.
#[test]
fn commits_seen_late_still_show_what_is_wrong() {
    let history = || History::mutex("default", "x").commit_delay(Duration::from_millis(100));
    // Bob takes the mutex at 2 s while Alice's lease runs until 10 s.
    let mut s = Script::new();
    let a = s.acquire(0.0, "alice", Kind::Mutex);
    let broken = with_lease(&s.state, "bob", a + 1, 12.0);
    s.write(2.0, "bob", broken);
    let report = check_commits(history(), seen_late(&s, 0.05, None), &[]);
    assert_eq!(
        kinds(&report),
        ["TooManyHolders", "Unexplained"],
        "{report:?}"
    );
    // Sections: one that started a second before its lease's commit, one that ran a second
    // past its lease's end (taken at 5 s, never renewed: it ended at 15 s).
    let mut s = Script::new();
    let a = s.acquire(5.0, "alice", Kind::Mutex);
    let report = check_commits(
        history(),
        seen_late(&s, 0.05, None),
        &[section("alice", a, 4.0, 5.5)],
    );
    assert!(
        matches!(&report.violations[..], [Violation::OutsideLease { why, .. }] if why.starts_with("it started before")),
        "{report:?}"
    );
    let report = check_commits(
        history(),
        seen_late(&s, 0.05, None),
        &[section("alice", a, 5.1, 16.0)],
    );
    assert!(
        matches!(&report.violations[..], [Violation::OutsideLease { why, .. }] if why.starts_with("it ended after")),
        "{report:?}"
    );
    // A take stamped after the commit was seen: a writer whose clock runs ahead. The delay
    // widens a window towards the past only.
    let mut s = Script::new();
    s.acquire(1.0, "alice", Kind::Mutex);
    let mut ahead = s.commits.clone();
    ahead[0].at = t(0.5);
    let report = check_commits(history(), ahead, &[]);
    assert_eq!(kinds(&report), ["Unexplained"], "{report:?}");
}
