//! What a test's clients of a real API server send: counted, and cut off on demand.
//!
//! A real kube-apiserver is shared by every test of a run, and keeps no counters per test. The
//! tap sits in the test's own clients instead:
//! - it counts their requests by verb, as the fake server counts what it receives, so that a
//!   test can assert what an operation costs on both servers;
//! - it cuts them off: while the cut is on, every new request fails at once with a connection
//!   error (which kube reports as `kube::Error::Service`, a transient error), as a refusing
//!   partition of the fake server makes them fail. Watches already open go on.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::Request;

use crate::log::{RequestCounts, Verb};
use crate::request::{Route, verb_of};

/// The switch and the counters shared by every client of one test.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tap {
    cut: Arc<AtomicBool>,
    counts: Arc<Mutex<RequestCounts>>,
}

impl Tap {
    pub(crate) fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
    }

    pub(crate) fn counts(&self) -> RequestCounts {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn reset(&self) {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner) = RequestCounts::default();
    }

    fn count<B>(&self, request: &Request<B>) {
        let watch = request.uri().query().is_some_and(|query| {
            query
                .split('&')
                .any(|pair| matches!(pair, "watch=true" | "watch=1"))
        });
        let verb = match Route::parse(request.uri().path()) {
            Route::Resource(path) => verb_of(request.method(), &path, watch),
            _ => Some(Verb::Discovery),
        };
        if let Some(verb) = verb {
            self.counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(verb);
        }
    }
}

/// The error of a request made while cut off.
#[derive(Debug, thiserror::Error)]
#[error("connection refused: the test cut this client off from the API server")]
pub(crate) struct CutOff;

impl<S> tower::Layer<S> for Tap {
    type Service = Tapped<S>;

    fn layer(&self, inner: S) -> Tapped<S> {
        Tapped {
            inner,
            tap: self.clone(),
        }
    }
}

/// The service of [`Tap`].
#[derive(Debug, Clone)]
pub(crate) struct Tapped<S> {
    inner: S,
    tap: Tap,
}

impl<S, B> tower::Service<Request<B>> for Tapped<S>
where
    S: tower::Service<Request<B>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.tap.cut.load(Ordering::SeqCst) {
            return Box::pin(async { Err(CutOff.into()) });
        }
        self.tap.count(&request);
        let answer = self.inner.call(request);
        Box::pin(async move { answer.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_verb_as_the_fake_server_counts_them() {
        let tap = Tap::default();
        for (method, uri) in [
            ("GET", "/api/v1/namespaces/ns/configmaps/lockheed-a"),
            ("GET", "/api/v1/namespaces/ns/configmaps?labelSelector=x"),
            (
                "GET",
                "/api/v1/namespaces/ns/configmaps?watch=true&resourceVersion=3",
            ),
            ("POST", "/api/v1/namespaces/ns/configmaps"),
            ("PUT", "/api/v1/namespaces/ns/configmaps/lockheed-a"),
            ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/a"),
            ("GET", "/version"),
        ] {
            tap.count(&Request::builder().method(method).uri(uri).body(()).unwrap());
        }
        let counts = tap.counts();
        let by_verb: Vec<(Verb, u64)> = counts.iter().collect();
        assert_eq!(
            by_verb,
            [
                (Verb::Get, 1),
                (Verb::List, 1),
                (Verb::Watch, 1),
                (Verb::Create, 1),
                (Verb::Update, 2),
                (Verb::Discovery, 1),
            ]
        );
        tap.reset();
        assert_eq!(tap.counts().total(), 0);
    }
}
