//! [`ProxyBody`]: what the edge sends, both directions — a body streamed from a client, read
//! from an upstream connection, or held in memory (and the small-body buffering that makes a
//! request replayable).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

pub use super::wire::BodyError;
use super::wire::UpstreamBody;

/// How a client's request body failed, seen by whoever polled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// The client broke the framing (bad chunk, length mismatch, a protocol error): a
    /// protocol violation, answered 400.
    Malformed,
    /// The HTTP/1 framing guard cut a broken chunk and counted it itself: answered 400, not
    /// counted a second time.
    Refused,
    /// The client left: it cancelled the HTTP/2 stream or closed the connection. Normal (a
    /// browser navigating away), never counted against the source.
    Gone,
}

impl BodyFailure {
    /// What `error`, from reading a client's body, says about the client.
    pub fn of(error: &hyper::Error) -> BodyFailure {
        if error.is_canceled() {
            return BodyFailure::Gone;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>()
                && io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<crate::net::h1_guard::BrokenChunk>())
                    .is_some_and(|broken| broken.counted)
            {
                return BodyFailure::Refused;
            }
            // HTTP/1.1: the connection ended inside the body (a browser closed, a network
            // dropped, a reset). A malformed chunk or length is another kind (invalid input
            // or data: the framing guard and hyper's decoder say so).
            if let Some(io) = cause.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::TimedOut
                )
            {
                return BodyFailure::Gone;
            }
            if let Some(h2) = cause.downcast_ref::<h2::Error>() {
                let cancelled = h2.is_remote() && matches!(h2.reason(), Some(h2::Reason::CANCEL | h2::Reason::NO_ERROR));
                return if cancelled || h2.is_io() || (h2.is_go_away() && h2.is_remote()) {
                    BodyFailure::Gone
                } else {
                    BodyFailure::Malformed
                };
            }
            source = cause.source();
        }
        BodyFailure::Malformed
    }
}

/// Where a watched client body records its failure (the first one).
#[derive(Debug, Default)]
pub struct ClientFault(std::sync::OnceLock<BodyFailure>);

impl ClientFault {
    fn record(&self, error: &hyper::Error) {
        let _ = self.0.set(BodyFailure::of(error));
    }

    /// The failure, if the body failed.
    pub fn failure(&self) -> Option<BodyFailure> {
        self.0.get().copied()
    }
}

/// A body streamed from a peer, or held in memory.
#[derive(Debug)]
pub enum ProxyBody {
    Stream(Incoming),
    /// A response read from an upstream connection in the task that polls it.
    Upstream(UpstreamBody),
    /// A client's request body on its way upstream: `prefix` holds bytes already read from
    /// it (sent first); `broken` records how the client's side failed (so the edge answers
    /// 400, or nothing to a client that left, not 502).
    Client {
        prefix: Option<Bytes>,
        incoming: Incoming,
        broken: Arc<ClientFault>,
    },
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    /// A body of `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// This body, watched for a client-side failure that sets `broken`.
    pub fn watched(self, broken: Arc<ClientFault>) -> ProxyBody {
        match self {
            ProxyBody::Stream(incoming) => ProxyBody::Client { prefix: None, incoming, broken },
            ProxyBody::Client { prefix, incoming, .. } => ProxyBody::Client { prefix, incoming, broken },
            other => other,
        }
    }

    /// Reads a streaming body into memory if it is at most `limit` bytes; `Err` gives the
    /// body back when it is larger — untouched when its length is known, or with what was
    /// read so far in front when it is not (chunked, HTTP/2 without a length): so a small
    /// body of unknown length is complete, and its framing checked, before anything goes
    /// upstream.
    pub async fn buffer_small(self, limit: u64) -> Result<Result<Bytes, ProxyBody>, hyper::Error> {
        let mut incoming = match self {
            ProxyBody::Full(bytes) => return Ok(Ok(bytes.unwrap_or_default())),
            ProxyBody::Client { prefix: Some(_), .. } | ProxyBody::Upstream(_) => return Ok(Err(self)),
            ProxyBody::Stream(incoming) | ProxyBody::Client { incoming, .. } => incoming,
        };
        if incoming.is_end_stream() {
            return Ok(Ok(Bytes::new()));
        }
        match incoming.size_hint().exact() {
            Some(n) if n <= limit => return Ok(Ok(incoming.collect().await?.to_bytes())),
            Some(_) => return Ok(Err(ProxyBody::Stream(incoming))),
            None => {}
        }
        let mut read = bytes::BytesMut::new();
        while let Some(frame) = incoming.frame().await {
            // Trailers end the body (they are not forwarded from a buffered body).
            let Ok(data) = frame?.into_data() else { break };
            read.extend_from_slice(&data);
            if read.len() as u64 > limit {
                return Ok(Err(ProxyBody::Client { prefix: Some(read.freeze()), incoming, broken: Arc::default() }));
            }
        }
        Ok(Ok(read.freeze()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let from_client = |polled: Poll<Option<Result<Frame<Bytes>, hyper::Error>>>| polled.map(|f| f.map(|f| f.map_err(BodyError::from)));
        match self.get_mut() {
            ProxyBody::Stream(incoming) => from_client(Pin::new(incoming).poll_frame(cx)),
            ProxyBody::Upstream(upstream) => Pin::new(upstream).poll_frame(cx),
            ProxyBody::Client { prefix, incoming, broken } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                let polled = Pin::new(incoming).poll_frame(cx);
                if let Poll::Ready(Some(Err(error))) = &polled {
                    broken.record(error);
                }
                from_client(polled)
            }
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Stream(incoming) => incoming.is_end_stream(),
            ProxyBody::Upstream(upstream) => upstream.is_end_stream(),
            ProxyBody::Client { prefix, incoming, .. } => prefix.is_none() && incoming.is_end_stream(),
            ProxyBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Stream(incoming) => incoming.size_hint(),
            ProxyBody::Upstream(upstream) => upstream.size_hint(),
            ProxyBody::Client { prefix: None, incoming, .. } => incoming.size_hint(),
            // A length unknown before (the prefix was read because it was unknown).
            ProxyBody::Client { .. } => SizeHint::default(),
            ProxyBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
