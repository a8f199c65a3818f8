//! Comparing a replay's answers with the recording's, field by field, after normalising what
//! two servers cannot agree on: uids, server-made timestamps, resourceVersion values,
//! continue tokens, generated names and the namespace. What is normalised is still checked
//! for its shape: a resourceVersion becomes the n-th distinct one of its sequence (so two
//! answers naming the same version must agree on that), a timestamp keeps its format (RFC
//! 3339 in seconds, or with six fraction digits for a MicroTime).

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::replay::Replayed;
use crate::sequence::{EndedBy, Response, Sequence, WatchEvent};

/// One field where a replay's answer differs from the recording's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The sequence's name.
    pub sequence: String,
    /// Which exchange of the sequence (0-based, in replay order).
    pub exchange: usize,
    /// The request, as [`Request::summary`](crate::sequence::Request::summary) names it.
    pub request: String,
    /// Where in the answer: `status`, `headers.warning`, `body.metadata.uid`,
    /// `watch.events[2].object.metadata.name`.
    pub path: String,
    /// The recording's value (normalised), or `-` when it had none.
    pub recorded: String,
    /// The replay's value (normalised), or `-` when it had none.
    pub replayed: String,
}

impl Difference {
    /// What kind of difference this is, the same for every occurrence: the request, the path
    /// with array indices as `[*]`, and the values where they are a closed set (status codes,
    /// reasons, event types, kinds) or missing on one side.
    pub fn signature(&self) -> String {
        let mut path = String::new();
        let mut in_index = false;
        for c in self.path.chars() {
            match c {
                '[' => {
                    in_index = true;
                    path.push_str("[*]");
                }
                ']' => in_index = false,
                _ if in_index => {}
                c => path.push(c),
            }
        }
        let last = path.rsplit('.').next().unwrap_or_default();
        let what = if self.recorded == "-" {
            "only in the replay".to_owned()
        } else if self.replayed == "-" {
            "missing in the replay".to_owned()
        } else if matches!(
            last,
            "status" | "reason" | "type" | "kind" | "code" | "ended_by"
        ) || path.ends_with("events")
            || path == "body"
        {
            format!("{} → {}", self.recorded, self.replayed)
        } else {
            "differs".to_owned()
        };
        format!("{}: {path}: {what}", self.request)
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}#{} {}: {}: recorded {} / replayed {}",
            self.sequence, self.exchange, self.request, self.path, self.recorded, self.replayed
        )
    }
}

/// Normalises one side's answers; tokens are numbered in the order they are first met.
#[derive(Debug, Default)]
struct Normaliser {
    namespace: String,
    versions: HashMap<String, usize>,
    uids: HashMap<String, usize>,
    /// The `generateName`s of the requests: a name made from one (`<prefix><5 characters>`)
    /// is random.
    prefixes: Vec<String>,
}

/// The keys of server-made timestamps in seconds (`metav1.Time`).
const TIME_KEYS: [&str; 3] = ["creationTimestamp", "deletionTimestamp", "time"];

impl Normaliser {
    fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            ..Self::default()
        }
    }

    fn version(&mut self, rv: &str) -> String {
        if rv.is_empty() || !rv.bytes().all(|b| b.is_ascii_digit()) {
            return format!("<rv?{rv}>");
        }
        let next = self.versions.len();
        format!(
            "<rv:{}>",
            self.versions.entry(rv.to_owned()).or_insert(next)
        )
    }

    fn uid(&mut self, uid: &str) -> String {
        let uuid = uid.len() == 36
            && uid.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if !uuid {
            return format!("<uid?{uid}>");
        }
        let next = self.uids.len();
        format!("<uid:{}>", self.uids.entry(uid.to_owned()).or_insert(next))
    }

    fn text(&self, text: &str) -> String {
        let mut text = if self.namespace.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.namespace, "<ns>")
        };
        for prefix in &self.prefixes {
            let mut out = String::new();
            let mut rest = text.as_str();
            while let Some(at) = rest.find(prefix.as_str()) {
                out.push_str(&rest[..at]);
                let after = &rest[at + prefix.len()..];
                let random = after
                    .bytes()
                    .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    .count();
                if random == 5 {
                    out.push_str(&format!("<generated:{prefix}+5>"));
                } else {
                    out.push_str(&rest[at..at + prefix.len() + random]);
                }
                rest = &after[random..];
            }
            out.push_str(rest);
            text = out;
        }
        text
    }

    /// A message with the versions and uids it names as tokens, and its timestamps as their
    /// shapes (a message may quote a whole object).
    fn message(&mut self, message: &str) -> String {
        let mut rest = timestamps_as_shapes(&self.text(message));
        // uids first: they contain digits.
        let uids: Vec<String> = self.uids.keys().cloned().collect();
        for uid in uids {
            if rest.contains(&uid) {
                let token = self.uid(&uid);
                rest = rest.replace(&uid, &token);
            }
        }
        // A message about versions may name ones no answer carried (the oldest one the
        // server keeps, its current one): those become `<rv>`.
        let about_versions = ["resource version", "resourceVersion", "ResourceVersion"]
            .iter()
            .any(|words| rest.contains(words));
        // Only numbers where a version stands: `(41)`, `version: 41 `, `"41"`; not the 9 of
        // `[a-z0-9]` nor the 8 of `k8s`.
        let chars: Vec<char> = rest.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < chars.len() {
            if !chars[i].is_ascii_digit() {
                out.push(chars[i]);
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            let before = start.checked_sub(1).map(|b| chars[b]);
            let after = chars.get(i).copied();
            // (An object quoted in a message has its quotes escaped: `\"41\"`.)
            let standing = matches!(before, Some('(' | ' ' | '"' | ':'))
                && matches!(after, None | Some(')' | ' ' | '"' | ',' | '.' | '\\'));
            // `too old resource version: 41 (97)`: the second is the oldest the server keeps.
            let oldest_kept = before == Some('(') && rest.contains("too old resource version");
            if standing && oldest_kept {
                out.push_str("<rv>");
            } else if standing && self.versions.contains_key(&digits) {
                out.push_str(&self.version(&digits));
            } else if standing && about_versions && digits.len() > 1 && before == Some('(') {
                out.push_str("<rv>");
            } else {
                out.push_str(&digits);
            }
        }
        out
    }

    /// The normalised form of an answer's JSON body or of a watch event.
    fn value(&mut self, value: &Value, key: &str, parent: Option<&Map<String, Value>>) -> Value {
        match value {
            Value::Object(map) if map.contains_key("columnDefinitions") => {
                let mut table = map.clone();
                let ages: Vec<usize> = map["columnDefinitions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .filter(|(_, c)| c["name"] == "Age")
                    .map(|(i, _)| i)
                    .collect();
                for row in table
                    .get_mut("rows")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    for &i in &ages {
                        if let Some(cell) = row["cells"].get_mut(i) {
                            *cell = Value::String("<age>".into());
                        }
                    }
                }
                table
                    .remove("columnDefinitions")
                    .map_or(Value::Null, |columns| {
                        let mut rest = self.value(&Value::Object(table), key, parent);
                        rest["columnDefinitions"] = columns;
                        rest
                    })
            }
            Value::Array(items) if key == "managedFields" => {
                // Entries are ordered by time (in seconds), then by manager: a replay is
                // faster than its recording, so only the manager counts.
                let mut items = items.clone();
                items.sort_by_key(|entry| {
                    (
                        entry["operation"] != "Apply",
                        entry["manager"].as_str().unwrap_or_default().to_owned(),
                        entry["subresource"].as_str().unwrap_or_default().to_owned(),
                    )
                });
                Value::Array(
                    items
                        .iter()
                        .map(|item| self.value(item, key, parent))
                        .collect(),
                )
            }
            Value::Object(map) => {
                // A list, or a Table of one.
                let collection = map.contains_key("items") || map.contains_key("rows");
                let bookmark = map.get("type").and_then(Value::as_str) == Some("BOOKMARK");
                let mut out = Map::new();
                for (k, v) in map {
                    let normalised = match (k.as_str(), v) {
                        // The version of a list, or of a bookmark, is the store's revision
                        // when it was read: on a shared real server, any other write moves it.
                        ("metadata", Value::Object(meta)) if collection || bookmark => {
                            let mut meta = meta.clone();
                            if let Some(Value::String(rv)) = meta.get("resourceVersion") {
                                let shape = if rv.bytes().all(|b| b.is_ascii_digit()) {
                                    "<rv:collection>".to_owned()
                                } else {
                                    format!("<rv?{rv}>")
                                };
                                meta.insert("resourceVersion".into(), Value::String(shape));
                            }
                            self.value(&Value::Object(meta), k, Some(map))
                        }
                        ("object", Value::Object(object)) if bookmark => {
                            let mut object = object.clone();
                            if let Some(Value::String(rv)) =
                                object["metadata"].get("resourceVersion")
                            {
                                let shape = if rv.bytes().all(|b| b.is_ascii_digit()) {
                                    "<rv:collection>".to_owned()
                                } else {
                                    format!("<rv?{rv}>")
                                };
                                object["metadata"]["resourceVersion"] = Value::String(shape);
                            }
                            self.value(&Value::Object(object), k, Some(map))
                        }
                        _ => self.value(v, k, Some(map)),
                    };
                    out.insert(k.clone(), normalised);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.value(item, key, parent))
                    .collect(),
            ),
            Value::String(s) => Value::String(match key {
                _ if s.starts_with("<rv:") => s.clone(),
                "resourceVersion" => self.version(s),
                "uid" => self.uid(s),
                "continue" if !s.is_empty() => "<continue>".to_owned(),
                "message" => self.message(s),
                "name" if parent.is_some_and(|p| p.contains_key("generateName")) => {
                    let prefix = parent
                        .and_then(|p| p["generateName"].as_str())
                        .unwrap_or_default();
                    match s.strip_prefix(prefix) {
                        Some(suffix) => format!("<generated:{prefix}+{}>", suffix.len()),
                        None => self.text(s),
                    }
                }
                k if TIME_KEYS.contains(&k) => time_shape(s),
                _ => self.text(s),
            }),
            other => other.clone(),
        }
    }
}

/// `text` with every RFC 3339 timestamp in it (`2026-01-02T03:04:05Z`, with a fraction or an
/// offset) replaced by its shape ([`time_shape`], or `<timestamp>`).
fn timestamps_as_shapes(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let stamp = bytes.get(i..i + 19).is_some_and(|b| {
            b.iter().enumerate().all(|(j, c)| match j {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            })
        });
        if !stamp {
            // Copy one character (not one byte: the text may not be ASCII).
            let c = text[i..].chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8().max(1);
            continue;
        }
        let mut end = i + 19;
        if bytes.get(end) == Some(&b'.') {
            end += 1;
            while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
        }
        match bytes.get(end) {
            Some(b'Z') => end += 1,
            Some(b'+' | b'-') if bytes.get(end..end + 6).is_some_and(|z| z[3] == b':') => end += 6,
            _ => {}
        }
        let shape = time_shape(&text[i..end]);
        out.push_str(if shape.starts_with('<') {
            &shape
        } else {
            "<timestamp>"
        });
        i = end;
    }
    out
}

/// The shape of a timestamp: `<time>` for RFC 3339 in seconds, `<microtime>` with six fraction
/// digits, the value itself otherwise (a timestamp of another shape is a difference).
fn time_shape(s: &str) -> String {
    let b = s.as_bytes();
    let date_time = b.len() >= 20
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    if date_time && b.len() == 20 && b[19] == b'Z' {
        "<time>".to_owned()
    } else if date_time
        && b.len() == 27
        && b[19] == b'.'
        && b[20..26].iter().all(u8::is_ascii_digit)
        && b[26] == b'Z'
    {
        "<microtime>".to_owned()
    } else {
        s.to_owned()
    }
}

/// Compares two normalised values, adding a difference for each field that differs.
fn diff(path: &str, recorded: &Value, replayed: &Value, out: &mut Vec<(String, String, String)>) {
    match (recorded, replayed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, va) in a {
                let sub = format!("{path}.{key}");
                match b.get(key) {
                    Some(vb) => diff(&sub, va, vb, out),
                    None => out.push((sub, short(va), "-".into())),
                }
            }
            for (key, vb) in b {
                if !a.contains_key(key) {
                    out.push((format!("{path}.{key}"), "-".into(), short(vb)));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push((path.to_owned(), short(a), short(b))),
    }
}

/// A value shortened for a report.
fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 160 {
        format!("{}…", text.chars().take(160).collect::<String>())
    } else {
        text
    }
}

/// The watch events a comparison pairs up: all but periodic bookmarks.
fn steady(events: &[WatchEvent]) -> Vec<&WatchEvent> {
    events
        .iter()
        .filter(|e| !e.is_periodic_bookmark())
        .collect()
}

/// Every difference between the recording of `sequence` and `replayed`.
pub fn compare(
    name: &str,
    sequence: &Sequence,
    replayed: &Replayed,
    replay_namespace: &str,
) -> Vec<Difference> {
    let mut recorded_side = Normaliser::new(&sequence.namespace);
    let mut replayed_side = Normaliser::new(replay_namespace);
    let mut differences = Vec::new();
    for (index, (exchange, response)) in sequence.exchanges().zip(&replayed.responses).enumerate() {
        if let Some(text) = exchange.request.body.text()
            && let Ok(body) = serde_json::from_str::<Value>(&text)
            && let Some(prefix) = body["metadata"]["generateName"].as_str()
        {
            for side in [&mut recorded_side, &mut replayed_side] {
                if !side.prefixes.iter().any(|p| p == prefix) {
                    side.prefixes.push(prefix.to_owned());
                }
            }
        }
        let mut found = Vec::new();
        compare_response(
            &exchange.response,
            response,
            (&mut recorded_side, &mut replayed_side),
            &mut found,
        );
        differences.extend(
            found
                .into_iter()
                .map(|(path, recorded, replayed)| Difference {
                    sequence: name.to_owned(),
                    exchange: index,
                    request: exchange.request.summary(),
                    path,
                    recorded,
                    replayed,
                }),
        );
    }
    differences
}

fn compare_response(
    recorded: &Response,
    replayed: &Response,
    (rec, rep): (&mut Normaliser, &mut Normaliser),
    out: &mut Vec<(String, String, String)>,
) {
    if recorded.status != replayed.status {
        // Another status is one difference, not one per field of two unrelated bodies.
        out.push((
            "status".into(),
            recorded.status.to_string(),
            replayed.status.to_string(),
        ));
        return;
    }
    let headers = |n: &mut Normaliser, r: &Response| {
        Value::Object(
            r.headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(n.text(v))))
                .collect(),
        )
    };
    diff(
        "headers",
        &headers(rec, recorded),
        &headers(rep, replayed),
        out,
    );
    match (&recorded.json, &replayed.json) {
        (Some(a), Some(b)) if a["kind"] != b["kind"] => {
            out.push(("body.kind".into(), short(&a["kind"]), short(&b["kind"])));
        }
        (Some(a), Some(b)) => {
            let (a, b) = (rec.value(a, "", None), rep.value(b, "", None));
            diff("body", &a, &b, out);
        }
        (None, None) => {}
        (a, b) => out.push((
            "body".into(),
            if a.is_some() {
                "JSON".into()
            } else {
                short_body(recorded)
            },
            if b.is_some() {
                "JSON".into()
            } else {
                short_body(replayed)
            },
        )),
    }
    let (a, b) = (short_body(recorded), short_body(replayed));
    if a != b && recorded.json.is_none() && replayed.json.is_none() {
        out.push(("body".into(), a, b));
    }
    let (Some(a), Some(b)) = (&recorded.watch, &replayed.watch) else {
        if recorded.watch.is_some() != replayed.watch.is_some() {
            let said = |r: &Response| if r.watch.is_some() { "a stream" } else { "-" };
            out.push(("watch".into(), said(recorded).into(), said(replayed).into()));
        }
        return;
    };
    let (ea, mut eb) = (steady(&a.events), steady(&b.events));
    if a.ended_by == EndedBy::Client && eb.len() > ea.len() {
        // The recorder sees a client go a little after it went: an event the recording's
        // client no longer waited for may reach the replay's before it closes.
        eb.truncate(ea.len());
    }
    if ea.len() != eb.len() {
        let types = |events: &[&WatchEvent]| {
            events
                .iter()
                .map(|e| e.kind().to_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        out.push(("watch.events".into(), types(&ea), types(&eb)));
    }
    for (i, (x, y)) in ea.iter().zip(&eb).enumerate() {
        let (x, y) = (rec.value(&x.event, "", None), rep.value(&y.event, "", None));
        diff(&format!("watch.events[{i}]"), &x, &y, out);
    }
    // Bookmarks come on timers: only the one a server sends before it ends a watch (kube-
    // apiserver: from 2 s before the timeout) has its place; it is compared when the server
    // ended the recorded watch, and when the recording has it.
    if a.ended_by == EndedBy::Server {
        let trailing = |events: &[WatchEvent]| {
            events
                .last()
                .filter(|e| e.is_periodic_bookmark())
                .map(|e| e.event.clone())
        };
        match (trailing(&a.events), trailing(&b.events)) {
            (Some(x), Some(y)) => {
                let (x, y) = (rec.value(&x, "", None), rep.value(&y, "", None));
                diff("watch.last_bookmark", &x, &y, out);
            }
            // Bookmarks are best effort: one that only the replay's server sent (kube-apiserver
            // itself sends its last one or not, by the timing of the run) is no difference.
            (None, None | Some(_)) => {}
            (x, y) => {
                let said = |e: &Option<Value>| if e.is_some() { "a bookmark" } else { "-" };
                out.push((
                    "watch.last_bookmark".into(),
                    said(&x).into(),
                    said(&y).into(),
                ));
            }
        }
    }
    if a.ended_by != b.ended_by {
        out.push((
            "watch.ended_by".into(),
            format!("{:?}", a.ended_by).to_lowercase(),
            format!("{:?}", b.ended_by).to_lowercase(),
        ));
    }
}

/// A body that is not JSON, for a comparison: a protobuf body (`k8s\0` and an envelope)
/// holds uids and timestamps that cannot be normalised without decoding it, so only its kind
/// is compared.
fn short_body(response: &Response) -> String {
    match &response.body {
        crate::sequence::Body::Empty => "-".into(),
        crate::sequence::Body::Text(_) | crate::sequence::Body::Runs(_) => {
            short(&Value::String(response.body.text().unwrap_or_default()))
        }
        crate::sequence::Body::Hex(hex) if hex.starts_with("6b387300") => "protobuf".into(),
        crate::sequence::Body::Hex(hex) => format!("{} bytes, not UTF-8", hex.len() / 2),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn versions_are_numbered_in_order_and_compared_by_identity() {
        let mut a = Normaliser::new("ns-a");
        let mut b = Normaliser::new("ns-b");
        let x = a.value(
            &json!({"metadata": {"resourceVersion": "500", "namespace": "ns-a"}}),
            "",
            None,
        );
        let y = b.value(
            &json!({"metadata": {"resourceVersion": "7", "namespace": "ns-b"}}),
            "",
            None,
        );
        assert_eq!(x, y);
        // The same version again on one side, a new one on the other: a difference.
        let x = a.value(&json!({"resourceVersion": "500"}), "", None);
        let y = b.value(&json!({"resourceVersion": "8"}), "", None);
        let mut out = Vec::new();
        diff("body", &x, &y, &mut out);
        assert_eq!(
            out,
            [(
                "body.resourceVersion".to_owned(),
                "<rv:0>".to_owned(),
                "<rv:1>".to_owned()
            )]
        );
    }

    #[test]
    fn timestamps_keep_their_shape() {
        assert_eq!(time_shape("2026-12-05T23:16:31Z"), "<time>");
        assert_eq!(time_shape("2026-12-05T23:16:31.123456Z"), "<microtime>");
        assert_eq!(
            time_shape("2026-12-05T23:16:31.123Z"),
            "2026-12-05T23:16:31.123Z"
        );
    }

    #[test]
    fn timestamps_in_messages_become_shapes() {
        assert_eq!(
            timestamps_as_shapes(
                "made 2026-12-05T23:31:50Z, renewed 2026-01-02T03:04:05.123456Z, é 2026-01-02T03:04:05+02:00."
            ),
            "made <time>, renewed <microtime>, é <timestamp>."
        );
    }

    #[test]
    fn messages_name_versions_as_tokens() {
        let mut n = Normaliser::new("ns");
        n.version("41");
        assert_eq!(
            n.message("too old resource version: 41 (97) in ns, k8s.io/x41, [a-z0-41]"),
            "too old resource version: <rv:0> (<rv>) in <ns>, k8s.io/x41, [a-z0-41]"
        );
    }

    #[test]
    fn signatures_collapse_indices_and_keep_closed_sets() {
        let d = Difference {
            sequence: "s".into(),
            exchange: 3,
            request: "PUT configmaps".into(),
            path: "watch.events[2].type".into(),
            recorded: "MODIFIED".into(),
            replayed: "ADDED".into(),
        };
        assert_eq!(
            d.signature(),
            "PUT configmaps: watch.events[*].type: MODIFIED → ADDED"
        );
    }
}
