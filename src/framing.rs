//! Request framing as the wire shows it, for HTTP/1 connections: finds requests that carry
//! both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper reads such a request by `Transfer-Encoding` alone and drops `Content-Length` before
//! the handler sees it (RFC 9112 §6.1 allows that), so the conflict, the mark of a request
//! smuggling attempt, is invisible above the connection. This scanner watches the bytes
//! hyper reads, follows the message framing (heads, fixed and chunked bodies), and flags
//! each conflicting request by its position on the connection; the server marks that
//! request, and the gateway answers it 400 without forwarding it.
//!
//! A request asking for an upgrade changes nothing until the upgrade happens: hyper reads
//! the next request when the answer was not 101, so the scanner follows on, and the server
//! stops it (`Flags::upgraded`) only once a 101 turned the connection into a tunnel.
//!
//! It fails open: anything it cannot follow (a malformed head, a huge head) stops the
//! scanning for the rest of the connection, leaving hyper's own handling, which is safe in
//! itself (one framing upstream, the connection closed after the response).

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::watched::ReadWatcher;

/// Marks a request whose head had both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug, Clone, Copy)]
pub struct ConflictingFraming;

/// Heads bigger than this are not followed: the most `server.max_header_bytes` allows
/// (hyper answers 431 to a head over the configured size anyway).
const MAX_HEAD: usize = 1 << 20;
/// Header lines parsed in place; a head with more is parsed again with room for the most
/// `server.max_headers` allows, so no configuration lets a head past the scanner.
const USUAL_HEADERS: usize = 256;
const MAX_HEADERS: usize = 10_000;

/// Which requests of one connection are flagged, shared by the scanner (which sees the
/// bytes first) and the service (which numbers the requests as hyper hands them over).
#[derive(Debug, Default)]
pub struct Flags {
    flagged: Mutex<VecDeque<u64>>,
    served: AtomicU64,
    upgraded: AtomicBool,
}

impl Flags {
    /// Numbers the next request the service receives; true if its head was flagged.
    pub fn next_is_conflicting(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        let mut flagged = self.flagged.lock().unwrap_or_else(|p| p.into_inner());
        while flagged.front().is_some_and(|f| *f < index) {
            flagged.pop_front();
        }
        if flagged.front() == Some(&index) {
            flagged.pop_front();
            return true;
        }
        false
    }

    /// The connection is a tunnel from here on: what follows is not HTTP.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    fn flag(&self, index: u64) {
        self.flagged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(index);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Inside a body of known length: bytes left.
    Fixed(u64),
    /// At a chunk-size line (collected in `line`).
    ChunkSize,
    /// Inside a chunk: bytes left, then its CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data: bytes of it left.
    ChunkEnd(u8),
    /// After the last chunk, or after a trailer line: at the start of a line.
    TrailerStart,
    /// Inside a trailer line: until its CR.
    Trailer,
    /// After a trailer line's CR: its LF.
    TrailerLf,
    /// After the CR of the empty line that ends the trailers: its LF.
    EndLf,
    /// Not following any more.
    Stopped,
}

/// The framing follower of one connection.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The head, or the current chunk-size or trailer line, so far.
    line: Vec<u8>,
    /// Heads seen: the index of the next one.
    heads: u64,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Head,
            line: Vec::new(),
            heads: 0,
        }
    }
}

impl Scanner {
    /// Follows `bytes`, flagging conflicting heads in `flags`.
    pub fn feed(&mut self, mut bytes: &[u8], flags: &Flags) {
        if flags.upgraded.load(Ordering::Acquire) {
            return self.stop();
        }
        while !bytes.is_empty() {
            match self.state {
                State::Stopped => return,
                State::Head => {
                    if self.line.is_empty() {
                        // Empty lines before a request line are ignored (RFC 9112 §2.2).
                        let skip = bytes
                            .iter()
                            .take_while(|b| matches!(b, b'\r' | b'\n'))
                            .count();
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            return;
                        }
                    }
                    if self.line.is_empty() {
                        // The usual case: a whole head in one read, followed where it lies.
                        if let Some(end) = head_end(bytes, 0).filter(|&end| end <= MAX_HEAD) {
                            self.end_of_head(&bytes[..end], flags);
                            bytes = &bytes[end..];
                            continue;
                        }
                    }
                    let searched = self.line.len();
                    let take = bytes
                        .len()
                        .min(MAX_HEAD + 1 - self.line.len().min(MAX_HEAD));
                    self.line.extend_from_slice(&bytes[..take]);
                    match head_end(&self.line, searched) {
                        Some(end) => {
                            let consumed = take - (self.line.len() - end);
                            let mut head = std::mem::take(&mut self.line);
                            self.end_of_head(&head[..end], flags);
                            if self.state != State::Stopped {
                                // Kept for its capacity.
                                head.clear();
                                self.line = head;
                            }
                            bytes = &bytes[consumed..];
                        }
                        None if self.line.len() > MAX_HEAD => self.stop(),
                        None => return,
                    }
                }
                State::Fixed(left) => {
                    let n = (bytes.len() as u64).min(left);
                    bytes = &bytes[n as usize..];
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Fixed(left - n)
                    };
                }
                State::ChunkSize => {
                    let Some(at) = memchr::memchr(b'\n', bytes) else {
                        self.line.extend_from_slice(bytes);
                        if self.line.len() > MAX_HEAD {
                            self.stop();
                        }
                        return;
                    };
                    self.line.extend_from_slice(&bytes[..=at]);
                    bytes = &bytes[at + 1..];
                    let line = std::mem::take(&mut self.line);
                    match chunk_size(&line) {
                        Some(0) => self.state = State::TrailerStart,
                        Some(size) => self.state = State::ChunkData(size),
                        None => self.stop(),
                    }
                }
                // Trailers end only at an empty CRLF line, and a line only at CRLF: a bare
                // LF is part of a trailer line to hyper, which reads on to the next CRLF.
                State::TrailerStart => {
                    if bytes[0] == b'\r' {
                        self.state = State::EndLf;
                        bytes = &bytes[1..];
                    } else {
                        self.state = State::Trailer;
                    }
                }
                State::Trailer => match memchr::memchr(b'\r', bytes) {
                    Some(at) => {
                        self.state = State::TrailerLf;
                        bytes = &bytes[at + 1..];
                    }
                    None => return,
                },
                State::TrailerLf | State::EndLf => {
                    if bytes[0] != b'\n' {
                        // hyper refuses the body and closes the connection.
                        return self.stop();
                    }
                    bytes = &bytes[1..];
                    self.state = if self.state == State::EndLf {
                        State::Head
                    } else {
                        State::TrailerStart
                    };
                }
                State::ChunkData(left) => {
                    let n = (bytes.len() as u64).min(left);
                    bytes = &bytes[n as usize..];
                    self.state = if n == left {
                        State::ChunkEnd(2)
                    } else {
                        State::ChunkData(left - n)
                    };
                }
                State::ChunkEnd(left) => {
                    let n = bytes.len().min(usize::from(left));
                    bytes = &bytes[n..];
                    // `n` is at most 2, so the conversion cannot truncate.
                    let left = left - n as u8;
                    self.state = if left == 0 {
                        State::ChunkSize
                    } else {
                        State::ChunkEnd(left)
                    };
                }
            }
        }
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.line = Vec::new();
    }

    /// `head` is a whole request head: flag it if it conflicts, and follow its body.
    fn end_of_head(&mut self, head: &[u8], flags: &Flags) {
        // Uninitialized: filling 256 empty headers would cost more than the parse.
        let mut headers = [const { MaybeUninit::uninit() }; USUAL_HEADERS];
        let framing = match Framing::of(head, &mut headers) {
            Err(httparse::Error::TooManyHeaders) => {
                let mut many: Vec<_> = std::iter::repeat_with(MaybeUninit::uninit)
                    .take(MAX_HEADERS)
                    .collect();
                Framing::of(head, &mut many)
            }
            parsed => parsed,
        };
        let Ok(Some(Framing { length, chunked })) = framing else {
            return self.stop();
        };
        let index = self.heads;
        self.heads += 1;
        if length.is_some() && chunked.is_some() {
            flags.flag(index);
        }
        self.state = match (chunked, length) {
            (Some(true), _) => State::ChunkSize,
            (Some(false), _) => State::Stopped,
            (None, Some(Some(0)) | None) => State::Head,
            (None, Some(Some(n))) => State::Fixed(n),
            // A non-chunked coding is refused; hyper answers 400 to a length it cannot read.
            (None, Some(None)) => State::Stopped,
        };
    }
}

/// What a request head says about its body.
struct Framing {
    /// Any Content-Length, valid (`Some(n)`) or not: hyper ignores its value once it has
    /// seen Transfer-Encoding, but it is there.
    length: Option<Option<u64>>,
    /// Transfer-Encoding, and whether it ends in `chunked`.
    chunked: Option<bool>,
}

impl Framing {
    /// `None` if the parser ends the head elsewhere than the scanner did: the count of
    /// heads would drift.
    fn of<'h>(
        head: &'h [u8],
        headers: &mut [MaybeUninit<httparse::Header<'h>>],
    ) -> Result<Option<Framing>, httparse::Error> {
        let mut request = httparse::Request::new(&mut []);
        if request.parse_with_uninit_headers(head, headers)?
            != httparse::Status::Complete(head.len())
        {
            return Ok(None);
        }
        let mut framing = Framing {
            length: None,
            chunked: None,
        };
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                framing.length = Some(
                    std::str::from_utf8(header.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok()),
                );
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
                framing.chunked = Some(value.trim_end().ends_with("chunked"));
            }
        }
        Ok(Some(framing))
    }
}

/// Where the head in `bytes` ends (after its blank line), looking at the line ends from
/// `from` on (the bytes before it were searched already). A line may end in a bare LF, as
/// hyper (httparse) accepts, so a blank line is `\n` or `\r\n` after a line end.
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    // Line by line: a head has a few dozen lines, so this beats a substring search.
    memchr::memchr_iter(b'\n', &bytes[from..])
        .map(|at| from + at)
        .find(|&at| at >= 1 && bytes[at - 1] == b'\n' || at >= 2 && &bytes[at - 2..at] == b"\n\r")
        .map(|at| at + 1)
}

/// The size of a chunk-size line (`1a;ext=x\r\n`); `None` where hyper refuses the line
/// (it closes the connection then).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let digits = line.split(|b| *b == b';').next()?;
    let digits = std::str::from_utf8(digits).ok()?.trim();
    u64::from_str_radix(digits, 16).ok()
}

/// A connection's stream, followed by a [`Scanner`] as hyper reads it.
pub type Watched<S> = crate::watched::Watched<S, Follower>;

impl<S> Watched<S> {
    pub fn new(inner: S, flags: Arc<Flags>) -> Watched<S> {
        crate::watched::Watched::with(
            inner,
            Follower {
                scanner: Scanner::default(),
                flags,
            },
        )
    }
}

/// The scanner of one connection and the flags it sets.
#[derive(Debug)]
pub struct Follower {
    scanner: Scanner,
    flags: Arc<Flags>,
}

impl ReadWatcher for Follower {
    fn after_read(
        &mut self,
        _: &mut Context<'_>,
        polled: Poll<io::Result<()>>,
        read: &[u8],
    ) -> Poll<io::Result<()>> {
        self.scanner.feed(read, &self.flags);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes; the indices of the flagged heads.
    fn flagged(wire: &[u8], step: usize) -> (Vec<u64>, u64) {
        let flags = Flags::default();
        let mut scanner = Scanner::default();
        for piece in wire.chunks(step) {
            scanner.feed(piece, &flags);
        }
        let found = flags
            .flagged
            .lock()
            .expect("lock")
            .iter()
            .copied()
            .collect();
        (found, scanner.heads)
    }

    const PLAIN: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    const FIXED: &[u8] = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\nTransfer-Encoding: chunked\r\n\r\n";
    const CHUNKED: &[u8] =
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nTrailer: 1\r\n\r\n";
    const BOTH: &[u8] =
        b"POST /d HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    const BOTH_TE_FIRST: &[u8] =
        b"POST /e HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 40\r\n\r\n3\r\nabc\r\n0\r\n\r\n";

    #[test]
    fn flags_exactly_the_conflicting_heads_whatever_the_piece_size() {
        let mut wire = Vec::new();
        for part in [PLAIN, FIXED, BOTH, CHUNKED, BOTH_TE_FIRST, PLAIN] {
            wire.extend_from_slice(part);
        }
        for step in [1, 2, 3, 5, 7, 13, 64, wire.len()] {
            assert_eq!(flagged(&wire, step), (vec![2, 4], 6), "step {step}");
        }
    }

    #[test]
    fn heads_with_bare_line_feeds_are_followed_like_hyper_reads_them() {
        const BOTH_LF: &[u8] =
            b"POST /f HTTP/1.1\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\r\n\r\n";
        const MIXED: &[u8] = b"GET /g HTTP/1.1\r\nHost: x\n\r\n";
        let mut wire = Vec::new();
        for part in [BOTH_LF, MIXED, PLAIN, BOTH] {
            wire.extend_from_slice(part);
        }
        for step in [1, 2, 3, 5, 7, 13, 64, wire.len()] {
            assert_eq!(flagged(&wire, step), (vec![0, 3], 4), "step {step}");
        }
    }

    #[test]
    fn trailers_end_where_hyper_ends_them() {
        // After `0\r\n`, a bare LF starts a trailer line to hyper, which then reads the
        // next "request" as trailers up to the empty CRLF line.
        const SWALLOWING: &[u8] =
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /swallowed HTTP/1.1\r\nHost: x\r\n\r\n";
        const TRAILERS: &[u8] =
            b"POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nA: 1\r\nB: 2\r\n\r\n";
        let mut wire = Vec::new();
        for part in [SWALLOWING, TRAILERS, BOTH] {
            wire.extend_from_slice(part);
        }
        for step in [1, 2, 3, 5, 7, 13, 64, wire.len()] {
            assert_eq!(flagged(&wire, step), (vec![2], 3), "step {step}");
        }
    }

    #[test]
    fn any_content_length_beside_transfer_encoding_is_flagged() {
        for head in [
            &b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n0\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5, 5\r\n\r\n0\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length:\r\n\r\n0\r\n\r\n",
        ] {
            let mut wire = head.to_vec();
            wire.extend_from_slice(BOTH);
            assert_eq!(
                flagged(&wire, wire.len()),
                (vec![0, 1], 2),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn heads_with_many_header_lines_are_followed() {
        let mut wire = b"POST /many HTTP/1.1\r\n".to_vec();
        for i in 0..1000 {
            wire.extend_from_slice(format!("X-Filler-{i}: {i}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        wire.extend_from_slice(BOTH);
        for step in [7, 4096, wire.len()] {
            assert_eq!(flagged(&wire, step), (vec![0, 1], 2), "step {step}");
        }
    }

    #[test]
    fn a_body_that_looks_like_a_head_is_skipped() {
        // FIXED's body spells a conflicting header: it is body, not head.
        let mut wire = FIXED.to_vec();
        wire.extend_from_slice(PLAIN);
        assert_eq!(flagged(&wire, 4), (vec![], 2));
    }

    #[test]
    fn an_upgrade_that_did_not_happen_changes_nothing() {
        for asking in [
            &b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
            b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let mut wire = asking.to_vec();
            wire.extend_from_slice(BOTH);
            assert_eq!(flagged(&wire, 3), (vec![1], 2));
        }
    }

    #[test]
    fn a_tunnel_and_garbage_stop_the_scanning() {
        let flags = Flags::default();
        let mut scanner = Scanner::default();
        scanner.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", &flags);
        flags.upgraded();
        scanner.feed(BOTH, &flags);
        assert_eq!(scanner.heads, 1);
        assert!(flags.flagged.lock().expect("lock").is_empty());
        assert_eq!(flagged(b"\x00\x01garbage\r\n\r\n", 1).0, Vec::<u64>::new());
    }

    #[test]
    fn the_service_side_numbers_requests_in_order() {
        let flags = Flags::default();
        flags.flag(1);
        flags.flag(3);
        let seen: Vec<bool> = (0..5).map(|_| flags.next_is_conflicting()).collect();
        assert_eq!(seen, vec![false, true, false, true, false]);
    }
}
