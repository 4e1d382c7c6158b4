//! The HTTP/1 request-smuggling scanner (`net::h1_guard::RequestFraming`) on arbitrary client
//! bytes, fed whole, split at points the input chooses, and (for short inputs) byte by byte.
//!
//! Asserts: no panic; a refused head starts inside the read that reports it (the guard cuts
//! the read there); and every way of splitting the stream reaches the same verdict: the
//! same head refused for the same reason, the same byte of a chunked body refused, or
//! nothing refused. A client controls how its bytes are split into TCP segments, so a verdict
//! that depends on the split is a bypass. A request with `Upgrade` is answered "not
//! upgraded" (the case where the guard must keep scanning), and scanning resumes there.
//!
//! Input layout: byte 0 picks `max_headers`, byte 1 the number of split points (0..=15),
//! then two bytes (little-endian) per split point, then the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::net::h1_guard::{RefusedRequest, RequestFraming, Scan, Violation};

/// `server.max_header_bytes` at its smallest allowed value (the config bounds it to
/// 8192..=1 MiB; hyper's buffer is the same size). Inputs are shorter (libFuzzer's default
/// `-max_len` is 4096), so a head over the limit is never complete in one piece either.
const MAX_HEAD_BYTES: usize = 8192;

/// Byte by byte costs one head parse per byte; keep it to inputs this short.
const BYTEWISE_MAX: usize = 1024;

/// The first refusal of a run, if any.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Head(Violation, RefusedRequest),
    /// A chunked body refused at this byte of the stream.
    Body(usize),
}

type Verdict = Option<Refusal>;

fn run<'a>(max_headers: usize, chunks: impl Iterator<Item = &'a [u8]>) -> Verdict {
    let mut framing = RequestFraming::new(MAX_HEAD_BYTES, max_headers);
    let mut verdict = None;
    let mut offset = 0;
    for chunk in chunks {
        let mut from = 0;
        loop {
            let part = &chunk[from..];
            match framing.feed(part) {
                Scan::Clean => {}
                Scan::Refused { head_start, violation, request } => {
                    assert!(head_start < part.len(), "refused head starts at {head_start}, outside a read of {} bytes", part.len());
                    assert!(verdict.is_none(), "a second verdict after {verdict:?}");
                    assert!(!framing.is_following(), "still following after a refusal");
                    verdict = Some(Refusal::Head(violation, request));
                }
                Scan::Reported { violation } => {
                    assert!(!violation.is_framing(), "{violation:?} reported, not refused");
                    assert!(!framing.is_following(), "still following after {violation:?}");
                }
                Scan::BadBody { at } => {
                    assert!(at < part.len(), "bad body byte {at} outside a read of {} bytes", part.len());
                    assert!(verdict.is_none(), "a second verdict after {verdict:?}");
                    assert!(!framing.is_following(), "still following after a bad body");
                    verdict = Some(Refusal::Body(offset + from + at));
                }
                Scan::AwaitUpgrade { at } => {
                    assert!(at <= part.len(), "upgrade wait at {at} outside a read of {} bytes", part.len());
                    // Not upgraded: the rest of this read is scanned as the next request.
                    framing.resume();
                    from += at;
                    if from < chunk.len() {
                        continue;
                    }
                }
            }
            break;
        }
        offset += chunk.len();
    }
    verdict
}

fuzz_target!(|data: &[u8]| {
    let [headers_pick, splits, rest @ ..] = data else { return };
    let max_headers = (8 + usize::from(*headers_pick) * 4).min(1000);
    let count = usize::from(splits % 16).min(rest.len() / 2);
    let (points, stream) = rest.split_at(count * 2);
    let mut cuts: Vec<usize> = points.chunks_exact(2).map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (stream.len() + 1)).collect();
    cuts.push(0);
    cuts.push(stream.len());
    cuts.sort_unstable();
    cuts.dedup();

    let whole = run(max_headers, std::iter::once(stream));
    let split = run(max_headers, cuts.windows(2).map(|w| &stream[w[0]..w[1]]));
    assert_eq!(whole, split, "verdict depends on the split at {cuts:?}");
    if stream.len() <= BYTEWISE_MAX {
        let bytewise = run(max_headers, stream.chunks(1));
        assert_eq!(whole, bytewise, "verdict differs when fed byte by byte");
    }
});
