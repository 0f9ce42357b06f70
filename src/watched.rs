//! A connection's stream whose reads something watches; writes pass straight through.
//! The HTTP/1 framing scanner and the HTTP/2 preface deadline are both such watchers, so
//! the stream plumbing is written once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Sees every read of the inner stream.
pub trait ReadWatcher: Unpin {
    /// `polled` is the inner read's outcome and `read` the bytes it produced (empty unless
    /// it is `Ready(Ok)`); the return value is what the reader gets.
    fn after_read(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<()>>,
        read: &[u8],
    ) -> Poll<io::Result<()>>;
}

/// `inner`, with `watcher` shown each read.
#[derive(Debug)]
pub struct Watched<S, W> {
    inner: S,
    watcher: W,
}

impl<S, W> Watched<S, W> {
    pub fn with(inner: S, watcher: W) -> Watched<S, W> {
        Watched { inner, watcher }
    }
}

impl<S: AsyncRead + Unpin, W: ReadWatcher> AsyncRead for Watched<S, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = match polled {
            Poll::Ready(Ok(())) => &buf.filled()[before..],
            _ => &[],
        };
        this.watcher.after_read(cx, polled, read)
    }
}

impl<S: AsyncWrite + Unpin, W: Unpin> AsyncWrite for Watched<S, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}
