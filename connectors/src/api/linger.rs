//! Lingering on unread request bodies. A handler that answers before it reads the
//! body (401, 404, 413 …) leaves the body arriving on a connection hyper then closes;
//! the kernel answers such data with a reset, which can destroy the response before
//! the client has read it (what nginx's lingering close avoids). So the unread rest
//! of a body is read and discarded in the background, up to a bound, and the client
//! gets its answer.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::{Stream, StreamExt};

/// The most octets of an unread body read and discarded.
const LINGER_OCTETS: usize = 64 * 1024 * 1024;
/// The longest time spent reading an unread body.
const LINGER_TIME: Duration = Duration::from_secs(10);

/// Middleware: whatever the handler leaves of the request body is drained after it.
pub(crate) async fn drain_unread(request: Request, next: Next) -> Response {
    let request = request.map(|body| {
        if body.is_end_stream() {
            body
        } else {
            Body::from_stream(Draining {
                inner: Some(body.into_data_stream()),
                ended: false,
            })
        }
    });
    next.run(request).await
}

/// A request body that, dropped before its end, drains the rest in the background.
struct Draining {
    inner: Option<BodyDataStream>,
    ended: bool,
}

impl Stream for Draining {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let next = ready!(Pin::new(inner).poll_next(cx));
        if next.is_none() {
            self.ended = true;
        }
        Poll::Ready(next)
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let (Some(mut rest), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let drained = async {
                let mut read = 0;
                while let Some(Ok(chunk)) = rest.next().await {
                    read += chunk.len();
                    if read > LINGER_OCTETS {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drained).await;
        });
    }
}
