//! Tests of the upstream HTTP/1.1 client against scripted upstreams on real loopback sockets:
//! the framing the edge writes, strict response framing, interim responses, caps, and when a
//! connection may carry another request.

use std::sync::Mutex;
use std::time::Duration;

use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Collects the connections given back.
#[derive(Default)]
struct Pool(Mutex<Vec<Conn>>);

impl Recycle for Pool {
    fn recycle(&self, conn: Conn) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    }
}

impl Pool {
    fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// An upstream that reads one request (head, then a `content-length` or chunked body), hands
/// over what it received, answers `response`, and then closes (`close`) or waits for the
/// edge to close.
async fn upstream(response: Vec<u8>, close: bool) -> (Conn, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !request_complete(&seen) {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = seen_tx.send(seen);
        let _ = tcp.write_all(&response).await;
        if close {
            return;
        }
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    (Conn::new(Stream::Plain(tcp)), seen_rx)
}

fn request_complete(seen: &[u8]) -> bool {
    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
    let body = &seen[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    let length = head.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |n| n.trim().parse::<usize>().unwrap());
    body.len() >= length
}

fn get(target: &str) -> http::request::Parts {
    request(Method::GET, target)
}

fn request(method: Method, target: &str) -> http::request::Parts {
    let mut parts = http::Request::builder().method(method).uri(target).body(()).unwrap().into_parts().0;
    parts.headers.insert(header::HOST, HeaderValue::from_static("app.internal"));
    parts
}

const NO_BODY: RequestBody<Full<Bytes>> = RequestBody::Full(Bytes::new());

/// Sends `parts` and reads the whole body: status, body, whether the connection came back.
async fn exchange(response: &[u8], parts: http::request::Parts) -> (Result<(StatusCode, Vec<u8>), String>, bool) {
    let (mut conn, _) = upstream(response.to_vec(), false).await;
    let pool = Arc::new(Pool::default());
    let outcome = match conn.send(&parts, NO_BODY).await {
        Err(error) => Err(error.to_string()),
        Ok(head) => {
            let status = head.status;
            let body = UpstreamBody::new(conn, &head, pool.clone());
            match body.collect().await {
                Ok(collected) => Ok((status, collected.to_bytes().to_vec())),
                Err(error) => Err(error.to_string()),
            }
        }
    };
    (outcome, pool.count() == 1)
}

/// `response` is an error for the request, and its connection does not come back.
async fn assert_refused(response: &[u8]) {
    let (outcome, reused) = exchange(response, get("/")).await;
    assert!(outcome.is_err(), "{}: {outcome:?}", String::from_utf8_lossy(response));
    assert!(!reused);
}

#[tokio::test]
async fn a_length_framed_response_is_read_whole_and_its_connection_comes_back() {
    let (outcome, reused) = exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello", get("/a?b=c")).await;
    assert_eq!(outcome.unwrap(), (StatusCode::OK, b"hello".to_vec()));
    assert!(reused);
}

#[tokio::test]
async fn chunked_responses_with_extensions_and_trailers_are_decoded() {
    let response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";
    let (outcome, reused) = exchange(response, get("/")).await;
    assert_eq!(outcome.unwrap(), (StatusCode::OK, b"hello world".to_vec()));
    assert!(reused, "the connection ended exactly at the last chunk");
}

#[tokio::test]
async fn broken_chunked_framing_is_an_error_and_the_connection_is_not_reused() {
    for response in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10000000000000000\r\nx\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    ] {
        assert_refused(response).await;
    }
}

#[tokio::test]
async fn ambiguous_response_framing_is_refused_not_guessed() {
    for response in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header: x\r\n\r\n",
    ] {
        assert_refused(response).await;
    }
}

#[tokio::test]
async fn a_response_without_framing_runs_to_the_close_and_its_connection_is_not_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf).await;
        tcp.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        tcp.write_all(b" the end").await.unwrap();
    });
    let mut conn = Conn::new(Stream::Plain(TcpStream::connect(addr).await.unwrap()));
    let pool = Arc::new(Pool::default());
    let head = conn.send(&get("/"), NO_BODY).await.unwrap();
    let body = UpstreamBody::new(conn, &head, pool.clone()).collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"until the end");
    assert_eq!(pool.count(), 0);
}

#[tokio::test]
async fn interim_responses_are_skipped_but_not_without_end() {
    let (outcome, reused) = exchange(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        get("/"),
    )
    .await;
    assert_eq!(outcome.unwrap(), (StatusCode::CREATED, b"ok".to_vec()));
    assert!(reused);
    let endless = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(9);
    let (outcome, _) = exchange(&endless, get("/")).await;
    assert!(outcome.unwrap_err().contains("interim"));
}

#[tokio::test]
async fn head_204_and_304_have_no_body_whatever_their_fields_say() {
    let (outcome, reused) = exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", request(Method::HEAD, "/")).await;
    assert_eq!(outcome.unwrap(), (StatusCode::OK, Vec::new()));
    assert!(reused);
    for response in [&b"HTTP/1.1 204 No Content\r\n\r\n"[..], b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n"] {
        let (outcome, reused) = exchange(response, get("/")).await;
        assert_eq!(outcome.unwrap().1, Vec::<u8>::new());
        assert!(reused);
    }
}

#[tokio::test]
async fn bytes_after_the_response_or_connection_close_or_http_1_0_end_the_connection() {
    for response in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive, close\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ] {
        let (outcome, reused) = exchange(response, get("/")).await;
        assert_eq!(outcome.unwrap().1, b"ok".to_vec(), "{}", String::from_utf8_lossy(response));
        assert!(!reused, "{}", String::from_utf8_lossy(response));
    }
}

#[tokio::test]
async fn oversized_heads_and_too_many_fields_are_refused() {
    let mut big = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_RESPONSE_HEAD));
    big.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    let (outcome, _) = exchange(&big, get("/")).await;
    assert!(outcome.unwrap_err().contains("too large"));
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_RESPONSE_HEADERS {
        many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"content-length: 0\r\n\r\n");
    let (outcome, _) = exchange(&many, get("/")).await;
    assert!(outcome.unwrap_err().contains("too many"));
}

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    let (mut conn, _) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec(), true).await;
    let pool = Arc::new(Pool::default());
    let head = conn.send(&get("/"), NO_BODY).await.unwrap();
    let error = UpstreamBody::new(conn, &head, pool.clone()).collect().await.unwrap_err();
    assert!(error.to_string().contains("before the end of the body"), "{error}");
    assert_eq!(pool.count(), 0);
}

#[tokio::test]
async fn a_connection_closed_before_any_response_is_reported_as_closed() {
    let (mut conn, _) = upstream(Vec::new(), true).await;
    assert!(matches!(conn.send(&get("/"), NO_BODY).await, Err(SendError::Closed)));
}

#[tokio::test]
async fn the_edge_alone_frames_the_request() {
    // The client's own framing fields never pass; the edge writes one of its own.
    let mut parts = request(Method::POST, "/submit?x=1");
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
    parts.headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    let (mut conn, seen) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), false).await;
    conn.send(&parts, RequestBody::<Full<Bytes>>::Full(Bytes::from_static(b"abc"))).await.unwrap();
    let seen = String::from_utf8(seen.await.unwrap()).unwrap();
    assert_eq!(seen, "POST /submit?x=1 HTTP/1.1\r\nhost: app.internal\r\ncontent-length: 3\r\n\r\nabc");

    // An empty POST says so; a GET says nothing.
    let (mut conn, seen) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), false).await;
    conn.send(&request(Method::POST, "/"), NO_BODY).await.unwrap();
    assert!(String::from_utf8(seen.await.unwrap()).unwrap().ends_with("content-length: 0\r\n\r\n"));
    let (mut conn, seen) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), false).await;
    conn.send(&get("/"), NO_BODY).await.unwrap();
    assert_eq!(String::from_utf8(seen.await.unwrap()).unwrap(), "GET / HTTP/1.1\r\nhost: app.internal\r\n\r\n");

    // A streamed body of unknown size goes chunked; of known size, with its length.
    let frames = futures_util::stream::iter(
        [b"hello".as_slice(), b"", b" world, this is longer"]
            .map(|d| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(d)))),
    );
    let (mut conn, seen) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), false).await;
    conn.send(&request(Method::PUT, "/up"), RequestBody::Stream(StreamBody::new(frames))).await.unwrap();
    let seen = String::from_utf8(seen.await.unwrap()).unwrap();
    assert!(seen.ends_with("transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n16\r\n world, this is longer\r\n0\r\n\r\n"), "{seen}");
    let (mut conn, seen) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), false).await;
    conn.send(&request(Method::PUT, "/up"), RequestBody::Stream(Full::new(Bytes::from_static(b"sized")))).await.unwrap();
    assert!(String::from_utf8(seen.await.unwrap()).unwrap().ends_with("content-length: 5\r\n\r\nsized"));
}

#[tokio::test]
async fn an_upstream_that_answers_before_the_body_is_sent_is_heard_and_the_connection_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf).await;
        tcp.write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let mut conn = Conn::new(Stream::Plain(TcpStream::connect(addr).await.unwrap()));
    // A body that never ends.
    let endless = futures_util::stream::pending::<Result<Frame<Bytes>, std::convert::Infallible>>();
    let post = request(Method::POST, "/");
    let sent = tokio::time::timeout(Duration::from_secs(3), conn.send(&post, RequestBody::Stream(StreamBody::new(endless))));
    let head = sent.await.expect("the early answer ends the wait").unwrap();
    assert_eq!(head.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!head.keep_alive, "the body was not all sent: the connection cannot be reused");
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_noticed_before_use() {
    let (mut open, _) = upstream(Vec::new(), false).await;
    assert!(!open.is_closed());
    let (mut conn, seen) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), true).await;
    conn.send(&get("/"), NO_BODY).await.unwrap();
    seen.await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(conn.is_closed());
}

#[test]
fn numbers_are_written_as_framing_needs_them() {
    assert_eq!(itoa_u64(0, &mut [0; 20]), b"0");
    assert_eq!(itoa_u64(u64::MAX, &mut [0; 20]), u64::MAX.to_string().as_bytes());
    assert_eq!(hex_line(0x1a2b, &mut [0; 18]), b"1a2b\r\n");
    assert_eq!(hex_line(usize::MAX, &mut [0; 18]), format!("{:x}\r\n", usize::MAX).as_bytes());
    assert_eq!(chunk_size(b"ff;name=value").unwrap(), 255);
    assert!(chunk_size(b"").is_err() && chunk_size(b"-1").is_err() && chunk_size(b"1 ").is_err());
}

#[tokio::test]
async fn an_expectation_is_never_forwarded_because_the_body_goes_out_at_once() {
    // The edge answers the client's `Expect: 100-continue` itself (hyper sends the 100) and
    // writes the body right behind the head. Forwarding the field would tell the upstream the
    // body may not follow: one that answers a final status early (401, 417) and then reads
    // the next request at once takes the client's body as a request of its own, and its
    // answer is queued for the next client on the pooled connection.
    let mut parts = request(Method::POST, "/upload");
    parts.headers.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
    let smuggled = Bytes::from_static(b"GET /admin HTTP/1.1\r\nhost: app.internal\r\n\r\n");
    let (mut conn, seen) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), false).await;
    conn.send(&parts, RequestBody::<Full<Bytes>>::Full(smuggled.clone())).await.unwrap();
    let seen = String::from_utf8(seen.await.unwrap()).unwrap();
    assert!(!seen.to_ascii_lowercase().contains("expect:"), "{seen}");
    // The same for a streamed body.
    let (mut conn, seen) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), false).await;
    conn.send(&parts, RequestBody::Stream(Full::new(smuggled))).await.unwrap();
    let seen = String::from_utf8(seen.await.unwrap()).unwrap();
    assert!(!seen.to_ascii_lowercase().contains("expect:"), "{seen}");
}

#[tokio::test]
async fn a_2xx_answer_to_connect_is_a_tunnel_and_its_connection_never_comes_back() {
    // RFC 9112 §6.3: after a 2xx to CONNECT the connection is a tunnel, whatever the fields
    // say. Pooled, the next client's request would go down that tunnel.
    for response in [&b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..], b"HTTP/1.1 200 Connection established\r\n\r\n"] {
        let (mut conn, _) = upstream(response.to_vec(), false).await;
        let pool = Arc::new(Pool::default());
        let head = conn.send(&request(Method::CONNECT, "/x"), NO_BODY).await.unwrap();
        let body = UpstreamBody::new(conn, &head, pool.clone());
        assert!(body.is_end_stream(), "no body follows a 2xx to CONNECT");
        drop(body);
        assert_eq!(pool.count(), 0, "{}", String::from_utf8_lossy(response));
    }
    // A refusal (4xx) is an ordinary response.
    let (outcome, reused) =
        exchange(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 2\r\n\r\nno", request(Method::CONNECT, "/x")).await;
    assert_eq!(outcome.unwrap(), (StatusCode::METHOD_NOT_ALLOWED, b"no".to_vec()));
    assert!(reused);
}
