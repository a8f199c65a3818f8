//! Watch streams: replay, then live events, bookmarks, timeouts, and closing on demand.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use super::faults::{ClientCuts, is_cut};
use super::resources::ResourceType;
use super::status::ApiError;
use super::store::{Event, EventType, Selectors, Store, WatchStart};

/// What one watch asked for.
#[derive(Debug, Clone)]
pub(crate) struct WatchParams {
    pub(crate) rt: ResourceType,
    pub(crate) namespace: Option<String>,
    pub(crate) selectors: Selectors,
    pub(crate) bookmarks: bool,
    /// `sendInitialEvents=true`: end the initial `ADDED`s with a bookmark that says so.
    pub(crate) initial_events_end: bool,
    pub(crate) timeout: Duration,
    pub(crate) bookmark_interval: Duration,
}

/// How a watch can be ended from outside: the server dropping, or a test closing watches.
#[derive(Debug, Clone)]
pub(crate) struct Closers {
    pub(crate) shutdown: CancellationToken,
    pub(crate) close: watch::Receiver<u64>,
    /// `false` during a blackhole partition: events wait.
    pub(crate) link_up: watch::Receiver<bool>,
    /// Clients cut off by a blackhole of their own: events to them wait too.
    pub(crate) cuts: watch::Receiver<ClientCuts>,
    /// The bearer token of the client that watches.
    pub(crate) token: Option<String>,
}

fn frame(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object }))
        .expect("JSON values always serialize");
    line.push(b'\n');
    Bytes::from(line)
}

/// The single `ERROR` event of a watch that cannot start (410 Expired).
pub(crate) fn error_frame(err: &ApiError) -> Bytes {
    frame("ERROR", &err.to_status())
}

fn bookmark(rt: &ResourceType, rv: u64, initial_events_end: bool) -> Bytes {
    let mut object = json!({
        "kind": rt.kind,
        "apiVersion": rt.api_version(),
        "metadata": { "resourceVersion": rv.to_string() },
    });
    if initial_events_end {
        object["metadata"]["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    frame("BOOKMARK", &object)
}

/// The event a watcher with `params` sees for `event`, if any. Like kube-apiserver's cache, an
/// object that starts matching the selectors is `ADDED` and one that stops matching is
/// `DELETED`.
fn translate(params: &WatchParams, event: &Event) -> Option<Bytes> {
    if event.key.group != params.rt.group || event.key.plural != params.rt.plural {
        return None;
    }
    if let Some(ns) = &params.namespace
        && params.rt.namespaced
        && event.key.namespace != *ns
    {
        return None;
    }
    let now = params.selectors.matches(&event.object);
    let before = event
        .previous
        .as_ref()
        .is_some_and(|p| params.selectors.matches(p));
    let (kind, object) = match (event.kind, before, now) {
        (EventType::Added, _, true) | (EventType::Modified, false, true) => {
            ("ADDED", &event.object)
        }
        (EventType::Modified, true, true) => ("MODIFIED", &event.object),
        (EventType::Deleted, true, _) => ("DELETED", &event.object),
        // Like kube-apiserver: the object as this watcher last saw it, at the new revision.
        (EventType::Modified, true, false) => {
            let mut last_seen = event.previous.clone().unwrap_or_default();
            last_seen["metadata"]["resourceVersion"] = json!(event.rv.to_string());
            return Some(frame("DELETED", &Store::present(&params.rt, &last_seen)));
        }
        _ => return None,
    };
    Some(frame(kind, &Store::present(&params.rt, object)))
}

/// Why a watch stopped.
struct Ended;

/// Sends one event, waiting out a blackhole first; gives up when the watch is closed, times
/// out, or the client goes away (a client that stops reading cannot keep a watch forever).
async fn deliver(
    tx: &mpsc::Sender<Bytes>,
    bytes: Bytes,
    closers: &mut Closers,
    deadline: &mut Pin<&mut Sleep>,
) -> Result<(), Ended> {
    loop {
        tokio::select! {
            biased;
            () = closers.shutdown.cancelled() => return Err(Ended),
            _ = closers.close.changed() => return Err(Ended),
            () = deadline.as_mut() => return Err(Ended),
            up = closers.link_up.wait_for(|up| *up) => if up.is_err() { return Err(Ended) },
        }
        if !is_cut(&closers.cuts.borrow(), closers.token.as_deref()) {
            break;
        }
        // This client is cut off: wait for it to heal (by itself, after a while, or when told).
        tokio::select! {
            biased;
            () = closers.shutdown.cancelled() => return Err(Ended),
            _ = closers.close.changed() => return Err(Ended),
            () = deadline.as_mut() => return Err(Ended),
            _ = closers.cuts.changed() => {}
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
    }
    tokio::select! {
        biased;
        () = closers.shutdown.cancelled() => Err(Ended),
        _ = closers.close.changed() => Err(Ended),
        () = deadline.as_mut() => Err(Ended),
        sent = tx.send(bytes) => sent.map_err(|_| Ended),
    }
}

/// Where one watch's events go, and what ends it.
struct Sink<'a> {
    tx: &'a mpsc::Sender<Bytes>,
    closers: &'a mut Closers,
    /// The watch's timeout.
    deadline: Pin<&'a mut Sleep>,
}

impl Sink<'_> {
    /// Sends one event (see [`deliver`]).
    async fn send(&mut self, bytes: Bytes) -> Result<(), Ended> {
        deliver(self.tx, bytes, self.closers, &mut self.deadline).await
    }
}

/// Runs one watch until it times out, is closed, or its client goes away, sending
/// newline-delimited JSON events into `tx`.
pub(crate) async fn run(
    start: WatchStart,
    params: WatchParams,
    mut closers: Closers,
    tx: mpsc::Sender<Bytes>,
) {
    let WatchStart {
        replay,
        live,
        rv,
        after,
    } = start;
    let deadline = tokio::time::sleep(params.timeout);
    tokio::pin!(deadline);
    let mut sink = Sink {
        tx: &tx,
        closers: &mut closers,
        deadline,
    };
    if send_replay(&mut sink, &params, &replay, rv).await.is_ok() {
        follow(&mut sink, &params, live, after, rv).await;
    }
}

/// Sends the events a watch starts with, then, with `sendInitialEvents`, the bookmark that ends
/// them (at `rv`, where the watch starts).
async fn send_replay(
    sink: &mut Sink<'_>,
    params: &WatchParams,
    replay: &[Arc<Event>],
    rv: u64,
) -> Result<(), Ended> {
    for event in replay {
        if let Some(bytes) = translate(params, event) {
            sink.send(bytes).await?;
        }
    }
    if params.initial_events_end {
        sink.send(bookmark(&params.rt, rv, true)).await?;
    }
    Ok(())
}

/// When the one bookmark before the timeout is due, if it is.
///
/// Like kube-apiserver's cache, one bookmark 2 s before the timeout, so that a client resumes
/// from as late as possible; the cache schedules it when the watch starts, or for a watch
/// with initial events when their end's bookmark has gone (on its bookmark timer, about a
/// second later): too late for a timeout that near.
fn pre_timeout_bookmark(params: &WatchParams) -> Option<Duration> {
    let scheduled = Duration::from_secs(u64::from(params.initial_events_end));
    params
        .timeout
        .checked_sub(Duration::from_secs(2))
        .filter(|&at| params.bookmarks && at > scheduled)
}

/// Sends live events after revision `after`, and bookmarks, until the watch ends; `rv` is the
/// revision it is at so far.
async fn follow(
    sink: &mut Sink<'_>,
    params: &WatchParams,
    mut live: broadcast::Receiver<Arc<Event>>,
    after: u64,
    rv: u64,
) {
    let mut last_rv = rv;
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + params.bookmark_interval,
        params.bookmark_interval,
    );
    let before_the_end = pre_timeout_bookmark(params);
    let pre_timeout = tokio::time::sleep(before_the_end.unwrap_or(params.timeout));
    tokio::pin!(pre_timeout);
    let mut pre_timeout_due = before_the_end.is_some();
    loop {
        let bytes = tokio::select! {
            biased;
            () = sink.closers.shutdown.cancelled() => return,
            _ = sink.closers.close.changed() => return,
            () = &mut sink.deadline => return,
            () = sink.tx.closed() => return,
            received = live.recv() => match received {
                Ok(event) if event.rv <= after => continue,
                Ok(event) => {
                    last_rv = event.rv;
                    match translate(params, &event) {
                        Some(bytes) => bytes,
                        None => continue,
                    }
                }
                // A watcher that falls behind is closed, as kube-apiserver closes slow
                // watchers; the client resumes from its last resourceVersion.
                Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick(), if params.bookmarks => bookmark(&params.rt, last_rv, false),
            () = &mut pre_timeout, if pre_timeout_due => {
                pre_timeout_due = false;
                bookmark(&params.rt, last_rv, false)
            }
        };
        if sink.send(bytes).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelSelector;
    use crate::store::ObjectKey;

    fn params(label: &str) -> WatchParams {
        WatchParams {
            rt: ResourceType::namespaced("", "v1", "configmaps", "ConfigMap"),
            namespace: Some("default".into()),
            selectors: Selectors {
                label: LabelSelector::parse(label).unwrap(),
                ..Selectors::default()
            },
            bookmarks: false,
            initial_events_end: false,
            timeout: Duration::from_secs(1),
            bookmark_interval: Duration::from_secs(1),
        }
    }

    fn event(kind: EventType, before: Option<&str>, after: &str, ns: &str) -> Event {
        let obj =
            |app: &str| json!({"metadata": {"name": "x", "namespace": ns, "labels": {"app": app}}});
        Event {
            rv: 7,
            kind,
            key: ObjectKey {
                group: String::new(),
                plural: "configmaps".into(),
                namespace: ns.into(),
                name: "x".into(),
            },
            object: obj(after),
            previous: before.map(obj),
        }
    }

    fn kind_of(bytes: Option<Bytes>) -> Option<String> {
        bytes.map(|b| {
            serde_json::from_slice::<Value>(&b).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
    }

    #[test]
    fn selector_transitions() {
        let p = params("app=web");
        let t = |e: Event| kind_of(translate(&p, &e));
        assert_eq!(
            t(event(EventType::Added, None, "web", "default")).as_deref(),
            Some("ADDED")
        );
        assert_eq!(t(event(EventType::Added, None, "db", "default")), None);
        assert_eq!(
            t(event(EventType::Modified, Some("web"), "web", "default")).as_deref(),
            Some("MODIFIED")
        );
        assert_eq!(
            t(event(EventType::Modified, Some("db"), "web", "default")).as_deref(),
            Some("ADDED")
        );
        assert_eq!(
            t(event(EventType::Modified, Some("web"), "db", "default")).as_deref(),
            Some("DELETED")
        );
        assert_eq!(
            t(event(EventType::Modified, Some("db"), "db", "default")),
            None
        );
        assert_eq!(
            t(event(EventType::Deleted, Some("web"), "web", "default")).as_deref(),
            Some("DELETED")
        );
        assert_eq!(t(event(EventType::Added, None, "web", "other")), None);
    }
}
