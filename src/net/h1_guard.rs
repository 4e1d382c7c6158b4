//! Request-smuggling guard for HTTP/1.x client connections.
//!
//! hyper silently repairs ambiguous framing (it drops a `Content-Length` that arrives with
//! `Transfer-Encoding`, and collapses duplicate equal `Content-Length`s), so the request a
//! handler sees no longer shows the attack. An edge must instead refuse such requests with
//! 400 before anything reaches an upstream (RFC 9112 §6.3 allows this, and every upstream
//! that parses framing differently is a smuggling target).
//!
//! [`RequestFraming`] is a sans-io scanner that follows the client byte stream request by
//! request: it finds each request head with `httparse` (the parser hyper itself uses, with
//! the same defaults, so both agree on where a head ends), checks the framing headers, and
//! skips the body (`Content-Length` bytes or the chunked encoding). [`GuardedIo`] runs the
//! scanner over every read; on a bad head it replaces the head with bytes hyper must reject
//! (so hyper answers 400 in order, after earlier pipelined responses, and closes), and
//! every later read is end-of-stream: the refused head and what follows never reach hyper.
//!
//! The chunked encoding is followed with hyper's own grammar (CRLF everywhere; an empty size
//! line, bare LF — which hyper reads as trailer text but other parsers as a line end — and
//! any byte hyper would refuse are [`Scan::BadBody`]): the stream is cut there, so hyper
//! sees a truncated body, the handler answers 400, and nothing after it is read.
//!
//! A request with an `Upgrade` field is followed to the end of its body, then the bytes
//! after it are held back until the handler says whether the connection was upgraded
//! ([`UpgradeGate`]): a real upgrade turns the rest into an opaque tunnel; any other answer
//! (a refusal, an upstream that did not switch) resumes scanning, so no HTTP/1 byte of a
//! connection that is not actually upgraded escapes the guard.
//!
//! Threat model: a client that wants two parsers (ours, an upstream's) to disagree on where
//! a request ends. Heads the scanner cannot read (malformed, oversized) are left to hyper,
//! which refuses them and closes; the HTTP/2 preface on a plain listener ends scanning
//! (HTTP/2 frames carry their own lengths).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Header fields the scanner can look at (hyper's own cap is `server.max_headers`, at most
/// 1000; a head with more fields than this is left to hyper, which answers 431 for it).
const MAX_SCANNED_HEADERS: usize = 1000;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndChunked,
    /// More than one `Content-Length` field.
    DuplicateContentLength,
    /// A `Content-Length` that is not a plain decimal number.
    InvalidContentLength,
    /// More than one `Transfer-Encoding` field, or one whose last coding is not `chunked`.
    InvalidTransferEncoding,
    /// A head the HTTP parser cannot read (hyper answers 400 itself).
    MalformedHead,
    /// A head over the size or field-count limit (hyper answers 431 itself).
    OversizedHead,
    /// A body whose chunked framing is broken: cut there (the handler answers 400 if it
    /// reads the body; if it answered without reading it, the connection just closes).
    BrokenChunk,
}

impl Violation {
    /// Short text for logs and the 400 body.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            Violation::DuplicateContentLength => "duplicate Content-Length",
            Violation::InvalidContentLength => "invalid Content-Length",
            Violation::InvalidTransferEncoding => "invalid Transfer-Encoding",
            Violation::MalformedHead => "malformed request head",
            Violation::OversizedHead => "oversized request head",
            Violation::BrokenChunk => "invalid chunked framing",
        }
    }

    /// Whether the guard itself refused the request head (ambiguous framing), as opposed to
    /// reporting a head hyper refuses, or a broken body.
    pub fn is_framing(self) -> bool {
        !matches!(self, Violation::MalformedHead | Violation::OversizedHead | Violation::BrokenChunk)
    }
}

/// The request line of a refused request, for the access log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusedRequest {
    pub method: String,
    pub path: String,
    pub host: String,
}

/// What the scanner concluded about a run of bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// All bytes are fine to hand to the HTTP parser.
    Clean,
    /// A refused request head starts at byte `head_start` of the run (0 when it started
    /// in an earlier run).
    Refused { head_start: usize, violation: Violation, request: RefusedRequest },
    /// A head hyper will refuse itself (400/431); reported, nothing hidden.
    Reported { violation: Violation },
    /// Invalid chunked framing at byte `at` of the run: the stream must end there (hyper
    /// then fails the body and the handler answers 400).
    BadBody { at: usize },
    /// The request with an `Upgrade` field ended at byte `at`: what follows must wait for the
    /// handler's decision ([`RequestFraming::resume`] or [`RequestFraming::stop`]).
    AwaitUpgrade { at: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size (`seen_digit`: at least one).
    Size {
        seen_digit: bool,
    },
    /// Spaces or tabs after the size.
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: CR of the final CRLF, or the first byte of a trailer line.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body,
    Chunked(Chunk),
    /// A request with `Upgrade` ended: the next bytes wait for the handler's decision.
    AwaitUpgrade,
    /// The scanner stopped following the stream (see module docs).
    Stopped,
}

/// Follows request framing across reads (sans-io).
#[derive(Debug)]
pub struct RequestFraming {
    state: State,
    /// The current request carries `Upgrade`: after its body, await the decision.
    upgrade: bool,
    /// Requests with `Upgrade` seen so far (the handler decides on each, in order).
    upgrade_requests: u64,
    /// Bytes of the current head not yet complete.
    head: Vec<u8>,
    /// Remaining body or chunk-data bytes.
    remaining: u64,
    max_head_bytes: usize,
    max_headers: usize,
}

impl RequestFraming {
    /// A scanner for a fresh connection.
    pub fn new(max_head_bytes: usize, max_headers: usize) -> Self {
        RequestFraming {
            state: State::Head,
            upgrade: false,
            upgrade_requests: 0,
            head: Vec::new(),
            remaining: 0,
            max_head_bytes,
            max_headers,
        }
    }

    /// The request with `Upgrade` was not upgraded: follow the stream again.
    pub fn resume(&mut self) {
        if self.state == State::AwaitUpgrade {
            self.state = State::Head;
        }
    }

    /// The request ended (end of its body): the next head, or the upgrade decision.
    fn request_done(&mut self) {
        self.state = if std::mem::take(&mut self.upgrade) { State::AwaitUpgrade } else { State::Head };
    }

    /// Whether the scanner still follows the stream.
    pub fn is_following(&self) -> bool {
        self.state != State::Stopped
    }

    /// Feeds the next bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) -> Scan {
        let mut pos = 0;
        while pos < bytes.len() {
            match self.state {
                State::Stopped => return Scan::Clean,
                State::AwaitUpgrade => return Scan::AwaitUpgrade { at: pos },
                State::Head => {
                    // Fast path: a whole head inside this read is parsed in place, no copy.
                    let (check, consumed_before) = if self.head.is_empty() {
                        (self.inspect_head(&bytes[pos..]), 0)
                    } else {
                        let already = self.head.len();
                        self.head.extend_from_slice(&bytes[pos..]);
                        let check = self.inspect_head(&self.head);
                        (check, already)
                    };
                    let head_start = if consumed_before == 0 { pos } else { 0 };
                    match check {
                        HeadCheck::Partial => {
                            if self.head.is_empty() {
                                self.head.extend_from_slice(&bytes[pos..]);
                            }
                            if self.head.len() >= self.max_head_bytes {
                                self.stop();
                                return Scan::Reported { violation: Violation::OversizedHead };
                            }
                            return Scan::Clean;
                        }
                        HeadCheck::Refused(violation, request) => {
                            self.stop();
                            return Scan::Refused { head_start, violation, request };
                        }
                        HeadCheck::Stop => {
                            self.stop();
                            return Scan::Clean;
                        }
                        HeadCheck::Unreadable(violation) => {
                            self.stop();
                            return Scan::Reported { violation };
                        }
                        HeadCheck::Complete { len, next, body_len, upgrade } => {
                            pos += len - consumed_before;
                            self.head.clear();
                            self.remaining = body_len;
                            self.upgrade = upgrade;
                            self.upgrade_requests += u64::from(upgrade);
                            self.state = next;
                            if next == State::Head {
                                self.request_done();
                            }
                        }
                    }
                }
                State::Body => {
                    let take = (bytes.len() - pos).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    pos += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.request_done();
                    }
                }
                State::Chunked(Chunk::Data) => {
                    let take = (bytes.len() - pos).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    pos += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::Chunked(Chunk::DataCr);
                    }
                }
                State::Chunked(chunk) => {
                    if !self.chunk_byte(chunk, bytes[pos]) {
                        self.stop();
                        return Scan::BadBody { at: pos };
                    }
                    pos += 1;
                }
            }
        }
        Scan::Clean
    }

    /// Stops following the stream (an upgrade happened, or nothing more may be read).
    pub fn stop(&mut self) {
        self.state = State::Stopped;
        self.head = Vec::new();
    }

    /// One byte of chunked framing, with hyper's grammar; false when it is refused.
    fn chunk_byte(&mut self, chunk: Chunk, b: u8) -> bool {
        let next = match (chunk, b) {
            (Chunk::Size { .. }, b) if b.is_ascii_hexdigit() => {
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                match self.remaining.checked_mul(16).and_then(|v| v.checked_add(digit)) {
                    Some(v) => {
                        self.remaining = v;
                        Chunk::Size { seen_digit: true }
                    }
                    None => return false,
                }
            }
            // hyper reads an empty size line as 0 (the last chunk); others may not: refused.
            (Chunk::Size { seen_digit: false }, _) => return false,
            (Chunk::Size { .. } | Chunk::SizeLws, b' ' | b'\t') => Chunk::SizeLws,
            (Chunk::Size { .. } | Chunk::SizeLws, b';') => Chunk::Extension,
            (Chunk::Size { .. } | Chunk::SizeLws | Chunk::Extension, b'\r') => Chunk::SizeLf,
            (Chunk::Extension, b'\n') => return false,
            (Chunk::Extension, _) => Chunk::Extension,
            (Chunk::SizeLf, b'\n') if self.remaining == 0 => Chunk::EndCr,
            (Chunk::SizeLf, b'\n') => Chunk::Data,
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => {
                self.remaining = 0;
                Chunk::Size { seen_digit: false }
            }
            (Chunk::EndCr, b'\r') => Chunk::EndLf,
            (Chunk::EndLf, b'\n') => {
                self.request_done();
                return true;
            }
            // hyper keeps a bare LF inside a trailer line; other parsers end the line there.
            (Chunk::EndCr | Chunk::Trailer, b'\n') => return false,
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
            (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
            _ => return false,
        };
        self.state = State::Chunked(next);
        true
    }

    fn inspect_head(&self, head: &[u8]) -> HeadCheck {
        // HTTP/2 prior-knowledge preface: hyper switches protocols; nothing to follow. Only
        // the whole preface: `PRI` is also a valid HTTP/1.1 method, and a request line like
        // `PRI /x HTTP/1.1` must not switch the guard off for the rest of the connection.
        let seen = head.len().min(H2_PREFACE.len());
        if head[..seen] == H2_PREFACE[..seen] {
            return if seen == H2_PREFACE.len() { HeadCheck::Stop } else { HeadCheck::Partial };
        }
        let mut storage = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_SCANNED_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let limit = self.max_headers.min(MAX_SCANNED_HEADERS);
        let len = match request.parse_with_uninit_headers(head, &mut storage[..limit]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return HeadCheck::Partial,
            Err(httparse::Error::TooManyHeaders) => return HeadCheck::Unreadable(Violation::OversizedHead),
            Err(_) => return HeadCheck::Unreadable(Violation::MalformedHead),
        };
        let mut content_lengths = Vec::new();
        let mut transfer_encodings = Vec::new();
        let mut upgrade = false;
        let mut host = "";
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                content_lengths.push(header.value);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encodings.push(header.value);
            } else if header.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            } else if header.name.eq_ignore_ascii_case("host") {
                host = std::str::from_utf8(header.value).unwrap_or("");
            }
        }
        let refused = |violation| {
            let request = RefusedRequest {
                method: request.method.unwrap_or("").to_string(),
                path: request.path.unwrap_or("").to_string(),
                host: host.to_string(),
            };
            HeadCheck::Refused(violation, request)
        };
        if !content_lengths.is_empty() && !transfer_encodings.is_empty() {
            return refused(Violation::LengthAndChunked);
        }
        if content_lengths.len() > 1 {
            return refused(Violation::DuplicateContentLength);
        }
        let mut next = State::Head;
        let mut remaining = 0;
        if let Some(value) = content_lengths.first() {
            let digits = value.trim_ascii();
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return refused(Violation::InvalidContentLength);
            }
            remaining = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
            if remaining > 0 {
                next = State::Body;
            }
        }
        if let Some(value) = transfer_encodings.first() {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or(b"").trim_ascii();
            if transfer_encodings.len() > 1 || !last.eq_ignore_ascii_case(b"chunked") {
                return refused(Violation::InvalidTransferEncoding);
            }
            next = State::Chunked(Chunk::Size { seen_digit: false });
            remaining = 0;
        }
        HeadCheck::Complete { len, next, body_len: remaining, upgrade }
    }
}

enum HeadCheck {
    Partial,
    Stop,
    Unreadable(Violation),
    Refused(Violation, RefusedRequest),
    Complete { len: usize, next: State, body_len: u64, upgrade: bool },
}

/// Reports refused requests to the owner of the connection (access log, metrics, shield);
/// returns whether it counted the violation against the client (for a
/// [`Violation::BrokenChunk`]: if not, whoever reads the body counts it).
pub type RefusalHook = Box<dyn FnOnce(Violation, RefusedRequest) -> bool + Send>;

/// Bytes put where a refused head was: an invalid request line (or header line, if hyper
/// already holds the start of the head), so hyper answers 400 itself — in pipeline order,
/// after any earlier responses — and closes the connection.
const POISON: &[u8] = b"\x00\r\n\r\n";

/// Whether each request that carried an `Upgrade` field was upgraded: told by the request
/// handler (in order: hyper handles one request of a connection at a time), awaited by
/// [`GuardedIo`] before it lets any byte after such a request through.
#[derive(Debug, Default)]
pub struct UpgradeGate {
    state: std::sync::Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    /// Decisions made so far (one per request with `Upgrade`).
    decided: u64,
    /// The latest decision.
    upgraded: bool,
    waker: Option<std::task::Waker>,
}

impl UpgradeGate {
    /// The handler's answer to a request that carried `Upgrade`: `upgraded` when it switched
    /// protocols.
    pub fn decide(&self, upgraded: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.decided += 1;
        state.upgraded = upgraded;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// The decision on the `nth` request with `Upgrade` (counting from 1), once made.
    fn poll_decision(&self, nth: u64, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.decided >= nth {
            Poll::Ready(state.upgraded)
        } else {
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// A client stream whose HTTP/1 requests pass through [`RequestFraming`].
pub struct GuardedIo<T> {
    inner: T,
    framing: RequestFraming,
    /// A head was refused: every further read is end-of-stream.
    refused: bool,
    /// A body's framing was refused: every further read fails (hyper fails the body with an
    /// invalid-data error, which tells a malformed body from a client that left).
    bad_body: bool,
    /// The hook counted the broken body (carried in the read error: [`BrokenChunk`]).
    bad_body_counted: bool,
    hook: Option<RefusalHook>,
    gate: std::sync::Arc<UpgradeGate>,
    /// Bytes read after a request with `Upgrade`, held until the handler decides.
    held: Vec<u8>,
}

impl<T> GuardedIo<T> {
    /// Wraps a fresh client connection; `gate` is where the request handler tells whether an
    /// `Upgrade` request was upgraded.
    pub fn new(inner: T, max_head_bytes: usize, max_headers: usize, hook: RefusalHook, gate: std::sync::Arc<UpgradeGate>) -> Self {
        GuardedIo {
            inner,
            framing: RequestFraming::new(max_head_bytes, max_headers),
            refused: false,
            bad_body: false,
            bad_body_counted: false,
            hook: Some(hook),
            gate,
            held: Vec::new(),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Scans bytes that were just placed in `buf` (from `before` on) and acts on the verdict.
    fn scan(&mut self, buf: &mut ReadBuf<'_>, before: usize) {
        match self.framing.feed(&buf.filled()[before..]) {
            Scan::Clean => {}
            Scan::Refused { head_start, violation, request } => {
                // Hide the refused head (and everything after it) from hyper.
                buf.set_filled(before + head_start);
                let room = buf.remaining().min(POISON.len());
                buf.put_slice(&POISON[..room]);
                self.refused = true;
                if let Some(hook) = self.hook.take() {
                    hook(violation, request);
                }
            }
            Scan::Reported { violation } => {
                if let Some(hook) = self.hook.take() {
                    hook(violation, RefusedRequest::default());
                }
            }
            Scan::BadBody { at } => {
                // hyper gets the body up to there, then a read error (400 from the handler).
                // Reported here, so it counts whether or not the handler reads the body (a
                // 401 or a redirect answers without it; hyper's drain read still meets it).
                buf.set_filled(before + at);
                self.bad_body = true;
                if let Some(hook) = self.hook.take() {
                    self.bad_body_counted = hook(Violation::BrokenChunk, RefusedRequest::default());
                }
            }
            Scan::AwaitUpgrade { at } => {
                self.held.extend_from_slice(&buf.filled()[before + at..]);
                buf.set_filled(before + at);
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.bad_body {
            return Poll::Ready(Err(bad_body(this.bad_body_counted)));
        }
        if this.refused {
            return Poll::Ready(Ok(()));
        }
        if this.framing.state == State::AwaitUpgrade {
            if ready!(this.gate.poll_decision(this.framing.upgrade_requests, cx)) {
                this.framing.stop();
            } else {
                this.framing.resume();
            }
        }
        if !this.held.is_empty() {
            // Bytes read while the decision was pending: handed over now, scanned unless the
            // connection was upgraded.
            let before = buf.filled().len();
            let take = buf.remaining().min(this.held.len());
            buf.put_slice(&this.held[..take]);
            this.held.drain(..take);
            if this.framing.is_following() {
                let pending = std::mem::take(&mut this.held);
                this.scan(buf, before);
                this.held.extend_from_slice(&pending);
            }
            return this.handed_over(buf, before);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if !this.framing.is_following() {
            return Poll::Ready(Ok(()));
        }
        this.scan(buf, before);
        this.handed_over(buf, before)
    }
}

/// The read error hyper gets where a body's framing is broken (its inner error is
/// [`BrokenChunk`]).
fn bad_body(counted: bool) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, BrokenChunk { counted })
}

/// Inside the read error of a body whose chunked framing the guard cut. `counted`: the
/// guard's hook counted it against the client ([`Violation::BrokenChunk`]), so whoever reads
/// the body answers 400 without counting it again.
#[derive(Debug, Clone, Copy)]
pub struct BrokenChunk {
    pub counted: bool,
}

impl std::fmt::Display for BrokenChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid chunked framing")
    }
}

impl std::error::Error for BrokenChunk {}

impl<T> GuardedIo<T> {
    /// The outcome of a read that placed bytes from `before` on: a broken body with nothing
    /// left to hand over fails at once (an empty read would be end-of-stream to hyper: a
    /// client that left, not a broken body).
    fn handed_over(&self, buf: &ReadBuf<'_>, before: usize) -> Poll<io::Result<()>> {
        if self.bad_body && buf.filled().len() == before {
            return Poll::Ready(Err(bad_body(self.bad_body_counted)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
