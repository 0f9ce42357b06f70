//! Request ids: a trusted proxy's is kept, so one id follows a request through every hop;
//! anyone else's is replaced by one of ours — a random per-process prefix and a counter,
//! unique across restarts and replicas without a random draw per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderValue};

use crate::headers::X_REQUEST_ID;

/// The longest request id kept from a trusted proxy.
const MAX_KEPT_LEN: usize = 128;

/// One sequence for the process, so ids stay unique and ordered across reloads.
#[derive(Debug)]
pub(crate) struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> RequestIds {
        let mut seed = [0u8; 8];
        // Without randomness, time still separates processes well enough for log ids.
        if aws_lc_rs::rand::fill(&mut seed).is_err() {
            seed = (SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()) as u64)
                .to_le_bytes();
        }
        RequestIds {
            prefix: u64::from_le_bytes(seed),
            counter: AtomicU64::new(0),
        }
    }

    /// The id of a request: the client's own if it is a trusted proxy's, else a new one.
    pub(crate) fn of(&self, headers: &HeaderMap, trusted: bool) -> HeaderValue {
        if trusted
            && let Some(id) = headers.get(&X_REQUEST_ID)
            && id.len() <= MAX_KEPT_LEN
            && !id.is_empty()
        {
            return id.clone();
        }
        self.next()
    }

    fn next(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut text = [0u8; 32];
        let bytes = self.prefix.to_be_bytes().into_iter().chain(n.to_be_bytes());
        for (i, byte) in bytes.enumerate() {
            text[2 * i] = HEX[usize::from(byte >> 4)];
            text[2 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
        HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique() {
        let ids = RequestIds::new();
        assert_ne!(ids.next(), ids.next());
        assert_eq!(ids.next().len(), 32);
    }

    #[test]
    fn only_a_trusted_peer_keeps_its_own_id() {
        let ids = RequestIds::new();
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(ids.of(&headers, true), "abc");
        assert_ne!(ids.of(&headers, false), "abc");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static(""));
        assert_ne!(ids.of(&headers, true), "");
    }
}
