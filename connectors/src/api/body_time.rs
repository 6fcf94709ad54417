//! A time limit on receiving a request body: `timeout` from the end of the request
//! head, plus one second for every `min_rate` octets received (as Apache's
//! `RequestReadTimeout body=…,MinRate=…`): a client that sends too slowly, or stops,
//! gets `408` problem+json and the connection is closed, instead of holding a
//! connection and a handler open for as long as it likes. A large upload at a
//! reasonable speed earns the time it needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::Problem;

/// How long a request body may take to arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTime {
    /// The time allowed before any octet counts.
    pub timeout: Duration,
    /// Octets per second a body must keep up: each `min_rate` octets received add a
    /// second.
    pub min_rate: u64,
}

impl BodyTime {
    /// When a body that began at `start` must be complete, `received` octets in.
    fn deadline(self, start: Instant, received: u64) -> Instant {
        let earned = Duration::from_millis(received.saturating_mul(1000) / self.min_rate.max(1));
        start + self.timeout + earned
    }
}

/// Middleware: the request body is bounded in time; a body that did not arrive in
/// time turns whatever the handler answered into `408` with `Connection: close`.
pub(crate) async fn bounded(
    State(time): State<BodyTime>,
    request: Request,
    next: Next,
) -> Response {
    let late = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        if body.is_end_stream() {
            body
        } else {
            let start = Instant::now();
            Body::from_stream(Timed {
                inner: body.into_data_stream(),
                time,
                start,
                received: 0,
                timer: Box::pin(tokio::time::sleep_until(time.deadline(start, 0))),
                late: Some(late.clone()),
            })
        }
    });
    let response = next.run(request).await;
    if !late.load(Ordering::Acquire) {
        return response;
    }
    let mut response = Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "body-timeout",
        "Request body too slow",
        format!(
            "the request body did not arrive in time ({} s, and a second more for every {} octets received); send it again",
            time.timeout.as_secs(),
            time.min_rate
        ),
    )
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A request body that fails once its deadline has passed.
struct Timed {
    inner: BodyDataStream,
    time: BodyTime,
    start: Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
    /// Set when the deadline passed; taken then, so the body ends after its error.
    late: Option<Arc<AtomicBool>>,
}

impl Stream for Timed {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.late.is_none() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(next) = Pin::new(&mut self.inner).poll_next(cx) {
            if let Some(Ok(chunk)) = &next {
                self.received = self.received.saturating_add(chunk.len() as u64);
                let deadline = self.time.deadline(self.start, self.received);
                self.timer.as_mut().reset(deadline);
            }
            return Poll::Ready(next);
        }
        ready!(self.timer.as_mut().poll(cx));
        if let Some(late) = self.late.take() {
            late.store(true, Ordering::Release);
        }
        Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the request body did not arrive in time",
        )))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_min_rate_octets_received_earn_a_second() {
        let time = BodyTime {
            timeout: Duration::from_secs(60),
            min_rate: 16 * 1024,
        };
        let start = Instant::now();
        assert_eq!(time.deadline(start, 0), start + Duration::from_secs(60));
        assert_eq!(
            time.deadline(start, 20 * 1024 * 1024),
            start + Duration::from_secs(60 + 1280)
        );
        assert_eq!(
            time.deadline(start, 8 * 1024),
            start + Duration::from_millis(60_500)
        );
    }
}
