//! The SIP message layer and the stateless proxy core on arbitrary partner bytes: the stream
//! fed whole and split at a point the input chooses, every framed message run through
//! `forward_request` (as a request from a partner) or `return_response` (as a response from
//! the inside), and the route decision for requests from the inside.
//!
//! Asserts: no panic; the framer reads the same messages and the same final refusal however
//! the stream is split (a partner controls its TCP segments, so a split-dependent reading is
//! a smuggling shape) — with one documented, fail-closed difference: a refusal that ends the
//! connection drops the messages completed earlier *in the same read* (the parser returns
//! the error alone), so the whole stream may act on fewer of them than the split one, never
//! on others; whatever `forward_request` accepts re-serialises into a message the framer
//! accepts again (nothing malformed is ever forwarded).
//!
//! Input layout: bytes 0–1 (little-endian) pick the split point; the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::sip::message::{Frame, Framer, StreamLimits};
use portcullis::sip::proxy::{Hop, Transport, forward_request, return_response};

const MAX_MESSAGE_BYTES: usize = 8192;

/// What framing `stream` in the pieces `cut` makes gives: the frames' bytes (or refusal
/// statuses) in order, and the refusal that ended the stream, if any.
fn frame(stream: &[u8], cut: usize) -> (Vec<Result<Vec<u8>, u16>>, Option<u16>) {
    let mut framer = Framer::new(StreamLimits::new(MAX_MESSAGE_BYTES));
    let mut out = Vec::new();
    for piece in [&stream[..cut], &stream[cut..]] {
        match framer.push(piece) {
            Ok(frames) => out.extend(frames.into_iter().map(|f| match f {
                Frame::Message(m) => Ok(m.to_bytes().to_vec()),
                Frame::Refused(r) => Err(r.status()),
            })),
            Err(refusal) => return (out, Some(refusal.status())),
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let stream = &data[2..];
    let cut = usize::from(u16::from_le_bytes([data[0], data[1]])) % (stream.len() + 1);
    let (whole, whole_end) = frame(stream, stream.len());
    let (split, split_end) = frame(stream, cut);
    assert_eq!(whole_end, split_end, "the final refusal depends on where the stream was cut at {cut}");
    if whole_end.is_none() {
        assert_eq!(whole, split, "the messages depend on where the stream was cut at {cut}");
    } else {
        assert!(split.starts_with(&whole), "the messages depend on where the stream was cut at {cut}");
    }

    let edge = Hop { host: "edge.example".into(), port: 5061, transport: Transport::Tls };
    let Ok(frames) = Framer::new(StreamLimits::new(MAX_MESSAGE_BYTES)).push(stream) else { return };
    for frame in frames {
        let Frame::Message(message) = frame else { continue };
        let mut message = *message;
        if message.is_request() {
            let source = "203.0.113.7:5060".parse().unwrap();
            if forward_request(&mut message, &edge, source, 7, true).is_ok() {
                let bytes = message.to_bytes();
                let again = Framer::new(StreamLimits::new(MAX_MESSAGE_BYTES * 2)).push(&bytes);
                assert!(
                    matches!(again.as_deref(), Ok([Frame::Message(_)])),
                    "a forwarded request does not frame again: {:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        } else {
            let _ = return_response(&mut message, &edge);
        }
    }
});
