//! A connection's link on real loopback sockets: messages written at once, a backlog when the
//! peer does not read (order kept, bounded), the connection's own writes behind it, and
//! `Closed` once the connection's task is gone.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A connected pair: (the edge's side as a wire, the peer's side).
async fn pair() -> (Wire, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (ours, theirs) = tokio::join!(TcpStream::connect(address), listener.accept());
    (Wire::Tcp(ours.unwrap()), theirs.unwrap().0)
}

/// Reads exactly `n` bytes from `peer` within 10 s.
async fn read_n(peer: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), peer.read_exact(&mut out)).await.unwrap().unwrap();
    out
}

/// A message of `len` bytes, every byte `tag`.
fn message(tag: u8, len: usize) -> Bytes {
    Bytes::from(vec![tag; len])
}

#[tokio::test]
async fn a_message_is_written_at_once_without_the_connections_task() {
    let (wire, mut peer) = pair().await;
    let (_inlet, _outlet, link) = wire_up(wire, 4);
    link.try_send(Bytes::from_static(b"MESSAGE one\r\n")).unwrap();
    link.try_send(Bytes::from_static(b"MESSAGE two\r\n")).unwrap();
    assert_eq!(read_n(&mut peer, 26).await, b"MESSAGE one\r\nMESSAGE two\r\n");
}

#[tokio::test]
async fn a_peer_that_does_not_read_gets_a_bounded_backlog_written_in_order_later() {
    let (wire, mut peer) = pair().await;
    let (_inlet, mut outlet, link) = wire_up(wire, 64);
    // Fill the socket's buffers and the backlog: each message a different byte.
    let size = 16 * 1024;
    let mut sent = Vec::new();
    let mut tag = 0u8;
    let refused = loop {
        tag = tag.wrapping_add(1);
        match link.try_send(message(tag, size)) {
            Ok(()) => sent.push(tag),
            Err(TrySendError::Full(bytes)) => break bytes,
            Err(TrySendError::Closed(_)) => panic!("closed"),
        }
        assert!(sent.len() < 10_000, "the backlog never filled");
    };
    assert_eq!(refused.len(), size, "the refused message is handed back whole");
    let Outlet::Direct(direct) = &outlet else { panic!("plain TCP is written directly") };
    let (waiting, count) = {
        let backlog = direct.backlog();
        (backlog.bytes, backlog.queue.len())
    };
    assert!(waiting > 0 && waiting <= BACKLOG_BYTES, "backlog {waiting} bytes");
    assert_eq!(count, 64, "the count is reached before the bytes ({waiting})");
    // A message small enough for the bytes left is still refused once the count is reached.
    assert!(matches!(link.try_send(Bytes::from_static(b"x")), Err(TrySendError::Full(_))));
    // The connection's own answer queues behind the backlog; the peer reads everything in order.
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        let expected = sent.len() * size + 9;
        let mut buffer = vec![0u8; 64 * 1024];
        while all.len() < expected {
            let n = tokio::time::timeout(Duration::from_secs(10), peer.read(&mut buffer)).await.unwrap().unwrap();
            assert!(n > 0, "closed early");
            all.extend_from_slice(&buffer[..n]);
        }
        (all, sent)
    });
    let pending = outlet.pending().await;
    outlet.write_pending(pending).await.unwrap();
    outlet.write(Bytes::from_static(b"SIP/2.0 4")).await.unwrap();
    let (all, sent) = reader.await.unwrap();
    let (messages, answer) = all.split_at(sent.len() * size);
    assert_eq!(answer, b"SIP/2.0 4");
    for (chunk, tag) in messages.chunks(size).zip(&sent) {
        assert!(chunk.iter().all(|b| b == tag), "message {tag} arrived whole and in its place");
    }
}

#[tokio::test]
async fn the_backlog_holds_at_most_its_bytes_however_few_messages() {
    let (wire, _peer) = pair().await;
    let (_inlet, outlet, link) = wire_up(wire, 10_000);
    let size = 1024 * 1024;
    let mut accepted = 0usize;
    while link.try_send(message(1, size)).is_ok() {
        accepted += 1;
        assert!(accepted < 200, "never full");
    }
    let Outlet::Direct(direct) = &outlet else { panic!("plain TCP is written directly") };
    let waiting = direct.backlog().bytes;
    assert!(waiting <= BACKLOG_BYTES && waiting + size > BACKLOG_BYTES, "backlog {waiting} bytes");
}

#[tokio::test]
async fn links_report_closed_once_the_connections_task_is_gone() {
    let (wire, mut peer) = pair().await;
    let (inlet, outlet, link) = wire_up(wire, 4);
    assert!(!link.is_closed());
    drop((inlet, outlet));
    assert!(link.is_closed());
    assert!(matches!(link.try_send(Bytes::from_static(b"x")), Err(TrySendError::Closed(_))));
    let mut end = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut end)).await.unwrap().unwrap();
    assert_eq!(n, 0, "the socket closed with the task");
}

#[tokio::test]
async fn the_inlet_reads_what_the_peer_sends_and_its_end() {
    let (wire, mut peer) = pair().await;
    let (mut inlet, _outlet, _link) = wire_up(wire, 4);
    tokio::io::AsyncWriteExt::write_all(&mut peer, b"OPTIONS").await.unwrap();
    let mut buffer = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), inlet.read(&mut buffer)).await.unwrap().unwrap();
    assert_eq!(&buffer[..n], b"OPTIONS");
    drop(peer);
    let n = tokio::time::timeout(Duration::from_secs(5), inlet.read(&mut buffer)).await.unwrap().unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_at_once_from_many_tasks_never_interleave() {
    let (wire, mut peer) = pair().await;
    let (_inlet, mut outlet, link) = wire_up(wire, 256);
    // Messages larger than the socket takes at once, so partial writes and backlogs happen.
    let (senders, each, size) = (4u8, 200usize, 48 * 1024usize);
    let reader = tokio::spawn(async move {
        let mut all = vec![0u8; usize::from(senders) * each * size];
        tokio::time::timeout(Duration::from_secs(30), peer.read_exact(&mut all)).await.unwrap().unwrap();
        all
    });
    let sending: Vec<_> = (1..=senders)
        .map(|tag| {
            let link = link.clone();
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < each {
                    match link.try_send(message(tag, size)) {
                        Ok(()) => sent += 1,
                        Err(TrySendError::Full(_)) => tokio::task::yield_now().await,
                        Err(TrySendError::Closed(_)) => panic!("closed"),
                    }
                }
            })
        })
        .collect();
    // The connection's own task writes what the socket did not take at once.
    let flushing = tokio::spawn(async move {
        loop {
            let pending = outlet.pending().await;
            outlet.write_pending(pending).await.unwrap();
        }
    });
    for sender in sending {
        sender.await.unwrap();
    }
    let all = reader.await.unwrap();
    flushing.abort();
    let mut counts = [0usize; 256];
    for chunk in all.chunks(size) {
        let tag = chunk[0];
        assert!(chunk.iter().all(|b| *b == tag), "a message was cut by another one");
        counts[usize::from(tag)] += 1;
    }
    assert!((1..=senders).all(|tag| counts[usize::from(tag)] == each), "every message arrived once");
}
