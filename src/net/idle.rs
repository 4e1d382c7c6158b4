//! Idle timeout for client connections: a stream with no bytes moving in either direction
//! for `timeout` fails with `TimedOut`, which closes keep-alive connections and tunnels that
//! a client abandoned (and bounds what a slow-loris client can hold once its head is read).
//!
//! The timer is coarse: a transfer only sets a flag (no clock read, no timer work per read
//! or write), and one sleep ticks every quarter of the timeout; [`QUIET_TICKS`] ticks in a
//! row without a transfer close the stream. A connection is therefore closed between the
//! timeout and 1.25 times it after its last byte, and a busy one costs a timer reset four
//! times per timeout instead of a clock read per transfer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Ticks in a row without a transfer that make a stream idle (one tick is a quarter of the
/// timeout).
pub const QUIET_TICKS: u32 = 4;

/// A stream that fails after `timeout` without traffic.
pub struct IdleTimeout<T> {
    inner: T,
    /// A quarter of the timeout.
    tick: Duration,
    /// A transfer happened since the last tick.
    active: bool,
    /// Ticks in a row without a transfer.
    quiet_ticks: u32,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, timeout: Duration) -> Self {
        let tick = timeout / QUIET_TICKS;
        IdleTimeout { inner, tick, active: false, quiet_ticks: 0, sleep: Box::pin(tokio::time::sleep_until(Instant::now() + tick)) }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Counts the ticks that passed; registers the waker for the next one.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.sleep.as_mut().poll(cx).is_ready() {
            if std::mem::take(&mut self.active) {
                self.quiet_ticks = 0;
            } else {
                self.quiet_ticks += 1;
            }
            if self.quiet_ticks >= QUIET_TICKS {
                return true;
            }
            self.sleep.as_mut().reset(Instant::now() + self.tick);
        }
        false
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "client connection idle timeout")
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.active = true;
                Poll::Ready(result)
            }
            Poll::Pending if this.poll_expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.active = true;
                Poll::Ready(result)
            }
            Poll::Pending if this.poll_expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                this.active = true;
                Poll::Ready(result)
            }
            Poll::Pending if this.poll_expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_a_stream_alive_and_silence_ends_it_within_a_quarter_more_than_the_timeout() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut stream = IdleTimeout::new(near, Duration::from_millis(400));
        let mut byte = [0u8; 1];
        // A byte every 300 ms (under the timeout) for three seconds: never idle.
        for _ in 0..10 {
            far.write_all(b"x").await.unwrap();
            stream.read_exact(&mut byte).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        far.write_all(b"y").await.unwrap();
        stream.read_exact(&mut byte).await.unwrap();
        let last = Instant::now();
        let error = stream.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let idle = last.elapsed();
        assert!(idle >= Duration::from_millis(400) && idle <= Duration::from_millis(500), "closed after {idle:?}");
    }
}
