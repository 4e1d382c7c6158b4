//! The write side of one SIP connection, shared by every task that has a message for it.
//!
//! Over plain TCP whoever has a message writes it to the socket at once (a partner's request
//! straight to the next hop, the next hop's response straight back to the partner): no queue
//! and no wake-up of the connection's own task per message. What the socket does not take at
//! once waits in a bounded backlog that the connection's own task writes out, and until the
//! backlog is empty every later message queues behind it, so messages never interleave and
//! keep their order. Over TLS the session belongs to the connection's task: messages reach it
//! through a bounded queue and it writes them.
//!
//! A [`Link`] is the senders' handle ([`Link::try_send`] never waits); the connection's task
//! holds the [`Outlet`] (what it writes, and the socket) and the [`Inlet`] (what it reads).
//! When that task ends, the socket closes and every link reports [`TrySendError::Closed`].

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub(super) use tokio::sync::mpsc::error::TrySendError;

/// Most bytes waiting for one plain TCP connection (besides the message count of
/// [`wire_up`]); a message that would go beyond is refused as [`TrySendError::Full`].
const BACKLOG_BYTES: usize = 4 * 1024 * 1024;

/// A byte stream the edge reads SIP from: TCP, or TLS over TCP.
pub(super) trait SipStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> SipStream for T {}

/// A connection as opened or accepted.
pub(super) enum Wire {
    Tcp(TcpStream),
    Tls(Box<dyn SipStream>),
}

/// A handle that sends messages on one connection.
#[derive(Clone)]
pub(super) struct Link(Kind);

#[derive(Clone)]
enum Kind {
    /// Plain TCP: written by the sender (the connection's task holds the only strong reference).
    Direct(Weak<Direct>),
    /// TLS: queued for the connection's task.
    Queued(mpsc::Sender<Bytes>),
}

/// A plain TCP connection's socket and what it has not taken yet.
pub(super) struct Direct {
    stream: TcpStream,
    /// Most messages waiting.
    most: usize,
    backlog: Mutex<Backlog>,
    /// Wakes the connection's task when a backlog begins, or the connection failed.
    wake: Signal,
}

/// A flag the connection's task waits on: raised by any task, it stays raised until taken
/// (no wake-up is lost, and waiting costs no lock: the task waits on it between messages).
#[derive(Default)]
struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.raised.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
    }
}

#[derive(Default)]
struct Backlog {
    queue: VecDeque<Bytes>,
    bytes: usize,
    /// A write failed: the connection is done.
    failed: bool,
}

impl Link {
    /// A link to a queue (tests of what holds links).
    #[cfg(test)]
    pub(super) fn queued(sender: mpsc::Sender<Bytes>) -> Link {
        Link(Kind::Queued(sender))
    }

    /// Sends `bytes` (the whole message, in order after those sent before); never waits.
    /// `Full` when the connection is not keeping up, `Closed` when it has ended — both hand the
    /// message back.
    pub(super) fn try_send(&self, bytes: Bytes) -> Result<(), TrySendError<Bytes>> {
        match &self.0 {
            Kind::Queued(sender) => sender.try_send(bytes),
            Kind::Direct(direct) => match direct.upgrade() {
                Some(direct) => direct.send(bytes),
                None => Err(TrySendError::Closed(bytes)),
            },
        }
    }

    /// Whether the connection has ended.
    pub(super) fn is_closed(&self) -> bool {
        match &self.0 {
            Kind::Queued(sender) => sender.is_closed(),
            Kind::Direct(direct) => direct.upgrade().is_none_or(|direct| direct.backlog().failed),
        }
    }
}

/// Offers `bytes` to a connection that may not be open: `Ok(sent)` (`false`: it is not
/// keeping up), or the bytes back when there is no open connection to take them.
pub(super) fn offer(link: Option<&Link>, bytes: Bytes) -> Result<bool, Bytes> {
    let Some(link) = link else { return Err(bytes) };
    match link.try_send(bytes) {
        Ok(()) => Ok(true),
        Err(TrySendError::Full(_)) => Ok(false),
        Err(TrySendError::Closed(bytes)) => Err(bytes),
    }
}

impl Direct {
    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, mut bytes: Bytes) -> Result<(), TrySendError<Bytes>> {
        let mut backlog = self.backlog();
        if backlog.failed {
            return Err(TrySendError::Closed(bytes));
        }
        if !backlog.queue.is_empty() {
            if backlog.queue.len() >= self.most || backlog.bytes + bytes.len() > BACKLOG_BYTES {
                return Err(TrySendError::Full(bytes));
            }
            backlog.bytes += bytes.len();
            backlog.queue.push_back(bytes);
            return Ok(()); // the connection's task was woken when the backlog began
        }
        // Nothing waiting: straight to the socket (under the lock, so no other message can
        // slip in between the parts of this one).
        while !bytes.is_empty() {
            match self.stream.try_write(&bytes) {
                Ok(0) => return self.fail(backlog, bytes),
                Ok(n) => bytes.advance(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    backlog.bytes = bytes.len();
                    backlog.queue.push_back(bytes);
                    drop(backlog);
                    self.wake.raise();
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(backlog, bytes),
            }
        }
        Ok(())
    }

    fn fail(&self, mut backlog: std::sync::MutexGuard<'_, Backlog>, bytes: Bytes) -> Result<(), TrySendError<Bytes>> {
        backlog.failed = true;
        drop(backlog);
        self.wake.raise();
        Err(TrySendError::Closed(bytes))
    }

    /// Writes the backlog out, waiting for the socket as needed.
    async fn flush(&self) -> io::Result<()> {
        loop {
            {
                let mut backlog = self.backlog();
                loop {
                    if backlog.failed {
                        return Err(io::ErrorKind::BrokenPipe.into());
                    }
                    let Some(front) = backlog.queue.front_mut() else { return Ok(()) };
                    match self.stream.try_write(front) {
                        Ok(0) => backlog.failed = true,
                        Ok(n) if n == front.len() => {
                            backlog.queue.pop_front();
                            backlog.bytes -= n;
                        }
                        Ok(n) => {
                            front.advance(n);
                            backlog.bytes -= n;
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => backlog.failed = true,
                    }
                }
            }
            self.stream.writable().await?;
        }
    }
}

/// What the connection's task reads.
pub(super) enum Inlet {
    Direct(Arc<Direct>),
    Tls(ReadHalf<Box<dyn SipStream>>),
}

impl AsyncRead for Inlet {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inlet::Tls(half) => Pin::new(half).poll_read(cx, buf),
            Inlet::Direct(direct) => loop {
                ready!(direct.stream.poll_read_ready(cx))?;
                match direct.stream.try_read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    // Readiness cleared by the failed read: the next poll waits for more.
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
            },
        }
    }
}

/// What the connection's task writes: the backlog others left, or the queue's messages.
pub(super) enum Outlet {
    Direct(Arc<Direct>),
    Tls { queue: mpsc::Receiver<Bytes>, half: WriteHalf<Box<dyn SipStream>> },
}

/// Something for the connection's task to write (see [`Outlet::pending`]).
pub(super) enum Pending {
    /// The backlog of a plain TCP connection (or its failure).
    Backlog,
    /// A queued message.
    Message(Bytes),
    /// Every link is gone (TLS): nobody else will send.
    Closed,
}

impl Outlet {
    /// Waits until there is something to write; cancel-safe (for `select!`).
    pub(super) async fn pending(&mut self) -> Pending {
        match self {
            Outlet::Direct(direct) => {
                std::future::poll_fn(|cx| direct.wake.poll_take(cx)).await;
                Pending::Backlog
            }
            Outlet::Tls { queue, .. } => queue.recv().await.map_or(Pending::Closed, Pending::Message),
        }
    }

    /// Writes what [`Outlet::pending`] returned; an error ends the connection.
    pub(super) async fn write_pending(&mut self, pending: Pending) -> io::Result<()> {
        match (self, pending) {
            (Outlet::Direct(direct), _) => direct.flush().await,
            (Outlet::Tls { half, .. }, Pending::Message(bytes)) => half.write_all(&bytes).await,
            (Outlet::Tls { .. }, _) => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Writes a message of the connection's own task (an answer, a keep-alive pong), in order
    /// after every message sent before.
    pub(super) async fn write(&mut self, bytes: Bytes) -> io::Result<()> {
        match self {
            Outlet::Tls { half, .. } => half.write_all(&bytes).await,
            Outlet::Direct(direct) => {
                match direct.send(bytes) {
                    Ok(()) => {}
                    Err(TrySendError::Full(bytes)) => {
                        // Its own answer waits for the backlog rather than being lost.
                        direct.flush().await?;
                        direct.send(bytes).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
                    }
                    Err(TrySendError::Closed(_)) => return Err(io::ErrorKind::BrokenPipe.into()),
                }
                direct.flush().await
            }
        }
    }
}

/// Splits a connection into what its task reads, what it writes, and the handle other tasks
/// send with (at most `queue` messages wait for it).
pub(super) fn wire_up(wire: Wire, queue: usize) -> (Inlet, Outlet, Link) {
    match wire {
        Wire::Tcp(stream) => {
            let direct = Arc::new(Direct { stream, most: queue.max(1), backlog: Mutex::new(Backlog::default()), wake: Signal::default() });
            let link = Link(Kind::Direct(Arc::downgrade(&direct)));
            (Inlet::Direct(direct.clone()), Outlet::Direct(direct), link)
        }
        Wire::Tls(stream) => {
            let (read, write) = tokio::io::split(stream);
            let (sender, receiver) = mpsc::channel(queue);
            (Inlet::Tls(read), Outlet::Tls { queue: receiver, half: write }, Link(Kind::Queued(sender)))
        }
    }
}

#[cfg(test)]
mod tests;
