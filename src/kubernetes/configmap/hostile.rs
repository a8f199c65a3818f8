//! Hostile input: property tests of everything that reads what the cluster holds. Random
//! documents, and documents mutated from the example objects of `tests/fixtures` (copies of
//! the shared formats) and from states this crate writes, go through lockheed's state
//! decoder, kube-lock's annotation decoder, the fencing and queue annotations, `Condition`'s
//! JSON, and then the locking rules. Nothing may panic: a document decodes, or is a typed
//! error that names the object it came from; what decodes can be written back and read again
//! unchanged, and the rules decide on it without panicking.
//!
//! Each property runs `PROPTEST_CASES` cases (4096 unless set).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::Format;
use super::keys::{FENCING_ANNOTATION, KUBE_LOCK_ANNOTATION, QUEUE_ANNOTATION, STATE_KEY};
use crate::condition::Condition;
use crate::error::Error;
use crate::info::LockInfo;
use crate::rules::{self, Judgement, Queue, Request};
use crate::state::LockState;
use crate::state::kind::{Access, Kind};

const OBJECT: &str = "default/lockheed-x";

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(4096);
    ProptestConfig {
        cases,
        // Failures are reported with their smallest case; nothing is written to the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A fixture's ConfigMap.
fn fixture(json: &str) -> ConfigMap {
    serde_json::from_str(json).expect("the fixtures are ConfigMaps")
}

/// The example objects, as the fixtures hold them.
fn fixtures() -> Vec<ConfigMap> {
    [
        include_str!("../../../tests/fixtures/lockheed-created-never-acquired.json"),
        include_str!("../../../tests/fixtures/lockheed-held.json"),
        include_str!("../../../tests/fixtures/lockheed-expired.json"),
        include_str!("../../../tests/fixtures/lockheed-no-expiry.json"),
        include_str!("../../../tests/fixtures/lockheed-reserved-by-go-client.json"),
        include_str!("../../../tests/fixtures/lockheed-precreated-empty.json"),
        include_str!("../../../tests/fixtures/lockheed-corrupt.json"),
        include_str!("../../../tests/fixtures/kube-lock-held.json"),
        include_str!("../../../tests/fixtures/kube-lock-empty-max3.json"),
        include_str!("../../../tests/fixtures/kube-lock-precreated.json"),
    ]
    .into_iter()
    .map(fixture)
    .collect()
}

/// A state with every key this crate writes: leases with tokens, nonces, durations, reasons
/// and shared holders, a queue, tags, the counter, a semaphore's capacity, unknown keys.
const RICH_STATE: &str = r#"{"name":"x","lockType":"rwlock","leases":{"r1":{"instanceID":"r1","expires":"2026-11-22T10:00:30.5+01:00","durationMillis":30000,"fencingToken":7,"since":"2026-11-22T09:00:00Z","reason":"backup","shared":true,"nonce":"00ff","future":1}},"tags":["db","prod"],"fencingToken":7,"maxHolders":0,"queue":[{"instanceID":"w","expires":"2026-11-22T10:00:30Z","durationMillis":30000,"since":"2026-11-22T10:00:00Z","leaseMillis":30000,"reason":"migrate","tags":["t"],"resetTags":true}],"fromTheFuture":{"x":[1,2]}}"#;

/// The JSON documents the mutations start from: each fixture's state or annotation, and
/// states and annotations this crate writes.
fn seeds() -> Vec<String> {
    let mut seeds = vec![
        RICH_STATE.to_owned(),
        r#"{"name":"x","lockType":"semaphore","maxHolders":3,"leases":null}"#.to_owned(),
        r#"{"max":2,"holders":{"a":{"date":"2018-08-19T19:14:24Z","reason":""}},"later":true}"#
            .to_owned(),
        r#"[{"instanceID":"w","expires":"2026-11-22T10:00:30Z","since":"2026-11-22T10:00:00Z"}]"#
            .to_owned(),
    ];
    for cm in fixtures() {
        seeds.extend(cm.data.into_iter().flatten().map(|(_, v)| v));
        seeds.extend(
            cm.metadata
                .annotations
                .into_iter()
                .flatten()
                .map(|(_, v)| v),
        );
    }
    seeds
}

/// The keys the formats know, so that random documents reach deep into the decoders.
const KEYS: &[&str] = &[
    "name",
    "lockType",
    "leases",
    "tags",
    "fencingToken",
    "maxHolders",
    "queue",
    "instanceID",
    "expires",
    "durationMillis",
    "since",
    "reason",
    "shared",
    "nonce",
    "leaseMillis",
    "resetTags",
    "max",
    "holders",
    "date",
    "x",
    "",
];

/// Strings with what breaks parsers: times (valid, odd and invalid), numbers as text, long
/// runs, control characters, quotes, backslashes, emoji, invalid surrogates as escapes.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("2026-11-22T10:00:30.123456789Z".to_owned()),
        Just("9999-12-31T23:59:59Z".to_owned()),
        Just("0000-01-01T00:00:00+23:59".to_owned()),
        Just("2026-02-30T25:61:61Z".to_owned()),
        Just("2018-08-19T19:14:24Z".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("-1".to_owned()),
        Just("mutex".to_owned()),
        Just("semaphore".to_owned()),
        Just("rwlock".to_owned()),
        Just("\u{0}\u{1b}[31m\"\\\u{202e}🔒".to_owned()),
        "[a-z0-9-]{0,12}",
        any::<String>(),
        (1usize..5000).prop_map(|n| "é".repeat(n)),
    ]
}

/// Random JSON values, mostly of the shapes the formats use.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        odd_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner.clone()), 0..8).prop_map(
                |entries| {
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| ((*k).to_owned(), v))
                            .collect::<Map<_, _>>(),
                    )
                }
            ),
            prop::collection::vec((odd_string(), inner), 0..4)
                .prop_map(|entries| { Value::Object(entries.into_iter().collect::<Map<_, _>>()) }),
        ]
    })
}

/// One change to a document: its text (bytes flipped, cut, inserted), or its structure (a
/// node replaced by a random value, a key removed).
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, byte: u8 },
    Cut { from: usize, len: usize },
    Insert { at: usize, text: String },
    Replace { path: Vec<usize>, with: Value },
    Remove { path: Vec<usize> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let path = prop::collection::vec(any::<usize>(), 1..5);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        (any::<usize>(), 1usize..40).prop_map(|(from, len)| Mutation::Cut { from, len }),
        (
            any::<usize>(),
            prop_oneof![
                Just("{".to_owned()),
                Just("\"".to_owned()),
                Just("null".to_owned()),
                Just(",".to_owned()),
                Just("\\u0000".to_owned()),
                odd_string()
            ]
        )
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        (path.clone(), json_value()).prop_map(|(path, with)| Mutation::Replace { path, with }),
        path.prop_map(|path| Mutation::Remove { path }),
    ]
}

/// The node at `path` (each step an index into the children of an array or object, modulo
/// their number), and its parent's key for it.
fn node<'v>(value: &'v mut Value, path: &[usize]) -> &'v mut Value {
    let Some((step, rest)) = path.split_first() else {
        return value;
    };
    let children = match &*value {
        Value::Array(items) => items.len(),
        Value::Object(map) => map.len(),
        _ => 0,
    };
    if children == 0 {
        return value;
    }
    let child = match value {
        Value::Array(items) => &mut items[step % children],
        Value::Object(map) => map
            .values_mut()
            .nth(step % children)
            .expect("an index below the length"),
        _ => unreachable!("only arrays and objects have children"),
    };
    node(child, rest)
}

/// `seed` changed by `mutations`, in order.
fn mutate(seed: &str, mutations: &[Mutation]) -> String {
    let mut text = seed.to_owned();
    for mutation in mutations {
        let mut bytes = text.into_bytes();
        let at = |i: usize| if bytes.is_empty() { 0 } else { i % bytes.len() };
        match mutation {
            Mutation::Flip { at: i, byte } => {
                let i = at(*i);
                if let Some(b) = bytes.get_mut(i) {
                    *b = *byte;
                }
            }
            Mutation::Cut { from, len } => {
                let from = at(*from);
                let to = (from + len).min(bytes.len());
                bytes.drain(from..to);
            }
            Mutation::Insert { at: i, text } => {
                let i = at(*i);
                bytes.splice(i..i, text.bytes());
            }
            Mutation::Replace { path, with } => {
                if let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) {
                    *node(&mut value, path) = with.clone();
                    bytes = value.to_string().into_bytes();
                }
            }
            Mutation::Remove { path } => {
                if let Ok(mut value) = serde_json::from_slice::<Value>(&bytes)
                    && let Some((last, parent)) = path.split_last()
                {
                    match node(&mut value, parent) {
                        Value::Object(map) if !map.is_empty() => {
                            let key = map.keys().nth(last % map.len()).cloned();
                            key.map(|k| map.remove(&k));
                        }
                        Value::Array(items) if !items.is_empty() => {
                            let i = last % items.len();
                            items.remove(i);
                        }
                        _ => {}
                    }
                    bytes = value.to_string().into_bytes();
                }
            }
        }
        // Flips and cuts may leave invalid UTF-8: the API server stores strings, so keep what
        // a string can hold.
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// A document: random, or a seed mutated one to four times.
fn document() -> impl Strategy<Value = String> {
    let seeds = seeds();
    prop_oneof![
        1 => json_value().prop_map(|v| v.to_string()),
        1 => any::<String>(),
        4 => (prop::sample::select(seeds), prop::collection::vec(mutation(), 1..5))
            .prop_map(|(seed, mutations)| mutate(&seed, &mutations)),
    ]
}

/// A ConfigMap of lock `x` with `state` where the format keeps it, and annotations.
fn configmap(format: Format, state: &str, fencing: Option<&str>, queue: Option<&str>) -> ConfigMap {
    let mut annotations = BTreeMap::new();
    let mut data = BTreeMap::new();
    match format {
        Format::Lockheed => {
            data.insert(STATE_KEY.to_owned(), state.to_owned());
        }
        Format::KubeLock => {
            annotations.insert(KUBE_LOCK_ANNOTATION.to_owned(), state.to_owned());
        }
    }
    if let Some(token) = fencing {
        annotations.insert(FENCING_ANNOTATION.to_owned(), token.to_owned());
    }
    if let Some(queue) = queue {
        annotations.insert(QUEUE_ANNOTATION.to_owned(), queue.to_owned());
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("lockheed-x".into()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// Decodes what `cm` holds as `format` does: a record, or an error that names the object.
/// What decodes is encoded back (or refused with a typed error) and decodes the same.
fn decodes_or_names_the_object(
    format: Format,
    cm: ConfigMap,
) -> Result<Option<LockState>, TestCaseError> {
    match format.decode("x", OBJECT, cm) {
        Ok(record) => {
            let state = record.state;
            match format.encode("x", OBJECT, record.version, &state) {
                Ok(written) => {
                    let again = format.decode("x", OBJECT, written).map_err(|e| {
                        TestCaseError::fail(format!("written back, unreadable: {e}"))
                    })?;
                    prop_assert_eq!(&again.state, &state, "written back, read differently");
                }
                Err(Error::InvalidConfig { .. } | Error::TooLarge { .. }) => {}
                Err(other) => return Err(TestCaseError::fail(format!("encode: {other}"))),
            }
            Ok(Some(state))
        }
        Err(Error::Corrupt { object, reason }) => {
            prop_assert_eq!(object, OBJECT);
            prop_assert!(!reason.is_empty());
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not a typed corruption: {other}"
        ))),
    }
}

fn t0() -> DateTime<Utc> {
    "2026-11-22T10:00:15Z".parse().expect("a time")
}

/// The rules decide on `state` without panicking, whatever it holds.
fn rules_decide(state: &LockState) {
    let now = t0();
    let _ = LockInfo::from_state("x", state, now);
    for kind in [
        Kind::Mutex,
        Kind::Semaphore(2),
        Kind::ReadWrite(Access::Shared),
        Kind::ReadWrite(Access::Exclusive),
    ] {
        for (queue, duration) in [(false, Duration::from_secs(30)), (true, Duration::ZERO)] {
            let request = Request {
                holder: "r1",
                kind,
                duration,
                tags: &[],
                reset_tags: false,
                force: None,
                reason: None,
                nonce: "n",
                queue: if queue { Queue::Joins } else { Queue::Respects },
                judgement: Judgement {
                    skew_allowance: Duration::from_secs(2),
                    unchanged_for: None,
                },
            };
            let _ = rules::acquire("x", state, None, request, now);
        }
    }
    for holder in state.leases.keys().chain(["r1".to_owned()].iter()) {
        let token = state.leases.get(holder).and_then(|l| l.token).unwrap_or(0);
        let _ = rules::renew("x", state, holder, token, Duration::from_secs(30), now);
        let _ = rules::release(
            state,
            holder,
            token,
            &[],
            false,
            now,
            Duration::from_secs(2),
        );
        let _ = rules::withdraw(state, holder, (0, Some("n")), now, Duration::from_secs(2));
        let _ = rules::undo_take(state, holder, token, "n", false, now, Duration::ZERO);
    }
    let _ = rules::evict(state, None);
}

proptest! {
    #![proptest_config(config())]

    /// lockheed's JSON: `LockState::from_json` never panics, and what it reads it writes
    /// back and reads the same.
    #[test]
    fn lockheed_states_decode_or_fail_cleanly(doc in document()) {
        if let Ok(state) = LockState::from_json(&doc) {
            let again = LockState::from_json(&state.to_json());
            prop_assert_eq!(again.ok(), Some(state.clone()));
            rules_decide(&state);
        }
    }

    /// A lock ConfigMap in lockheed's format, with any state and any fencing annotation.
    #[test]
    fn lockheed_configmaps_decode_or_name_the_object(
        doc in document(),
        fencing in prop::option::of(odd_string()),
    ) {
        let cm = configmap(Format::Lockheed, &doc, fencing.as_deref(), None);
        if let Some(state) = decodes_or_names_the_object(Format::Lockheed, cm)? {
            rules_decide(&state);
        }
    }

    /// A ConfigMap in kube-lock's format, with any annotation, queue and fencing annotation.
    #[test]
    fn kube_lock_configmaps_decode_or_name_the_object(
        doc in document(),
        queue in prop::option::of(document()),
        fencing in prop::option::of(odd_string()),
    ) {
        let cm = configmap(Format::KubeLock, &doc, fencing.as_deref(), queue.as_deref());
        if let Some(state) = decodes_or_names_the_object(Format::KubeLock, cm)? {
            rules_decide(&state);
        }
    }

    /// `Condition`'s JSON (what `lockheed list --condition` takes): it parses or fails,
    /// round-trips when it parses, and evaluates on any lock.
    #[test]
    fn conditions_parse_or_fail_cleanly(doc in prop_oneof![
        document(),
        json_value().prop_map(|v| json!({"and": [v]}).to_string()),
        (0usize..200).prop_map(|depth| {
            format!("{}{}{}", r#"{"not":"#.repeat(depth), r#"{"acquired":true}"#, "}".repeat(depth))
        }),
    ]) {
        if let Ok(condition) = serde_json::from_str::<Condition>(&doc) {
            let json = serde_json::to_string(&condition).expect("a condition serializes");
            prop_assert_eq!(serde_json::from_str::<Condition>(&json).ok(), Some(condition.clone()));
            let state = LockState::from_json(RICH_STATE).expect("the rich state reads");
            let _ = condition.matches(&LockInfo::from_state("x", &state, t0()));
        }
    }
}

#[test]
fn the_seeds_are_the_fixtures_and_what_this_crate_writes() {
    let seeds = seeds();
    assert!(seeds.len() >= 12, "{}", seeds.len());
    // Mutations do change documents, and keep them strings.
    let changed = mutate(
        RICH_STATE,
        &[Mutation::Replace {
            path: Vec::new(),
            with: json!(-1),
        }],
    );
    assert_ne!(changed, RICH_STATE);
    assert!(LockState::from_json(&changed).is_err(), "{changed}");
}
