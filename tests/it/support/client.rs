//! Minimal HTTP clients for tests: HTTP/1.1 and HTTP/2 (prior knowledge or TLS+ALPN),
//! built on hyper's connection API so each test controls the protocol exactly.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
    pub version: hyper::Version,
}

async fn collect(response: hyper::Response<hyper::body::Incoming>) -> Reply {
    let status = response.status().as_u16();
    let version = response.version();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned(), version }
}

fn request(method: &str, uri: &str, host: &str, body: Bytes, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(uri);
    if !host.is_empty() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", host);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).unwrap()
}

/// One HTTP/1.1 request on a new connection.
pub async fn h1(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    collect(send.send_request(request(method, path, "localhost", body.into(), headers)).await.unwrap()).await
}

/// GET over HTTP/1.1.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    h1(addr, "GET", path, &[], Bytes::new()).await
}

/// One HTTP/2 request with prior knowledge (cleartext).
pub async fn h2c(addr: SocketAddr, path: &str) -> Reply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let uri = format!("http://localhost:{}{path}", addr.port());
    collect(send.send_request(request("GET", &uri, "", Bytes::new(), &[])).await.unwrap()).await
}

/// TLS client trusting exactly `cert_pem`, offering ALPN `alpn`.
pub async fn tls_connect(addr: SocketAddr, cert_pem: &std::path::Path, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(cert_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// One HTTP/1.1 request without a body over TLS.
pub async fn tls_h1(addr: SocketAddr, cert_pem: &std::path::Path, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    h1_over(tls_connect(addr, cert_pem, &[b"http/1.1"]).await, method, path, headers).await
}

/// One HTTP/1.1 request without a body over `tls`.
async fn h1_over(tls: tokio_rustls::client::TlsStream<TcpStream>, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    collect(send.send_request(request(method, path, "localhost", Bytes::new(), headers)).await.unwrap()).await
}

/// GET over TLS; HTTP/2 when the server picks it via ALPN, else HTTP/1.1.
pub async fn tls_get(addr: SocketAddr, cert_pem: &std::path::Path, alpn: &[&[u8]], path: &str) -> Reply {
    let tls = tls_connect(addr, cert_pem, alpn).await;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let uri = format!("https://localhost:{}{path}", addr.port());
        collect(send.send_request(request("GET", &uri, "", Bytes::new(), &[])).await.unwrap()).await
    } else {
        h1_over(tls, "GET", path, &[]).await
    }
}
