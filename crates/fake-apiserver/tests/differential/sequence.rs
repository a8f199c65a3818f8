//! A recorded sequence: what one client sent to the real kube-apiserver, and what it answered,
//! as saved under `sequences/` (one JSON file per sequence).
//!
//! Shared by the test target (which replays sequences) and the recorder
//! (`examples/record_differential`, which writes them).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One recorded sequence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sequence {
    /// The client whose requests these are (`kubectl`, `kube-runtime watcher`, ...).
    pub client: String,
    /// What the client did, in a sentence.
    pub description: String,
    /// The server the sequence was recorded against (`kube-apiserver v1.37.2, etcd v3.7.0`).
    pub server: String,
    /// The namespace of the recording; a replay rewrites it to a namespace of its own.
    pub namespace: String,
    /// Requests the recorder left out: discovery and OpenAPI documents (the fake server serves
    /// only its own resource types) and cluster-scoped requests (the test's namespace itself).
    #[serde(default)]
    pub left_out: BTreeMap<String, usize>,
    /// The steps, in the order a replay takes them.
    pub steps: Vec<Step>,
}

/// One step of a sequence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// A request and its answer.
    Exchange(Box<Exchange>),
    /// Something done to the server itself, not through its API.
    Action(Action),
}

/// What a sequence does to the server itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Compact the history: etcd's (a compaction at its current revision) and the watch
    /// cache's (on kube-apiserver the watch cache forgets events older than 75 s once it is
    /// full, so the real server waits and writes elsewhere until it does; the fake server
    /// compacts).
    Compact {
        /// When, in milliseconds since the recording started.
        at_ms: u64,
    },
}

/// A request and its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    /// The order in which the request arrived at the recorder.
    pub id: usize,
    /// When it arrived, in milliseconds since the recording started.
    pub sent_ms: u64,
    /// When its answer (its headers, for a watch) came back.
    pub answered_ms: u64,
    /// The request.
    pub request: Request,
    /// The answer.
    pub response: Response,
}

/// A request as the client sent it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, percent-encoded as sent.
    pub path: String,
    /// The query string, as sent (without `?`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// The headers that matter to the server (content type, accept, user agent,
    /// impersonation), lower-case names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The body.
    #[serde(default, skip_serializing_if = "Body::is_empty")]
    pub body: Body,
}

impl Request {
    /// Whether this is a watch (`?watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        self.query
            .split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"))
    }

    /// A short name for reports: `PUT configmaps/NAME`, `GET leases (watch)`.
    pub fn summary(&self) -> String {
        let segments: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let rest = match segments.as_slice() {
            ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
            other => other,
        };
        let rest = match rest {
            ["namespaces", _, rest @ ..] if !rest.is_empty() => rest,
            other => other,
        };
        let verb = match (self.method.as_str(), rest.len()) {
            ("GET", _) if self.is_watch() => "WATCH",
            ("GET", 1) => "LIST",
            ("DELETE", 1) => "DELETECOLLECTION",
            (method, _) => method,
        };
        let resource = rest.first().copied().unwrap_or("-");
        let sub = rest.get(2).map(|s| format!("/{s}")).unwrap_or_default();
        let patch = match self.headers.get("content-type").map(String::as_str) {
            Some("application/apply-patch+yaml") => " (apply)",
            Some("application/merge-patch+json") => " (merge)",
            Some("application/strategic-merge-patch+json") => " (strategic)",
            Some("application/json-patch+json") => " (json)",
            _ => "",
        };
        let patch = if self.method == "PATCH" { patch } else { "" };
        format!("{verb} {resource}{sub}{patch}")
    }
}

/// A body: nothing, UTF-8 text (JSON is kept as sent, byte for byte), or bytes in hex
/// (protobuf).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// UTF-8 text.
    Text(String),
    /// Long UTF-8 text with long runs of one character (an object made too large on purpose),
    /// as pieces, each repeated so many times.
    Runs(Vec<(String, usize)>),
    /// Anything else, in hex.
    Hex(String),
}

/// Text longer than this is stored as [`Body::Runs`] where that is shorter, and strings of
/// answers longer than this are kept as their length and hash ([`shorten_long_strings`]).
pub const LONG: usize = 16 * 1024;

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Replaces every string of `value` longer than [`LONG`] with its length and hash, so that
/// recordings of objects made too large on purpose stay small, and compare all the same.
pub fn shorten_long_strings(value: &mut Value) {
    match value {
        Value::String(s) if s.len() > LONG => {
            *s = format!("<{} bytes, fnv1a {:016x}>", s.len(), fnv1a(s));
        }
        Value::Array(items) => items.iter_mut().for_each(shorten_long_strings),
        Value::Object(map) => map.values_mut().for_each(shorten_long_strings),
        _ => {}
    }
}

/// `text` as pieces with repeat counts: runs of one character longer than 256 are one piece.
fn runs(text: &str) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut literal = String::new();
    while i < chars.len() {
        let mut j = i;
        while j < chars.len() && chars[j] == chars[i] {
            j += 1;
        }
        if j - i > 256 {
            if !literal.is_empty() {
                out.push((std::mem::take(&mut literal), 1));
            }
            out.push((chars[i].to_string(), j - i));
        } else {
            literal.extend(&chars[i..j]);
        }
        i = j;
    }
    if !literal.is_empty() {
        out.push((literal, 1));
    }
    out
}

impl Body {
    /// The body of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            Self::Empty
        } else if let Ok(text) = std::str::from_utf8(bytes) {
            if text.len() > LONG {
                let pieces = runs(text);
                let stored: usize = pieces.iter().map(|(p, _)| p.len() + 8).sum();
                if stored * 2 < text.len() {
                    return Self::Runs(pieces);
                }
            }
            Self::Text(text.to_owned())
        } else {
            Self::Hex(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
    }

    /// The text, for a text body.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Text(text) => Some(text.clone()),
            Self::Runs(pieces) => Some(pieces.iter().map(|(p, n)| p.repeat(*n)).collect()),
            Self::Empty | Self::Hex(_) => None,
        }
    }

    /// Whether there is no body.
    pub fn is_empty(&self) -> bool {
        *self == Self::Empty
    }

    /// The bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Empty => Vec::new(),
            Self::Text(_) | Self::Runs(_) => self.text().unwrap_or_default().into_bytes(),
            Self::Hex(hex) => (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                .collect(),
        }
    }
}

/// An answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    /// The HTTP status code (0: no answer, the connection failed).
    pub status: u16,
    /// The headers that the comparison looks at (content type, warnings, `Retry-After`,
    /// `Location`), lower-case names; repeated headers joined with `\n`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The body as JSON, when it is JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// The body otherwise (text, or protobuf in hex).
    #[serde(default, skip_serializing_if = "Body::is_empty")]
    pub body: Body,
    /// The events of a watch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Watch>,
}

impl Response {
    /// The answer of these bytes, as JSON when they are JSON.
    pub fn with_body(mut self, bytes: &[u8]) -> Self {
        match serde_json::from_slice(bytes) {
            Ok(mut json) => {
                shorten_long_strings(&mut json);
                self.json = Some(json);
            }
            Err(_) => self.body = Body::of(bytes),
        }
        self
    }
}

/// The event stream of a watch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Watch {
    /// The events in the order they arrived.
    pub events: Vec<WatchEvent>,
    /// Who ended the watch.
    pub ended_by: EndedBy,
    /// When it ended, in milliseconds since the recording started.
    pub ended_ms: u64,
}

/// Who ended a watch.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The server closed the stream (its timeout, an error event).
    #[default]
    Server,
    /// The client went away first.
    Client,
}

/// One event of a watch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchEvent {
    /// When it arrived, in milliseconds since the recording started.
    pub at_ms: u64,
    /// `{"type": ..., "object": ...}` (or the line as a string when it was not JSON).
    pub event: Value,
}

impl WatchEvent {
    /// The event's type: `ADDED`, `BOOKMARK`, ...
    pub fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap_or_default()
    }

    /// Whether this is a bookmark that the server sends on a timer, which a replay cannot
    /// expect at the same place: any bookmark except the one that ends the initial events
    /// of `sendInitialEvents`.
    pub fn is_periodic_bookmark(&self) -> bool {
        self.kind() == "BOOKMARK"
            && self.event["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"]
                != "true"
    }
}

impl Sequence {
    /// Reads a sequence file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes this sequence to `path`, pretty-printed.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
    }

    /// Every sequence in `dir` (`*.json`), by file name.
    pub fn read_all(dir: &Path) -> Result<Vec<(String, Self)>, String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|path| {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Ok((name, Self::read(path)?))
            })
            .collect()
    }

    /// The exchanges, in replay order.
    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.steps.iter().filter_map(|step| match step {
            Step::Exchange(exchange) => Some(&**exchange),
            Step::Action(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_reads_back_as_written() {
        let sequence = Sequence {
            client: "test".into(),
            description: "a round trip".into(),
            server: "none".into(),
            namespace: "ns".into(),
            left_out: BTreeMap::from([("discovery documents".into(), 2)]),
            steps: vec![
                Step::Action(Action::Compact { at_ms: 3 }),
                Step::Exchange(Box::new(Exchange {
                    id: 0,
                    sent_ms: 1,
                    answered_ms: 2,
                    request: Request {
                        method: "POST".into(),
                        path: "/api/v1/namespaces/ns/configmaps".into(),
                        query: String::new(),
                        headers: BTreeMap::new(),
                        body: Body::of(&[0xff, 0x00, 0x10]),
                    },
                    response: Response::default().with_body(br#"{"kind":"Status"}"#),
                })),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        sequence.write(&path).unwrap();
        let read = Sequence::read(&path).unwrap();
        let Step::Exchange(exchange) = &read.steps[1] else {
            panic!("the exchange is second");
        };
        assert_eq!(exchange.request.body.bytes(), [0xff, 0x00, 0x10]);
        assert_eq!(exchange.response.json.as_ref().unwrap()["kind"], "Status");
        assert_eq!(read.steps.len(), 2);
        assert_eq!(read.left_out["discovery documents"], 2);
    }

    #[test]
    fn long_runs_are_stored_short_and_read_back_whole() {
        let text = format!("{{\"data\":{{\"k\":\"{}\"}}}}", "x".repeat(100_000));
        let body = Body::of(text.as_bytes());
        assert!(matches!(&body, Body::Runs(pieces) if pieces.len() == 3));
        assert_eq!(body.bytes(), text.as_bytes());
        let mut value: Value = serde_json::from_str(&text).unwrap();
        shorten_long_strings(&mut value);
        assert_eq!(
            value["data"]["k"].as_str().unwrap(),
            format!("<100000 bytes, fnv1a {:016x}>", fnv1a(&"x".repeat(100_000)))
        );
    }
}
