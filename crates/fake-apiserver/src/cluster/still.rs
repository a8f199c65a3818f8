//! Requests that take no time on a paused Tokio clock.
//!
//! A test on Tokio's paused clock (`#[tokio::test(start_paused = true)]`) has the clock jump to
//! the next timer whenever the runtime has nothing to do. Against the in-process fake server
//! that is harmless: its answers are ready at once. Against a real kube-apiserver, the runtime
//! is idle while a request crosses the network, and the clock would jump past renewals and
//! lease ends in the meantime. [`StillClockLayer`] keeps the clock still while a request is in
//! flight (until its body has been read), and for a short real-time grace after a write, so
//! that the watch event of that write can arrive before simulated time moves on: seen from the
//! paused clock, the real server answers in no time, as the fake one does.
//!
//! It uses what Tokio documents for the purpose: a blocking task (`spawn_blocking`) inhibits
//! auto-advance while it runs. Watches are long-lived requests and do not hold the clock.

use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};

/// A [`tower::Layer`] that keeps a paused Tokio clock still while a request is in flight; see
/// the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StillClockLayer {
    /// How long a write keeps holding the clock after its answer, for its watch event.
    pub(crate) after_write: Duration,
}

impl<S> tower::Layer<S> for StillClockLayer {
    type Service = StillClock<S>;

    fn layer(&self, inner: S) -> StillClock<S> {
        StillClock {
            inner,
            after_write: self.after_write,
        }
    }
}

/// The service of [`StillClockLayer`].
#[derive(Debug, Clone)]
pub(crate) struct StillClock<S> {
    inner: S,
    after_write: Duration,
}

/// The clock is held while this lives; dropping it lets the blocking task end (after
/// `linger`), and with it the hold.
#[derive(Debug)]
struct Hold {
    /// Kept for its drop, which ends the blocking task's wait.
    _release: Option<mpsc::Sender<()>>,
}

impl Hold {
    /// Holds the clock, or does nothing outside a Tokio runtime.
    fn new(linger: Duration) -> Self {
        if tokio::runtime::Handle::try_current().is_err() {
            return Self { _release: None };
        }
        let (release, released) = mpsc::channel::<()>();
        // The task ends when the sender is dropped (recv fails): at the end of the request, or
        // when its future is cancelled.
        drop(tokio::task::spawn_blocking(move || {
            let _ = released.recv();
            std::thread::sleep(linger);
        }));
        Self {
            _release: Some(release),
        }
    }
}

fn is_watch<B>(request: &Request<B>) -> bool {
    request.uri().query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"))
    })
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for StillClock<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = Response<HeldBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let hold = (!is_watch(&request)).then(|| {
            let write = request.method() != Method::GET;
            Hold::new(if write {
                self.after_write
            } else {
                Duration::ZERO
            })
        });
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|inner| HeldBody { inner, hold }))
        })
    }
}

/// A response body that holds the clock until it has been read (or dropped).
#[derive(Debug)]
pub(crate) struct HeldBody<B> {
    inner: B,
    hold: Option<Hold>,
}

impl<B: Body + Unpin> Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.hold = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_told_apart_by_their_query() {
        let request = |uri: &str| Request::get(uri).body(()).unwrap();
        assert!(is_watch(&request(
            "/api/v1/configmaps?watch=true&resourceVersion=1"
        )));
        assert!(is_watch(&request(
            "/api/v1/configmaps?labelSelector=a&watch=1"
        )));
        assert!(!is_watch(&request(
            "/api/v1/configmaps?labelSelector=watch%3Dtrue"
        )));
        assert!(!is_watch(&request(
            "/api/v1/namespaces/default/configmaps/x"
        )));
    }

    /// Waits for a datagram that a thread sends after 20 ms of real time: the runtime is
    /// idle meanwhile, as it is while a request crosses the network.
    async fn network_wait() {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sender.send_to(b"answer", to).unwrap();
        });
        socket.recv(&mut [0; 8]).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_hold_the_paused_clock_jumps_while_waiting_for_the_network() {
        let start = tokio::time::Instant::now();
        let sleeper = tokio::spawn(tokio::time::sleep(Duration::from_secs(60)));
        network_wait().await;
        assert!(sleeper.is_finished());
        assert!(start.elapsed() >= Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_keeps_the_paused_clock_still_until_dropped() {
        let start = tokio::time::Instant::now();
        let sleeper = tokio::spawn(tokio::time::sleep(Duration::from_secs(60)));
        let hold = Hold::new(Duration::ZERO);
        network_wait().await;
        assert!(!sleeper.is_finished());
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(hold);
        sleeper.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }
}
