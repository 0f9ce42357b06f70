//! A request body on its way upstream, held to the route's limits as it flows: total
//! size, and the longest silence between two pieces. A body is never buffered to be
//! measured.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the request body is larger than the route allows")]
    TooLarge,
    #[error("the client paused too long within the request body")]
    Idle,
    #[error("the request body could not be read")]
    Client(#[source] hyper::Error),
}

/// A request body within limits.
#[derive(Debug)]
pub(crate) struct RequestBody {
    inner: Incoming,
    remaining: u64,
    idle: Duration,
    /// Armed the first time the client makes us wait, reset at every piece.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, max_bytes: u64, idle: Duration) -> RequestBody {
        RequestBody {
            inner,
            remaining: max_bytes,
            idle,
            timer: None,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                    this.remaining -= len;
                }
                if let Some(timer) = this.timer.as_mut() {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(BodyError::Idle)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
