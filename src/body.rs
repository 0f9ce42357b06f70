//! Bodies in both directions.
//!
//! Responses are an `Either`: a stream from an upstream, passed through without buffering,
//! or a small body the gateway wrote itself — no allocation for a boxed wrapper.
//!
//! Requests on their way upstream are a [`RequestBody`]: the client's stream, held to the
//! route's limits as it flows (total size, and the longest silence between two pieces), so
//! a body is never buffered to be measured.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;

pub use crate::proxy::UpstreamBody;

pub type Body = Either<UpstreamBody, Either<Full<Bytes>, Empty<Bytes>>>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Either::Left(Full::new(bytes.into())))
}

pub fn empty() -> Body {
    Either::Right(Either::Right(Empty::new()))
}

pub fn stream(upstream: UpstreamBody) -> Body {
    Either::Left(upstream)
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the route allows")]
    TooLarge,
    #[error("the client paused too long within the request body")]
    Idle,
    #[error("the request body could not be read")]
    Client(#[source] hyper::Error),
}

/// A request body within limits; `None` inside means no body at all.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Incoming>,
    remaining: u64,
    idle: Duration,
    /// Armed the first time the client makes us wait, reset at every piece.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RequestBody {
    pub fn new(inner: Incoming, max_bytes: u64, idle: Duration) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            remaining: max_bytes,
            idle,
            timer: None,
        }
    }

    /// No body (a retried request without one).
    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            remaining: 0,
            idle: Duration::ZERO,
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
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
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}
