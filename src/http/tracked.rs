//! [`TrackedBody`]: the response body the client receives — it writes the access-log line,
//! records metrics and releases the upstream connection slot when it ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::body::{BodyError, ProxyBody};
use super::upstream::Lease;

/// Called once when a response body ends (with the bytes sent).
pub trait Completion: Send + Sync + 'static {
    /// The response is over: `bytes` body bytes reached the client.
    fn complete(&self, bytes: u64);
}

/// A response body that reports its end.
pub struct TrackedBody {
    inner: ProxyBody,
    sent: u64,
    completion: Option<Arc<dyn Completion>>,
    _lease: Option<Lease>,
}

impl TrackedBody {
    /// Wraps `inner`; `completion` runs when the body ends or is dropped.
    pub fn new(inner: ProxyBody, completion: Arc<dyn Completion>, lease: Option<Lease>) -> TrackedBody {
        TrackedBody { inner, sent: 0, completion: Some(completion), _lease: lease }
    }

    fn finish(&mut self) {
        if let Some(completion) = self.completion.take() {
            completion.complete(self.sent);
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
