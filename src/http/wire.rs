//! The HTTP/1.1 client side of an upstream connection, driven inside the request's own task.
//!
//! [`Conn::send`] writes the request head from the edge's canonical parts — the edge alone
//! decides the framing: one `Content-Length` or `Transfer-Encoding: chunked` of its own, never
//! a client's field — and reads the response head with `httparse` under caps. The response
//! body is decoded by [`UpstreamBody`], which the client connection's task polls as it writes
//! the body out: no connection task, no channel and no wake-up between the two sides. A
//! connection whose response ended exactly at its framing goes back to its server's idle
//! stack; any doubt (a response that is not strictly framed, bytes after its end,
//! `Connection: close`, HTTP/1.0) closes it, so one client's response can never be read as
//! another's.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Why a body could not be read to its end.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Largest response head accepted (status line and fields).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most fields in a response head.
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most trailer bytes after a chunked body (read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;
/// Most interim (1xx) responses before the final one.
const MAX_INTERIM: usize = 8;
/// Bytes read at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Read space below which the buffer grows before a read.
const MIN_READ_SPACE: usize = 2 * 1024;
/// Request bodies up to this size go out in one write with their head.
const COALESCE_BODY: usize = 16 * 1024;

/// The byte stream of an upstream connection: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Where a connection goes when its response ended cleanly (its server's idle stack).
pub trait Recycle: Send + Sync + 'static {
    fn recycle(&self, conn: Conn);
}

/// An HTTP/1.1 connection to an upstream server.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// The request head being written (kept for the next request).
    head: Vec<u8>,
    /// The thread that opened the connection: its runtime's event loop reports the socket's
    /// readiness, so the pool hands it back to requests on that thread first.
    home: std::thread::ThreadId,
}

/// The body of a request on its way out.
pub enum RequestBody<B> {
    /// In memory (possibly empty).
    Full(Bytes),
    /// Streamed from the client, `Content-Length` when its size is known, else chunked.
    Stream(B),
}

/// A response head as the upstream sent it, with the framing of what follows.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    framing: Framing,
    /// Whether the connection can carry another request after this response.
    keep_alive: bool,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
    /// `101 Switching Protocols`: the connection becomes a tunnel.
    Upgrade,
}

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Writing the request head failed: nothing reached the upstream.
    #[error("request not sent: {0}")]
    NotSent(io::Error),
    /// The upstream closed the connection before any byte of a response.
    #[error("connection closed before a response")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The client's request body broke (its framing, or it went away).
    #[error("client request body failed")]
    ClientBody,
    /// The response is not one the edge forwards.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
}

/// How the edge frames a request body.
#[derive(Debug, Clone, Copy)]
enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

impl Conn {
    pub fn new(stream: Stream) -> Conn {
        Conn { stream, read: BytesMut::new(), head: Vec::new(), home: std::thread::current().id() }
    }

    /// The thread that opened the connection.
    pub fn home(&self) -> std::thread::ThreadId {
        self.home
    }

    /// Whether this idle connection is unusable: the upstream closed it, or sent bytes no
    /// request asked for. Never waits (TLS session tickets are consumed, not mistaken).
    pub fn is_closed(&mut self) -> bool {
        if !self.read.is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        // Anything read now — end of stream, an error, or stray bytes — rules it out.
        self.stream.read(&mut probe).now_or_never().is_some()
    }

    /// The connection as a byte stream, with the bytes already read from it (after a `101`).
    pub fn into_parts(self) -> (Stream, Bytes) {
        (self.stream, self.read.freeze())
    }

    /// Sends a request and reads the head of its final response (interim 1xx responses other
    /// than 101 are skipped). A streamed body is sent while the response is awaited: an
    /// upstream that answers early (413, 401) is heard, and the connection is then closed.
    pub async fn send<B>(&mut self, parts: &http::request::Parts, body: RequestBody<B>) -> Result<ResponseHead, SendError>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let framing = match &body {
            RequestBody::Full(bytes) if bytes.is_empty() && !expects_body(&parts.method) => RequestFraming::None,
            RequestBody::Full(bytes) => RequestFraming::Length(bytes.len() as u64),
            RequestBody::Stream(stream) => stream.size_hint().exact().map_or(RequestFraming::Chunked, RequestFraming::Length),
        };
        if self.head.capacity() > COALESCE_BODY + 4096 {
            self.head = Vec::new();
        }
        encode_head(&mut self.head, parts, framing);
        let head_request = parts.method == Method::HEAD;
        match body {
            RequestBody::Full(bytes) => {
                if bytes.len() <= COALESCE_BODY {
                    self.head.extend_from_slice(&bytes);
                    self.stream.write_all(&self.head).await.map_err(SendError::NotSent)?;
                } else {
                    self.stream.write_all(&self.head).await.map_err(SendError::NotSent)?;
                    self.stream.write_all(&bytes).await?;
                }
                self.stream.flush().await?;
            }
            // Boxed: a streamed upload is rare, and its state should not size every request.
            RequestBody::Stream(body) => {
                return Box::pin(self.send_streamed(body, framing, head_request)).await.map(|head| tunnel_ends(parts, head));
            }
        }
        read_head(&mut self.stream, &mut self.read, head_request).await.map(|head| tunnel_ends(parts, head))
    }

    /// Sends the head and a streamed body while listening for an early response.
    async fn send_streamed<B>(&mut self, body: B, framing: RequestFraming, head_request: bool) -> Result<ResponseHead, SendError>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let (mut reader, mut writer) = tokio::io::split(&mut self.stream);
        let sending = write_streamed(&mut writer, &self.head, body, framing);
        let reading = read_head(&mut reader, &mut self.read, head_request);
        tokio::pin!(sending, reading);
        let mut early = false;
        // A write that failed left part of the body unsent: the response may still be read,
        // but the connection cannot carry another request.
        let mut sent_whole = true;
        let head = tokio::select! {
            head = &mut reading => { early = true; head }
            sent = &mut sending => match sent {
                Ok(()) => reading.await,
                Err(SendError::Io(_)) => {
                    sent_whole = false;
                    reading.await
                }
                Err(error) => Err(error),
            },
        };
        let mut head = head?;
        if early || !sent_whole {
            head.keep_alive = false;
        }
        Ok(head)
    }

    /// Fills the read buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        make_room(&mut self.read);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }
}

/// Grows `read` before a read when little space is left (one allocation per 16 KiB read, not
/// per read).
fn make_room(read: &mut BytesMut) {
    if read.capacity() - read.len() < MIN_READ_SPACE {
        read.reserve(READ_CHUNK);
    }
}

/// After a 2xx to CONNECT the connection is a tunnel (RFC 9112 §6.3), whatever the fields
/// say: no body, and never another request on it.
fn tunnel_ends(parts: &http::request::Parts, mut head: ResponseHead) -> ResponseHead {
    if parts.method == Method::CONNECT && head.status.is_success() {
        head.framing = Framing::Empty;
        head.keep_alive = false;
    }
    head
}

/// Methods whose empty body is still announced (`Content-Length: 0`), as user agents do.
fn expects_body(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE | Method::CONNECT)
}

/// Writes the request line and fields; the client's framing fields never pass, the edge's
/// own framing field is the only one. Nor does `Expect`: the body goes out right behind the
/// head, so the upstream must not be told it may not follow (an upstream that answers early
/// and then reads on would take the body for another request).
fn encode_head(out: &mut Vec<u8>, parts: &http::request::Parts, framing: RequestFraming) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.uri.path_and_query().map_or("/", |target| target.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING || name == header::EXPECT {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa_u64(length, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// `value` in decimal, written into the end of `buf`.
fn itoa_u64(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[start..];
        }
    }
}

/// Writes the head, then the client's body in the announced framing; trailers are dropped.
async fn write_streamed<W: AsyncWrite + Unpin, B: Body<Data = Bytes> + Unpin>(
    writer: &mut W,
    head: &[u8],
    mut body: B,
    framing: RequestFraming,
) -> Result<(), SendError> {
    writer.write_all(head).await.map_err(SendError::NotSent)?;
    let mut sent = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| SendError::ClientBody)?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        match framing {
            RequestFraming::Chunked => {
                let mut size = [0u8; 18];
                let line = hex_line(data.len(), &mut size);
                writer.write_all(line).await?;
                writer.write_all(&data).await?;
                writer.write_all(b"\r\n").await?;
            }
            RequestFraming::Length(length) if sent <= length => writer.write_all(&data).await?,
            _ => return Err(SendError::ClientBody),
        }
    }
    match framing {
        RequestFraming::Chunked => writer.write_all(b"0\r\n\r\n").await?,
        RequestFraming::Length(length) if sent != length => return Err(SendError::ClientBody),
        _ => {}
    }
    writer.flush().await?;
    Ok(())
}

/// `size` as a chunk-size line (`1a2b\r\n`).
fn hex_line(mut size: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = buf.len() - 2;
    buf[start..].copy_from_slice(b"\r\n");
    loop {
        start -= 1;
        buf[start] = HEX[size & 0xf];
        size >>= 4;
        if size == 0 {
            return &buf[start..];
        }
    }
}

/// Reads until a final response head is complete and parses it.
async fn read_head<R: AsyncRead + Unpin>(reader: &mut R, read: &mut BytesMut, head_request: bool) -> Result<ResponseHead, SendError> {
    let mut interim = 0;
    let mut got_any = !read.is_empty();
    loop {
        if !read.is_empty() {
            match parse_head(read, head_request)? {
                Some(head) if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(SendError::Invalid("too many interim responses"));
                    }
                    continue;
                }
                Some(head) => return Ok(head),
                None if read.len() >= MAX_RESPONSE_HEAD => return Err(SendError::Invalid("response head too large")),
                None => {}
            }
        }
        make_room(read);
        match reader.read_buf(read).await {
            Ok(0) if got_any => return Err(SendError::Invalid("connection closed inside a response head")),
            Ok(0) => return Err(SendError::Closed),
            Ok(_) => got_any = true,
            Err(error) if !got_any => {
                tracing::debug!("upstream read failed before a response: {error}");
                return Err(SendError::Closed);
            }
            Err(error) => return Err(SendError::Io(error)),
        }
    }
}

/// Parses a complete response head off the front of `read` (`None`: not complete yet).
fn parse_head(read: &mut BytesMut, head_request: bool) -> Result<Option<ResponseHead>, SendError> {
    // Uninitialised field slots: nothing to clear per response.
    let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, read, &mut fields) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(SendError::Invalid("too many response header fields")),
        Err(_) => return Err(SendError::Invalid("malformed response head")),
    };
    let status = response.code.and_then(|code| StatusCode::from_u16(code).ok()).ok_or(SendError::Invalid("bad status code"))?;
    let version = if response.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    // Field positions (offsets into the head, which is at most a few hundred KiB), so the
    // values can share the head's bytes once it is split off.
    let base = read.as_ptr() as usize;
    let offset = |field: &[u8]| u32::try_from(field.as_ptr() as usize - base).unwrap_or(u32::MAX);
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_RESPONSE_HEADERS];
    let count = response.headers.len();
    for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
        let (name, value) = (offset(field.name.as_bytes()), offset(field.value));
        *span = (name, name + field.name.len() as u32, value, value + field.value.len() as u32);
    }
    let head = read.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for &(name_start, name_end, value_start, value_end) in &spans[..count] {
        let (name_at, value_at) = (name_start as usize..name_end as usize, value_start as usize..value_end as usize);
        let name = head.get(name_at).and_then(|name| HeaderName::from_bytes(name).ok()).ok_or(SendError::Invalid("bad field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at)).map_err(|_| SendError::Invalid("bad field value"))?;
        headers.append(name, value);
    }
    let framing = framing(status, &headers, head_request)?;
    let keep_alive = version == Version::HTTP_11 && framing != Framing::UntilClose && !has_close(&headers);
    Ok(Some(ResponseHead { status, headers, framing, keep_alive }))
}

/// The framing of a response body, strictly: a `Transfer-Encoding` other than exactly
/// `chunked`, both framing fields, or a `Content-Length` that is not one decimal number are
/// refused (502) rather than guessed at — a guess that differs from the upstream's would
/// leave bytes of this response to be read as the next client's.
fn framing(status: StatusCode, headers: &HeaderMap, head_request: bool) -> Result<Framing, SendError> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Framing::Upgrade);
    }
    if head_request || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    match (codings.next(), lengths.next()) {
        (Some(_), Some(_)) => Err(SendError::Invalid("both Transfer-Encoding and Content-Length")),
        (Some(coding), None) if codings.next().is_none() && coding.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => {
            Ok(Framing::Chunked)
        }
        (Some(_), None) => Err(SendError::Invalid("a transfer coding other than chunked")),
        (None, Some(length)) if lengths.next().is_none() => parse_length(length.as_bytes()).map(Framing::Length),
        (None, Some(_)) => Err(SendError::Invalid("more than one Content-Length")),
        (None, None) => Ok(Framing::UntilClose),
    }
}

fn parse_length(text: &[u8]) -> Result<u64, SendError> {
    let text = text.trim_ascii();
    if text.is_empty() || text.len() > 18 || !text.iter().all(u8::is_ascii_digit) {
        return Err(SendError::Invalid("bad Content-Length"));
    }
    Ok(text.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn has_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// A response body read from an upstream connection, in the task that polls it.
pub struct UpstreamBody {
    conn: Option<Conn>,
    state: Decode,
    keep_alive: bool,
    recycle: Option<Arc<dyn Recycle>>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("state", &self.state).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    Length(u64),
    UntilClose,
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk: bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer bytes read so far.
    Trailers(usize),
    /// Waiting to be taken as a tunnel.
    Upgrade,
    Done,
}

impl UpstreamBody {
    /// The body that follows `head` on `conn`; the connection goes to `recycle` when it ends
    /// cleanly and can carry another request.
    pub fn new(conn: Conn, head: &ResponseHead, recycle: Arc<dyn Recycle>) -> UpstreamBody {
        let state = match head.framing {
            Framing::Empty | Framing::Length(0) => Decode::Done,
            Framing::Length(length) => Decode::Length(length),
            Framing::Chunked => Decode::ChunkSize,
            Framing::UntilClose => Decode::UntilClose,
            Framing::Upgrade => Decode::Upgrade,
        };
        let mut body = UpstreamBody { conn: Some(conn), state, keep_alive: head.keep_alive, recycle: Some(recycle) };
        if state == Decode::Done {
            body.finish(true);
        }
        body
    }

    /// The connection of a `101` answer, to become a tunnel.
    pub fn into_upgraded(mut self) -> Option<Conn> {
        if self.state == Decode::Upgrade { self.conn.take() } else { None }
    }

    /// The body is over: the connection goes back to its server when it is clean.
    fn finish(&mut self, clean: bool) {
        self.state = Decode::Done;
        let conn = self.conn.take();
        if let (Some(mut conn), Some(recycle)) = (conn, self.recycle.take())
            && clean
            && self.keep_alive
            && conn.read.is_empty()
        {
            if conn.read.capacity() > 2 * READ_CHUNK {
                conn.read = BytesMut::new();
            }
            recycle.recycle(conn);
        }
    }

    fn poll_decode(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            let state = self.state;
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            let buffered = conn.read.len();
            match state {
                Decode::Done | Decode::Upgrade => return Poll::Ready(None),
                Decode::Length(left) | Decode::ChunkData(left) if buffered > 0 => {
                    let take = usize::try_from(left).map_or(buffered, |left| left.min(buffered));
                    let data = conn.read.split_to(take).freeze();
                    let left = left - take as u64;
                    match state {
                        Decode::Length(_) if left == 0 => self.finish(true),
                        Decode::Length(_) => self.state = Decode::Length(left),
                        _ if left == 0 => self.state = Decode::ChunkEnd,
                        _ => self.state = Decode::ChunkData(left),
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Decode::UntilClose if buffered > 0 => return Poll::Ready(Some(Ok(conn.read.split().freeze()))),
                Decode::ChunkSize => match take_line(&mut conn.read, MAX_CHUNK_LINE)? {
                    Some(line) => match chunk_size(&line)? {
                        0 => self.state = Decode::Trailers(0),
                        size => self.state = Decode::ChunkData(size),
                    },
                    None => ready!(self.fill(cx, "inside a chunk-size line"))?,
                },
                Decode::ChunkEnd if buffered >= 2 => {
                    if &conn.read[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err("upstream chunked framing: no CRLF after a chunk".into())));
                    }
                    let _ = conn.read.split_to(2);
                    self.state = Decode::ChunkSize;
                }
                Decode::Trailers(seen) => match take_line(&mut conn.read, MAX_TRAILERS.saturating_sub(seen))? {
                    Some(line) if line.is_empty() => {
                        self.finish(true);
                        return Poll::Ready(None);
                    }
                    Some(line) => self.state = Decode::Trailers(seen + line.len() + 2),
                    None => ready!(self.fill(cx, "inside the trailers"))?,
                },
                Decode::UntilClose => match ready!(conn.poll_fill(cx)) {
                    Ok(0) => {
                        self.finish(false);
                        return Poll::Ready(None);
                    }
                    Ok(_) => {}
                    Err(error) => return Poll::Ready(Some(Err(error.into()))),
                },
                Decode::Length(_) | Decode::ChunkData(_) | Decode::ChunkEnd => ready!(self.fill(cx, "before the end of the body"))?,
            }
        }
    }

    /// Reads more; the end of the stream here is an error (`place` says where it ended).
    fn fill(&mut self, cx: &mut Context<'_>, place: &'static str) -> Poll<Result<(), BodyError>> {
        let Some(conn) = self.conn.as_mut() else { return Poll::Ready(Ok(())) };
        match ready!(conn.poll_fill(cx)) {
            Ok(0) => Poll::Ready(Err(format!("upstream closed the connection {place}").into())),
            Ok(_) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(error.into())),
        }
    }
}

/// Takes one CRLF-terminated line off the front of `read` (without the CRLF); `None` until
/// it is complete. A line longer than `limit`, or ended by a bare LF, is an error.
fn take_line(read: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, BodyError> {
    let window = &read[..read.len().min(limit.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(end) if end > 0 && window[end - 1] == b'\r' => {
            let line = read.split_to(end + 1).freeze();
            Ok(Some(line.slice(..end - 1)))
        }
        Some(_) => Err("upstream chunked framing: a bare LF".into()),
        None if read.len() > limit => Err("upstream chunked framing: line too long".into()),
        None => Ok(None),
    }
}

/// The size of a chunk-size line (`1a;ext=v`): hex digits, at most 15 of them (no overflow),
/// then nothing or extensions.
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    if digits == 0 || digits > 15 || !(rest.is_empty() || rest.first() == Some(&b';')) {
        return Err("upstream chunked framing: bad chunk size".into());
    }
    Ok(line[..digits].iter().fold(0u64, |n, &d| (n << 4) | u64::from(char::from(d).to_digit(16).unwrap_or(0))))
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = this.poll_decode(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.conn = None;
            this.state = Decode::Done;
        }
        polled.map(|next| next.map(|data| data.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.state == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            Decode::Length(left) => SizeHint::with_exact(left),
            Decode::Done | Decode::Upgrade => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
