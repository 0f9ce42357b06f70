//! The HTTP/1 framing scanner: it never panics, and the bytes of a connection flag the same
//! requests however the reads split them.
#![no_main]

use authgate::framing::{Flags, Scanner};
use libfuzzer_sys::fuzz_target;

/// Feeds `wire` in reads of `step` bytes; which of the first requests were flagged.
fn scan(wire: &[u8], step: usize) -> Vec<bool> {
    let flags = Flags::default();
    let mut scanner = Scanner::default();
    for read in wire.chunks(step) {
        scanner.feed(read, &flags);
    }
    (0..16).map(|_| flags.next_is_conflicting()).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, wire)) = data.split_first() else {
        return;
    };
    let whole = scan(wire, wire.len().max(1));
    let pieces = scan(wire, usize::from(step % 17) + 1);
    assert_eq!(whole, pieces, "the split changed what was flagged");
});
