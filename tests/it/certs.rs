//! `portcullis web cert …` against a running edge with an HTTPS listener: refused bundles
//! (wrong key, expired, wrong name) with clear messages, a hot swap a client observes (new
//! serial on a new connection while an open one keeps working), details checked against
//! `openssl x509`, CSRs verified by `openssl req`, and the expiry notice at 29 and −1 days.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

use crate::operate::{cli, stdout};
use crate::support::{RunningEdge, TestEdge, Upstream};

/// A self-signed certificate for `name`, valid from `from_days` to `until_days` from now
/// (negative = past), with `serial`; returns (cert PEM, key PEM).
fn make_cert(name: &str, from_days: i64, until_days: i64, serial: &[u8]) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let now = OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(until_days);
    params.serial_number = Some(rcgen::SerialNumber::from(serial.to_vec()));
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A TLS connection that trusts exactly `trusted` (PEM); `Err` when the handshake fails.
async fn connect(addr: SocketAddr, trusted: &str) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(trusted.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())
}

fn peer_serial(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    let der = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial().to_vec()
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;

async fn http_over(tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Sender {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut Sender) -> u16 {
    let request = hyper::Request::get("/").header("host", "localhost").body(http_body_util::Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn https_edge(up: &Upstream) -> RunningEdge {
    TestEdge::new().https().proxy("app", "/", &[(up.addr, 1, 0)], "").start().await
}

#[tokio::test]
async fn bad_bundles_are_refused_with_the_reason() {
    let up = Upstream::start("app").await;
    let edge = https_edge(&up).await;
    let dir = edge.state_dir().to_path_buf();
    let (cert, key) = make_cert("localhost", -1, 90, &[0x11]);
    let (_, other_key) = make_cert("localhost", -1, 90, &[0x12]);
    let (old, old_key) = make_cert("localhost", -60, -1, &[0x13]);
    let (early, early_key) = make_cert("localhost", 5, 90, &[0x14]);
    let (elsewhere, elsewhere_key) = make_cert("shop.example.com", -1, 90, &[0x15]);
    let (ca, _) = make_cert("Some CA", -1, 90, &[0x16]);
    for (file, bundle, reason) in [
        ("wrong-key.pem", format!("{cert}{other_key}"), "does not match"),
        ("expired.pem", format!("{old}{old_key}"), "expired at"),
        ("not-yet.pem", format!("{early}{early_key}"), "not valid before"),
        ("wrong-name.pem", format!("{elsewhere}{elsewhere_key}"), "server.name is \"localhost\""),
        ("no-key.pem", cert.clone(), "no private key"),
        ("out-of-order.pem", format!("{cert}{ca}{key}"), "chain out of order"),
        ("garbage.pem", "hello\n".to_string(), "no certificate"),
    ] {
        let path = write(&dir, file, &bundle);
        let out = cli(&edge, &["web", "cert", "add", &path]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(stderr.contains(reason), "{file}: want {reason:?} in {stderr}");
    }
    let details = stdout(&cli(&edge, &["web", "cert", "details"]).await);
    assert!(details.contains("SOURCE:       self-signed"), "nothing was installed:\n{details}");
    edge.stop().await;
}

#[tokio::test]
async fn an_added_certificate_is_served_to_new_connections_while_open_ones_keep_working() {
    let up = Upstream::start("app").await;
    let edge = https_edge(&up).await;
    let https = edge.https.unwrap();
    let dir = edge.state_dir().to_path_buf();
    let self_signed = std::fs::read_to_string(dir.join("state/tls/self-signed.pem")).unwrap();

    let before = connect(https, &self_signed).await.expect("self-signed served at start");
    let mut open = http_over(before).await;
    assert_eq!(get(&mut open).await, 200);

    let serial = [0x0A, 0xBC, 0xDE, 0x01];
    let (cert, key) = make_cert("localhost", -1, 120, &serial);
    let bundle = write(&dir, "good.pem", &format!("{cert}{key}"));
    let out = cli(&edge, &["web", "cert", "add", &bundle]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("SERIAL:       0A:BC:DE:01"), "{}", stdout(&out));

    let fresh = connect(https, &cert).await.expect("the new certificate is served to a new connection");
    assert_eq!(peer_serial(&fresh), serial);
    assert!(connect(https, &self_signed).await.is_err(), "the old certificate is no longer served");
    assert_eq!(get(&mut open).await, 200, "the connection opened before the swap keeps working");
    assert_eq!(get(&mut http_over(fresh).await).await, 200);

    // Details agree with openssl.
    let installed = dir.join("state/tls/installed.pem").display().to_string();
    let details = stdout(&cli(&edge, &["web", "cert", "details"]).await);
    assert!(details.contains("SOURCE:       installed"), "{details}");
    let fingerprint = openssl(&["x509", "-in", &installed, "-noout", "-fingerprint", "-sha256"]);
    let fingerprint = fingerprint.trim().rsplit('=').next().unwrap();
    assert!(details.contains(&format!("SHA-256:      {fingerprint}")), "openssl says {fingerprint}:\n{details}");
    assert_eq!(openssl(&["x509", "-in", &installed, "-noout", "-serial"]).trim(), "serial=0ABCDE01");
    assert!(details.contains("NAMES:        localhost") && details.contains("KEY:          EC P-256"), "{details}");

    // del: back to the self-signed certificate, again without a restart.
    assert_eq!(cli(&edge, &["web", "cert", "del"]).await.status.code(), Some(0));
    assert!(connect(https, &self_signed).await.is_ok());
    assert!(edge.log("error.log").contains("web certificate installed"));
    edge.stop().await;
}

#[tokio::test]
async fn csr_fields_are_kept_and_the_csr_verifies_with_openssl() {
    let up = Upstream::start("app").await;
    let edge = https_edge(&up).await;
    let edit =
        cli(&edge, &["web", "cert", "details", "edit", "--cn", "localhost", "--san", "edge.localhost", "--o", "Example Corp", "--c", "DE"])
            .await;
    assert_eq!(edit.status.code(), Some(0), "{}", String::from_utf8_lossy(&edit.stderr));
    assert!(stdout(&edit).contains("O=Example Corp"), "{}", stdout(&edit));
    let shown = stdout(&cli(&edge, &["web", "cert", "details", "edit"]).await);
    assert!(shown.contains("SAN=edge.localhost") && shown.contains("C=DE"), "fields are kept: {shown}");
    let bad = cli(&edge, &["web", "cert", "details", "edit", "--c", "Germany"]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("two capital letters"));

    let generated = cli(&edge, &["web", "cert", "gen-csr"]).await;
    assert_eq!(generated.status.code(), Some(0), "{}", String::from_utf8_lossy(&generated.stderr));
    let csr = stdout(&generated);
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"), "{csr}");
    assert_eq!(stdout(&cli(&edge, &["web", "cert", "print-csr"]).await), csr);
    let file = write(edge.state_dir(), "edge.csr", &csr);
    let verified = Command::new("openssl").args(["req", "-in", &file, "-noout", "-verify", "-subject", "-text"]).output().unwrap();
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let text = format!("{}{}", String::from_utf8_lossy(&verified.stdout), String::from_utf8_lossy(&verified.stderr));
    for want in ["verify OK", "CN = localhost", "O = Example Corp", "C = DE", "DNS:edge.localhost"] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    let key = edge.state_dir().join("state/tls/csr.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the CSR key is private");

    // A certificate signed for that CSR arrives without its key: the CSR's key completes it.
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let pair = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(200);
    let signed = params.self_signed(&pair).unwrap().pem();
    let path = write(edge.state_dir(), "signed.pem", &signed);
    let added = cli(&edge, &["web", "cert", "add", &path]).await;
    assert_eq!(added.status.code(), Some(0), "{}", String::from_utf8_lossy(&added.stderr));
    assert!(connect(edge.https.unwrap(), &signed).await.is_ok());

    // gen-selfsigned: a fresh self-signed one (served once the installed one is deleted).
    assert_eq!(cli(&edge, &["web", "cert", "del"]).await.status.code(), Some(0));
    let old = std::fs::read_to_string(edge.state_dir().join("state/tls/self-signed.pem")).unwrap();
    assert_eq!(cli(&edge, &["web", "cert", "gen-selfsigned"]).await.status.code(), Some(0));
    let new = std::fs::read_to_string(edge.state_dir().join("state/tls/self-signed.pem")).unwrap();
    assert_ne!(old, new);
    assert!(connect(edge.https.unwrap(), &new).await.is_ok());
    edge.stop().await;
}

#[tokio::test]
async fn the_expiry_notice_shows_29_days_ahead_and_after_expiry() {
    let up = Upstream::start("app").await;
    let edge = https_edge(&up).await;
    assert!(!stdout(&cli(&edge, &["status"]).await).contains("WEB CERT EXP"), "a fresh self-signed certificate has no notice");
    let (cert, key) = make_cert("localhost", -1, 29, &[0x29]);
    let path = write(edge.state_dir(), "soon.pem", &format!("{cert}{key}"));
    assert_eq!(cli(&edge, &["web", "cert", "add", &path]).await.status.code(), Some(0));
    let status = stdout(&cli(&edge, &["status"]).await);
    assert!(status.lines().any(|l| l.starts_with("WEB CERT EXPIRES AT: ")), "{status}");
    let seconds = expiry_metric(&edge).await;
    assert!((28 * 86_400..=29 * 86_400).contains(&seconds), "the metric follows the installed certificate: {seconds}");
    edge.stop().await;

    // An expired certificate can only be in use from [tls] files (`add` refuses it).
    let builder = TestEdge::new();
    let (cert, key) = make_cert("localhost", -90, -1, &[0x01]);
    let cert_path = write(builder.dir.path(), "expired.pem", &cert);
    let key_path = write(builder.dir.path(), "expired.key", &key);
    let edge = builder
        .https()
        .proxy("app", "/", &[(up.addr, 1, 0)], "")
        .raw(&format!("[tls]\ncert = \"{cert_path}\"\nkey = \"{key_path}\"\n"))
        .start()
        .await;
    let status = stdout(&cli(&edge, &["status"]).await);
    assert!(status.lines().any(|l| l.starts_with("WEB CERT EXPIRED AT: ")), "{status}");
    assert!(status.contains("(configured)"), "{status}");
    let seconds = expiry_metric(&edge).await;
    assert!((-2 * 86_400..=-86_000).contains(&seconds), "{seconds}");
    assert!(edge.log_once("error.log", "WEB CERT EXPIRED AT: ").await.contains("WEB CERT EXPIRED AT: "), "the notice is logged");
    edge.stop().await;
}

async fn expiry_metric(edge: &RunningEdge) -> i64 {
    let authorization = format!("Bearer {}", crate::support::ADMIN_TOKEN);
    let metrics = crate::support::client::h1(edge.admin, "GET", "/metrics", &[("authorization", &authorization)], Bytes::new()).await.body;
    let line = metrics.lines().find(|l| l.starts_with("portcullis_certificate_expiry_seconds ")).expect("expiry metric");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}
