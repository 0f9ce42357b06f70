//! The response body type of the gateway: either a stream from an upstream, passed through
//! without buffering, or a small body the gateway wrote itself. An `Either` rather than a
//! boxed body, so proxying a response costs no allocation for the body wrapper.

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;

pub type Body = Either<Incoming, Either<Full<Bytes>, Empty<Bytes>>>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Either::Left(Full::new(bytes.into())))
}

pub fn empty() -> Body {
    Either::Right(Either::Right(Empty::new()))
}

pub fn stream(incoming: Incoming) -> Body {
    Either::Left(incoming)
}
