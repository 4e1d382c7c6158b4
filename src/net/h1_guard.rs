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
//! Threat model: a client that wants two parsers (ours, an upstream's) to disagree on where
//! a request ends. Anything the scanner cannot follow (malformed heads, bad chunk syntax,
//! oversized heads, HTTP/2 preface, an `Upgrade`) makes it stop scanning: hyper rejects the
//! malformed cases itself and closes the connection, and upgrades become opaque tunnels.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Header fields the scanner can look at (hyper's own cap is `server.max_headers`, at most
/// 1000; a head with more fields than this is left to hyper, which answers 431 for it).
const MAX_SCANNED_HEADERS: usize = 1000;

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
        }
    }

    /// Whether the guard itself refused the request (ambiguous framing), as opposed to
    /// reporting a head hyper refuses.
    pub fn is_framing(self) -> bool {
        !matches!(self, Violation::MalformedHead | Violation::OversizedHead)
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { seen_digit: bool },
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerEndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body,
    Chunked(Chunk),
    /// The scanner stopped following the stream (see module docs).
    Stopped,
}

/// Follows request framing across reads (sans-io).
#[derive(Debug)]
pub struct RequestFraming {
    state: State,
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
        RequestFraming { state: State::Head, head: Vec::new(), remaining: 0, max_head_bytes, max_headers }
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
                        HeadCheck::Complete { len, next, body_len } => {
                            pos += len - consumed_before;
                            self.head.clear();
                            self.remaining = body_len;
                            self.state = next;
                        }
                    }
                }
                State::Body => {
                    let take = (bytes.len() - pos).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    pos += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::Head;
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
                    self.chunk_byte(chunk, bytes[pos]);
                    pos += 1;
                }
            }
        }
        Scan::Clean
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.head = Vec::new();
    }

    fn chunk_byte(&mut self, chunk: Chunk, b: u8) {
        let next = match (chunk, b) {
            (Chunk::Size { .. }, b) if b.is_ascii_hexdigit() => {
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                match self.remaining.checked_mul(16).and_then(|v| v.checked_add(digit)) {
                    Some(v) => {
                        self.remaining = v;
                        State::Chunked(Chunk::Size { seen_digit: true })
                    }
                    None => State::Stopped,
                }
            }
            (Chunk::Size { seen_digit: true }, b';' | b' ' | b'\t') => State::Chunked(Chunk::Extension),
            (Chunk::Size { seen_digit: true }, b'\r') => State::Chunked(Chunk::SizeLf),
            (Chunk::Extension, b'\r') => State::Chunked(Chunk::SizeLf),
            (Chunk::Extension, b'\n') => State::Stopped,
            (Chunk::Extension, _) => State::Chunked(Chunk::Extension),
            (Chunk::SizeLf, b'\n') if self.remaining == 0 => State::Chunked(Chunk::TrailerLineStart),
            (Chunk::SizeLf, b'\n') => State::Chunked(Chunk::Data),
            (Chunk::DataCr, b'\r') => State::Chunked(Chunk::DataLf),
            (Chunk::DataLf, b'\n') => {
                self.remaining = 0;
                State::Chunked(Chunk::Size { seen_digit: false })
            }
            (Chunk::TrailerLineStart, b'\r') => State::Chunked(Chunk::TrailerEndLf),
            (Chunk::TrailerLineStart, b'\n') => State::Head,
            (Chunk::TrailerLine, b'\n') => State::Chunked(Chunk::TrailerLineStart),
            (Chunk::TrailerLineStart | Chunk::TrailerLine, _) => State::Chunked(Chunk::TrailerLine),
            (Chunk::TrailerEndLf, b'\n') => State::Head,
            _ => State::Stopped,
        };
        if next == State::Stopped {
            self.stop();
        } else {
            self.state = next;
        }
    }

    fn inspect_head(&self, head: &[u8]) -> HeadCheck {
        if head.starts_with(b"PRI ") {
            // HTTP/2 prior-knowledge preface: hyper switches protocols; nothing to follow.
            return HeadCheck::Stop;
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
        if upgrade {
            // After a successful upgrade the stream is a tunnel; the proxy closes the
            // connection when an upgrade is refused, so no HTTP follows unscanned.
            next = State::Stopped;
        }
        HeadCheck::Complete { len, next, body_len: remaining }
    }
}

enum HeadCheck {
    Partial,
    Stop,
    Unreadable(Violation),
    Refused(Violation, RefusedRequest),
    Complete { len: usize, next: State, body_len: u64 },
}

/// Reports refused requests to the owner of the connection (access log, metrics, shield).
pub type RefusalHook = Box<dyn FnOnce(Violation, RefusedRequest) + Send>;

/// Bytes put where a refused head was: an invalid request line (or header line, if hyper
/// already holds the start of the head), so hyper answers 400 itself — in pipeline order,
/// after any earlier responses — and closes the connection.
const POISON: &[u8] = b"\x00\r\n\r\n";

/// A client stream whose HTTP/1 requests pass through [`RequestFraming`].
pub struct GuardedIo<T> {
    inner: T,
    framing: RequestFraming,
    /// A head was refused: every further read is end-of-stream.
    refused: bool,
    hook: Option<RefusalHook>,
}

impl<T> GuardedIo<T> {
    /// Wraps a fresh client connection.
    pub fn new(inner: T, max_head_bytes: usize, max_headers: usize, hook: RefusalHook) -> Self {
        GuardedIo { inner, framing: RequestFraming::new(max_head_bytes, max_headers), refused: false, hook: Some(hook) }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.refused {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if !this.framing.is_following() {
            return Poll::Ready(Ok(()));
        }
        match this.framing.feed(&buf.filled()[before..]) {
            Scan::Clean => {}
            Scan::Refused { head_start, violation, request } => {
                // Hide the refused head (and everything after it) from hyper.
                buf.set_filled(before + head_start);
                let room = buf.remaining().min(POISON.len());
                buf.put_slice(&POISON[..room]);
                this.refused = true;
                if let Some(hook) = this.hook.take() {
                    hook(violation, request);
                }
            }
            Scan::Reported { violation } => {
                if let Some(hook) = this.hook.take() {
                    hook(violation, RefusedRequest::default());
                }
            }
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
