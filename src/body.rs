//! Response bodies: an `Either`: a stream from an upstream, passed through without buffering,
//! or a small body the gateway wrote itself — no allocation for a boxed wrapper.
//! (Request bodies on their way upstream are `request_body`'s.)

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};

use crate::pool::UpstreamBody;

pub(crate) type Body = Either<UpstreamBody, Either<Full<Bytes>, Empty<Bytes>>>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Either::Left(Full::new(bytes.into())))
}

pub(crate) fn empty() -> Body {
    Either::Right(Either::Right(Empty::new()))
}

pub(crate) fn stream(upstream: UpstreamBody) -> Body {
    Either::Left(upstream)
}
