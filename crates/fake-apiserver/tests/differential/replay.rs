//! Replaying a recorded sequence against a server: the same requests in the same order, with
//! the recording's namespace, resourceVersions, uids and continue tokens rewritten to the
//! replay's own, and watches kept open as long as the recording kept them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::sequence::{Action, Body, EndedBy, Exchange, Request, Response, Sequence, Step};
use crate::sequence::{Watch, WatchEvent};

/// How long a replay waits for a watch event that the recording had by then.
const EVENT_WAIT: Duration = Duration::from_secs(5);

/// How much longer than in the recording a replay waits for the server to end a watch.
const END_WAIT: Duration = Duration::from_secs(5);

/// The headers of an answer that a comparison looks at.
pub const ANSWER_HEADERS: [&str; 4] = ["content-type", "warning", "retry-after", "location"];

/// A server to replay against.
pub trait Server {
    /// A client with every right, which does not retry on its own.
    fn client(&self) -> &kube::Client;

    /// The namespace the replay's objects go in (as long as the recording's: protobuf bodies
    /// keep their lengths when it is rewritten).
    fn namespace(&self) -> &str;

    /// Does `action` to the server.
    async fn act(&self, action: &Action) -> Result<(), String>;
}

/// What a replay got: one answer per exchange of the sequence, in the same order.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The answers.
    pub responses: Vec<Response>,
}

/// Recorded values (resourceVersions, uids, continue tokens, generated names) and what the
/// replay got in their place.
#[derive(Debug, Default)]
pub struct Mapping {
    recorded_namespace: String,
    namespace: String,
    values: HashMap<String, String>,
    /// The replay's timestamps of each object (by its recorded name, where the timestamp is,
    /// and the recorded value), which a client sends back in the `metadata` of an update. A
    /// recorded second may stand for two of the replay's, so they are mapped object by object.
    times: HashMap<(String, String, String), String>,
}

/// Keys whose string values are opaque server-made tokens.
const OPAQUE_KEYS: [&str; 3] = ["resourceVersion", "uid", "continue"];

/// Where a server-made timestamp of an object is: its `creationTimestamp`, or the `time` of a
/// managed fields entry (by manager, operation and subresource).
fn timestamps(object: &Value) -> Vec<(String, String)> {
    let meta = &object["metadata"];
    let mut out = Vec::new();
    if let Some(created) = meta["creationTimestamp"].as_str() {
        out.push(("creationTimestamp".to_owned(), created.to_owned()));
    }
    for entry in meta["managedFields"].as_array().into_iter().flatten() {
        if let Some(time) = entry["time"].as_str() {
            let key = format!(
                "{}|{}|{}",
                entry["manager"].as_str().unwrap_or_default(),
                entry["operation"].as_str().unwrap_or_default(),
                entry["subresource"].as_str().unwrap_or_default()
            );
            out.push((key, time.to_owned()));
        }
    }
    out
}

impl Mapping {
    fn new(recorded_namespace: &str, namespace: &str) -> Self {
        Self {
            recorded_namespace: recorded_namespace.to_owned(),
            namespace: namespace.to_owned(),
            values: HashMap::new(),
            times: HashMap::new(),
        }
    }

    /// Learns from a recorded answer and the replay's answer in its place.
    pub fn learn(&mut self, recorded: &Value, replayed: &Value) {
        if let Some(name) = recorded["metadata"]["name"].as_str() {
            let theirs = timestamps(replayed);
            for (place, time) in timestamps(recorded) {
                if let Some((_, new)) = theirs.iter().find(|(p, _)| *p == place) {
                    self.times
                        .insert((name.to_owned(), place, time), new.clone());
                }
            }
        }
        match (recorded, replayed) {
            (Value::Object(rec), Value::Object(rep)) => {
                for (key, rec_value) in rec {
                    let Some(rep_value) = rep.get(key) else {
                        continue;
                    };
                    let generated_name = key == "name" && rec.contains_key("generateName");
                    if OPAQUE_KEYS.contains(&key.as_str()) || generated_name {
                        if let (Value::String(a), Value::String(b)) = (rec_value, rep_value)
                            && !a.is_empty()
                        {
                            self.values.entry(a.clone()).or_insert_with(|| b.clone());
                        }
                    } else {
                        self.learn(rec_value, rep_value);
                    }
                }
            }
            (Value::Array(rec), Value::Array(rep)) => {
                for (a, b) in rec.iter().zip(rep) {
                    self.learn(a, b);
                }
            }
            _ => {}
        }
    }

    fn value(&self, recorded: &str) -> Option<&str> {
        self.values.get(recorded).map(String::as_str)
    }

    /// The path with the replay's namespace and names.
    fn path(&self, path: &str) -> String {
        path.split('/')
            .map(|segment| {
                if segment == self.recorded_namespace {
                    self.namespace.clone()
                } else {
                    self.value(segment).unwrap_or(segment).to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The query with the replay's namespace, resourceVersion and continue token.
    fn query(&self, query: &str) -> String {
        query
            .split('&')
            .map(|pair| {
                let Some((key, value)) = pair.split_once('=') else {
                    return pair.to_owned();
                };
                let decoded = percent_decode(value);
                let rewritten = match key {
                    "resourceVersion" | "continue" => {
                        self.value(&decoded).unwrap_or(&decoded).to_owned()
                    }
                    _ => decoded.replace(&self.recorded_namespace, &self.namespace),
                };
                if rewritten == decoded {
                    pair.to_owned()
                } else {
                    format!("{key}={}", percent_encode(&rewritten))
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The body with the replay's namespace, resourceVersions and uids. JSON is rewritten in
    /// its text, so that everything else stays byte for byte as sent.
    fn body(&self, body: &Body) -> Vec<u8> {
        match body {
            Body::Empty => Vec::new(),
            Body::Text(_) | Body::Runs(_) => {
                let text = self.timestamps(body.text().unwrap_or_default());
                let mut text = text.replace(&self.recorded_namespace, &self.namespace);
                if let Ok(json) = serde_json::from_str::<Value>(&text) {
                    let mut found = Vec::new();
                    opaque_values(&json, &mut found);
                    for (key, old) in found {
                        if let Some(new) = self.value(&old) {
                            for colon in [":", ": "] {
                                text = text.replace(
                                    &format!("\"{key}\"{colon}\"{old}\""),
                                    &format!("\"{key}\"{colon}\"{new}\""),
                                );
                            }
                        }
                    }
                }
                text.into_bytes()
            }
            Body::Hex(_) => {
                let bytes = body.bytes();
                let (from, to) = (
                    self.recorded_namespace.as_bytes(),
                    self.namespace.as_bytes(),
                );
                if from.len() != to.len() || from.is_empty() {
                    return bytes;
                }
                let mut out = bytes.clone();
                let mut i = 0;
                while i + from.len() <= out.len() {
                    if &out[i..i + from.len()] == from {
                        out[i..i + from.len()].copy_from_slice(to);
                        i += from.len();
                    } else {
                        i += 1;
                    }
                }
                out
            }
        }
    }
}

impl Mapping {
    /// A JSON body with the replay's timestamps where it sends back an object's (re-encoded
    /// then, keys sorted; unchanged otherwise).
    fn timestamps(&self, text: String) -> String {
        let Ok(mut object) = serde_json::from_str::<Value>(&text) else {
            return text;
        };
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return text;
        };
        let lookup = |place: String, time: &str| {
            self.times
                .get(&(name.clone(), place, time.to_owned()))
                .cloned()
        };
        let mut changed = false;
        let meta = &mut object["metadata"];
        if let Some(created) = meta["creationTimestamp"].as_str()
            && let Some(new) = lookup("creationTimestamp".to_owned(), created)
        {
            meta["creationTimestamp"] = Value::String(new);
            changed = true;
        }
        if let Some(entries) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
            for entry in entries {
                let Some(time) = entry["time"].as_str() else {
                    continue;
                };
                let place = format!(
                    "{}|{}|{}",
                    entry["manager"].as_str().unwrap_or_default(),
                    entry["operation"].as_str().unwrap_or_default(),
                    entry["subresource"].as_str().unwrap_or_default()
                );
                if let Some(new) = lookup(place, time) {
                    entry["time"] = Value::String(new);
                    changed = true;
                }
            }
        }
        if changed {
            serde_json::to_string(&object).unwrap_or(text)
        } else {
            text
        }
    }
}

/// The resourceVersions and uids a request body names, with their keys: under those keys, and
/// as the values of JSON patch operations on them.
fn opaque_values(value: &Value, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            let patch_target = map
                .get("path")
                .and_then(Value::as_str)
                .is_some_and(|p| p.ends_with("/resourceVersion") || p.ends_with("/uid"));
            for (key, value) in map {
                match value {
                    Value::String(s)
                        if OPAQUE_KEYS.contains(&key.as_str())
                            || (patch_target && key == "value") =>
                    {
                        found.push((key.clone(), s.clone()));
                    }
                    other => opaque_values(other, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| opaque_values(v, found)),
        _ => {}
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A watch of the replay, read in a task of its own.
struct OpenWatch<'a> {
    /// Which exchange of the sequence it is.
    index: usize,
    recorded: &'a Exchange,
    status: u16,
    headers: BTreeMap<String, String>,
    stream: Arc<Mutex<Stream>>,
    reader: JoinHandle<()>,
    /// How many of its events the mapping has learnt from.
    learnt: usize,
}

#[derive(Default)]
struct Stream {
    events: Vec<WatchEvent>,
    ended_ms: Option<u64>,
}

fn lock(stream: &Mutex<Stream>) -> std::sync::MutexGuard<'_, Stream> {
    stream.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The events that a replay waits for and pairs with the recording's: all but periodic
/// bookmarks.
fn steady(events: &[WatchEvent]) -> impl Iterator<Item = &WatchEvent> {
    events.iter().filter(|e| !e.is_periodic_bookmark())
}

impl OpenWatch<'_> {
    /// Waits until the replay has the events the recording had before `now_ms`, or until it
    /// ended, or [`EVENT_WAIT`]; then learns from the new pairs.
    async fn catch_up(&mut self, now_ms: u64, mapping: &mut Mapping) {
        let recorded = &self
            .recorded
            .response
            .watch
            .as_ref()
            .map(|w| w.events.as_slice());
        let recorded = recorded.unwrap_or_default();
        let wanted = steady(recorded).filter(|e| e.at_ms < now_ms).count();
        let deadline = Instant::now() + EVENT_WAIT;
        loop {
            {
                let stream = lock(&self.stream);
                if steady(&stream.events).count() >= wanted
                    || stream.ended_ms.is_some()
                    || Instant::now() >= deadline
                {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stream = lock(&self.stream);
        for (rec, rep) in steady(recorded)
            .zip(steady(&stream.events))
            .skip(self.learnt)
        {
            mapping.learn(&rec.event, &rep.event);
            self.learnt += 1;
        }
    }

    /// Whether the recording's watch had ended before `now_ms`.
    fn ended_before(&self, now_ms: u64) -> bool {
        self.recorded
            .response
            .watch
            .as_ref()
            .is_none_or(|w| w.ended_ms < now_ms)
    }

    /// Ends the watch as the recording's ended: waits for the server to end it, or closes it
    /// as the client did.
    async fn finish(self, started: Instant) -> (usize, Response) {
        let recorded = self.recorded.response.watch.clone().unwrap_or_default();
        if recorded.ended_by == EndedBy::Server {
            let lasted = recorded.ended_ms.saturating_sub(self.recorded.sent_ms);
            let deadline = Instant::now() + Duration::from_millis(lasted) + END_WAIT;
            while lock(&self.stream).ended_ms.is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        self.reader.abort();
        let stream = std::mem::take(&mut *lock(&self.stream));
        let (ended_by, ended_ms) = match stream.ended_ms {
            Some(ms) => (EndedBy::Server, ms),
            None => (EndedBy::Client, elapsed_ms(started)),
        };
        let response = Response {
            status: self.status,
            headers: self.headers,
            watch: Some(Watch {
                events: stream.events,
                ended_by,
                ended_ms,
            }),
            ..Response::default()
        };
        (self.index, response)
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The answer's headers that a comparison looks at.
pub fn answer_headers(headers: &http::HeaderMap) -> BTreeMap<String, String> {
    ANSWER_HEADERS
        .iter()
        .filter_map(|name| {
            let values: Vec<&str> = headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| ((*name).to_owned(), values.join("\n")))
        })
        .collect()
}

/// Splits watch frames into lines, each an event.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// The complete lines in what arrived so far.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Value> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            lines.push(
                serde_json::from_slice(line)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(line).into_owned())),
            );
        }
        lines
    }

    /// What is left when the stream ends.
    pub fn finish(&mut self) -> Vec<Value> {
        if self.pending.is_empty() {
            Vec::new()
        } else {
            self.push(b"\n")
        }
    }
}

/// Replays `sequence` against `server`.
///
/// # Errors
///
/// When a request cannot be sent or an action fails: the replay itself broke, which is not a
/// difference between servers.
pub async fn replay<S: Server>(sequence: &Sequence, server: &S) -> Result<Replayed, String> {
    let started = Instant::now();
    let mut mapping = Mapping::new(&sequence.namespace, server.namespace());
    let count = sequence.exchanges().count();
    let mut responses: Vec<Option<Response>> = vec![None; count];
    let mut open: Vec<OpenWatch<'_>> = Vec::new();
    let mut index = 0;
    for step in &sequence.steps {
        let now_ms = match step {
            Step::Exchange(exchange) => exchange.sent_ms,
            Step::Action(Action::Compact { at_ms }) => *at_ms,
        };
        settle(&mut open, now_ms, &mut mapping, &mut responses, started).await;
        match step {
            Step::Action(action) => server.act(action).await?,
            Step::Exchange(exchange) => {
                let request = rewrite(&exchange.request, &mapping)?;
                let answer = server
                    .client()
                    .send(request)
                    .await
                    .map_err(|e| format!("{}: {e}", exchange.request.summary()))?;
                if exchange.request.is_watch() && answer.status().is_success() {
                    open.push(watch(index, exchange, answer, started));
                } else {
                    let response = collect(answer).await?;
                    if let (Some(rec), Some(rep)) = (&exchange.response.json, &response.json) {
                        mapping.learn(rec, rep);
                    }
                    responses[index] = Some(response);
                }
                index += 1;
            }
        }
    }
    settle(&mut open, u64::MAX, &mut mapping, &mut responses, started).await;
    Ok(Replayed {
        responses: responses
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect(),
    })
}

/// Brings the open watches to where the recording's were at `now_ms`, and ends those that had
/// ended by then.
async fn settle(
    open: &mut Vec<OpenWatch<'_>>,
    now_ms: u64,
    mapping: &mut Mapping,
    responses: &mut [Option<Response>],
    started: Instant,
) {
    for watch in open.iter_mut() {
        watch.catch_up(now_ms, mapping).await;
    }
    let (ended, still): (Vec<_>, Vec<_>) = open.drain(..).partition(|w| w.ended_before(now_ms));
    *open = still;
    for watch in ended {
        let (index, response) = watch.finish(started).await;
        responses[index] = Some(response);
    }
}

fn rewrite(
    request: &Request,
    mapping: &Mapping,
) -> Result<http::Request<kube::client::Body>, String> {
    let path = mapping.path(&request.path);
    let query = mapping.query(&request.query);
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let mut builder = http::Request::builder()
        .method(request.method.as_str())
        .uri(uri);
    for (name, value) in &request.headers {
        // Impersonated service accounts name the namespace.
        let value = value.replace(&mapping.recorded_namespace, &mapping.namespace);
        builder = builder.header(name, value);
    }
    builder
        .body(kube::client::Body::from(mapping.body(&request.body)))
        .map_err(|e| format!("{}: {e}", request.summary()))
}

async fn collect(answer: http::Response<kube::client::Body>) -> Result<Response, String> {
    let status = answer.status().as_u16();
    let headers = answer_headers(answer.headers());
    let bytes = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading an answer: {e}"))?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        ..Response::default()
    }
    .with_body(&bytes))
}

fn watch<'a>(
    index: usize,
    recorded: &'a Exchange,
    answer: http::Response<kube::client::Body>,
    started: Instant,
) -> OpenWatch<'a> {
    let status = answer.status().as_u16();
    let headers = answer_headers(answer.headers());
    let stream = Arc::new(Mutex::new(Stream::default()));
    let sink = Arc::clone(&stream);
    let reader = tokio::spawn(async move {
        let mut body = answer.into_body();
        let mut lines = LineSplitter::default();
        let push = |mut values: Vec<Value>| {
            values
                .iter_mut()
                .for_each(crate::sequence::shorten_long_strings);
            let at_ms = elapsed_ms(started);
            lock(&sink)
                .events
                .extend(values.into_iter().map(|event| WatchEvent { at_ms, event }));
        };
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                let data: Bytes = data;
                push(lines.push(&data));
            }
        }
        push(lines.finish());
        lock(&sink).ended_ms = Some(elapsed_ms(started));
    });
    OpenWatch {
        index,
        recorded,
        status,
        headers,
        stream,
        reader,
        learnt: 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_are_rewritten_to_the_replays_namespace_and_versions() {
        let mut mapping = Mapping::new("lockheed-test-aaaaa", "lockheed-test-bbbbb");
        mapping.learn(
            &json!({"metadata": {"resourceVersion": "100", "uid": "u-1", "continue": "c/1="}}),
            &json!({"metadata": {"resourceVersion": "7", "uid": "u-2", "continue": "3.2"}}),
        );
        assert_eq!(
            mapping.path("/api/v1/namespaces/lockheed-test-aaaaa/configmaps/x"),
            "/api/v1/namespaces/lockheed-test-bbbbb/configmaps/x"
        );
        assert_eq!(
            mapping.query("resourceVersion=100&continue=c%2F1%3D&watch=true"),
            "resourceVersion=7&continue=3.2&watch=true"
        );
        let body = Body::Text(
            r#"{"metadata":{"namespace":"lockheed-test-aaaaa","resourceVersion":"100"},"data":{"a":"100"},"x":[{"op":"test","path":"/metadata/uid","value":"u-1"}]}"#.into(),
        );
        let rewritten = String::from_utf8(mapping.body(&body)).unwrap();
        assert!(rewritten.contains(r#""namespace":"lockheed-test-bbbbb""#));
        assert!(rewritten.contains(r#""resourceVersion":"7""#));
        assert!(rewritten.contains(r#""value":"u-2""#));
        assert!(
            rewritten.contains(r#""a":"100""#),
            "only opaque fields change"
        );
    }

    #[test]
    fn timestamps_sent_back_are_the_replays_of_that_object() {
        let mut mapping = Mapping::new("ns", "ns");
        let object = |created: &str, time: &str| {
            json!({"metadata": {"name": "a", "creationTimestamp": created,
                "managedFields": [{"manager": "m", "operation": "Update", "time": time}]}})
        };
        // One recorded second, two of the replay's.
        mapping.learn(
            &object("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
            &object("2027-01-01T00:00:00Z", "2027-01-01T00:00:01Z"),
        );
        let body = Body::Text(object("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z").to_string());
        let sent: Value = serde_json::from_slice(&mapping.body(&body)).unwrap();
        assert_eq!(sent, object("2027-01-01T00:00:00Z", "2027-01-01T00:00:01Z"));
    }

    #[test]
    fn watch_lines_are_split_across_frames() {
        let mut lines = LineSplitter::default();
        assert!(lines.push(b"{\"type\":\"ADDED\"").is_empty());
        assert_eq!(
            lines.push(b"}\n{\"type\":\"DEL"),
            vec![json!({"type": "ADDED"})]
        );
        assert_eq!(lines.push(b"ETED\"}"), Vec::<Value>::new());
        assert_eq!(lines.finish(), vec![json!({"type": "DELETED"})]);
    }
}
