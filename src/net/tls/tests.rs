//! Unit tests of the TLS profiles with real handshakes over loopback: a CA, a server
//! certificate, two client certificates and CRLs made with rcgen; a tokio-rustls server whose
//! acceptor sits in an `ArcSwap` (as the listeners hold it) and tokio-rustls clients.

use std::net::SocketAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::*;

const GOOD: u64 = 1001;
const REVOKED: u64 = 1002;

/// A client's certificate chain and key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A test PKI in a temporary directory: `ca.pem`, `server.pem` + `server.key` (for
/// `localhost`), and two client identities signed by the CA.
struct Pki {
    dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    good: Identity,
    revoked: Identity,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "Portcullis Test Client CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let ca = Issuer::new(params, ca_key);

        let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let server = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&server_key, &ca).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        write_private(&dir.path().join("server.key"), server_key.serialize_pem().as_bytes()).unwrap();

        let good = client_identity(&ca, GOOD, "good client");
        let revoked = client_identity(&ca, REVOKED, "revoked client");
        Pki { dir, ca, ca_der: ca_cert.der().clone(), good, revoked }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` holding one CRL from the CA revoking `serials`; returns its path.
    fn write_crl(&self, name: &str, number: u64, serials: &[u64]) -> PathBuf {
        let now = OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: now - Duration::minutes(5),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)
        .unwrap();
        let path = self.path(name);
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    /// The SIP-style profile (no ALPN) serving `server.pem` with `client_auth`.
    fn profile(&self, client_auth: ClientAuth) -> TlsProfile {
        TlsProfile::sip(self.path("server.pem"), self.path("server.key"), client_auth)
    }

    fn trust(&self, crl: Option<PathBuf>) -> ClientTrust {
        ClientTrust { ca: self.path("ca.pem"), crl }
    }

    /// A client trusting the CA, presenting `identity` (if any), over `versions`.
    fn client(&self, identity: Option<&Identity>, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let builder =
            ClientConfig::builder_with_provider(provider()).with_protocol_versions(versions).unwrap().with_root_certificates(roots);
        let config = match identity {
            Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key()).unwrap(),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

fn client_identity(ca: &Issuer<'static, KeyPair>, serial: u64, name: &str) -> Identity {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca).unwrap();
    Identity { chain: vec![cert.der().clone()], key: PrivateKeyDer::try_from(key.serialize_der()).unwrap() }
}

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// A loopback server as a listener runs it: the acceptor is loaded from the `ArcSwap` once
/// per connection; each handshake's outcome (the client's leaf certificate, if any) is
/// reported, then the connection echoes what it reads.
struct Server {
    addr: SocketAddr,
    acceptor: Arc<ArcSwap<TlsAcceptor>>,
    handshakes: mpsc::UnboundedReceiver<Result<Option<CertificateDer<'static>>, String>>,
}

async fn serve(profile: &TlsProfile) -> Server {
    let acceptor = Arc::new(ArcSwap::from_pointee(profile.acceptor().unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, handshakes) = mpsc::unbounded_channel();
    let current = acceptor.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = current.load_full();
            let report = report.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => return drop(report.send(Err(e.to_string()))),
                };
                let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
                let _ = report.send(Ok(peer));
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Server { addr, acceptor, handshakes }
}

/// Sends `bytes` and reads the echo.
async fn round_trip(tls: &mut TlsStream<TcpStream>, bytes: &[u8]) -> std::io::Result<()> {
    tls.write_all(bytes).await?;
    let mut echo = vec![0u8; bytes.len()];
    tls.read_exact(&mut echo).await?;
    assert_eq!(echo, bytes);
    Ok(())
}

/// Connects with `config`; `Ok` (the client's leaf certificate as the server saw it, and the
/// stream after one round trip) when both sides completed the handshake, else the server's
/// reason. A refused client must not get any data through either.
async fn connect(
    server: &mut Server,
    config: Arc<ClientConfig>,
) -> Result<(Option<CertificateDer<'static>>, TlsStream<TcpStream>), String> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let client = TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await;
    let server_side = server.handshakes.recv().await.unwrap();
    match (client, server_side) {
        (Ok(mut tls), Ok(peer)) => {
            round_trip(&mut tls, b"hello").await.unwrap();
            Ok((peer, tls))
        }
        (client, Err(why)) => {
            // In TLS 1.3 the client finishes before the server checks its certificate: the
            // refusal reaches it as an alert on its first read.
            if let Ok(mut tls) = client {
                assert!(round_trip(&mut tls, b"hello").await.is_err(), "a refused client got data through");
            }
            Err(why)
        }
        (Err(client), Ok(_)) => panic!("the server accepted but the client failed: {client}"),
    }
}

#[tokio::test]
async fn required_client_auth_refuses_no_certificate_and_revoked_certificates() {
    let pki = Pki::new();
    let crl = pki.write_crl("crl.pem", 1, &[REVOKED]);
    let mut server = serve(&pki.profile(ClientAuth::Required(pki.trust(Some(crl))))).await;
    for versions in [BOTH, TLS12] {
        let why = connect(&mut server, pki.client(None, versions)).await.unwrap_err();
        assert!(why.contains("peer sent no certificates"), "{why}");
        let (peer, _) = connect(&mut server, pki.client(Some(&pki.good), versions)).await.unwrap();
        assert_eq!(peer.as_ref(), Some(&pki.good.chain[0]));
        let why = connect(&mut server, pki.client(Some(&pki.revoked), versions)).await.unwrap_err();
        assert!(why.contains("Revoked"), "{why}");
    }
}

#[tokio::test]
async fn optional_client_auth_admits_no_certificate_but_not_a_revoked_one() {
    let pki = Pki::new();
    let crl = pki.write_crl("crl.pem", 1, &[REVOKED]);
    let mut server = serve(&pki.profile(ClientAuth::Optional(pki.trust(Some(crl))))).await;
    let (peer, _) = connect(&mut server, pki.client(None, BOTH)).await.unwrap();
    assert_eq!(peer, None);
    let (peer, _) = connect(&mut server, pki.client(Some(&pki.good), BOTH)).await.unwrap();
    assert_eq!(peer.as_ref(), Some(&pki.good.chain[0]));
    let why = connect(&mut server, pki.client(Some(&pki.revoked), BOTH)).await.unwrap_err();
    assert!(why.contains("Revoked"), "{why}");
}

#[tokio::test]
async fn without_a_crl_only_the_ca_is_checked() {
    let pki = Pki::new();
    let mut server = serve(&pki.profile(ClientAuth::Required(pki.trust(None)))).await;
    assert!(connect(&mut server, pki.client(Some(&pki.revoked), BOTH)).await.is_ok());
    let stranger = client_identity(&Issuer::new(CertificateParams::default(), KeyPair::generate().unwrap()), GOOD, "stranger");
    let why = connect(&mut server, pki.client(Some(&stranger), BOTH)).await.unwrap_err();
    assert!(why.contains("UnknownIssuer"), "{why}");
}

#[tokio::test]
async fn a_new_crl_applies_to_new_handshakes_and_established_connections_keep_running() {
    let pki = Pki::new();
    let crl = pki.write_crl("crl.pem", 1, &[REVOKED]);
    let profile = pki.profile(ClientAuth::Required(pki.trust(Some(crl))));
    let mut server = serve(&profile).await;
    // One client configuration throughout: its session cache would resume if the server let it.
    let good = pki.client(Some(&pki.good), BOTH);
    let (_, mut established) = connect(&mut server, good.clone()).await.unwrap();
    let (_, _second) = connect(&mut server, good.clone()).await.unwrap();

    // A broken CRL file is refused and the running acceptor stays.
    std::fs::write(pki.path("crl.pem"), "not a CRL").unwrap();
    assert!(matches!(profile.reload(&server.acceptor), Err(TlsError::Crl { problem: PemProblem::Empty(_), .. })));
    assert!(connect(&mut server, good.clone()).await.is_ok());

    // The operator replaces the file with a CRL that revokes the good client too, and reloads.
    pki.write_crl("crl.pem", 2, &[REVOKED, GOOD]);
    profile.reload(&server.acceptor).unwrap();
    let why = connect(&mut server, good.clone()).await.unwrap_err();
    assert!(why.contains("Revoked"), "{why}");
    let why = connect(&mut server, pki.client(Some(&pki.good), TLS12)).await.unwrap_err();
    assert!(why.contains("Revoked"), "{why}");
    for i in 0..3u8 {
        round_trip(&mut established, &[b'a' + i; 32]).await.expect("the connection made before the swap keeps working");
    }
}

#[test]
fn profiles_set_alpn_per_protocol() {
    let pki = Pki::new();
    let http = TlsProfile::http(pki.path("server.pem"), pki.path("server.key"));
    assert_eq!(http.server_config().unwrap().alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    let sip = pki.profile(ClientAuth::None).server_config().unwrap();
    assert!(sip.alpn_protocols.is_empty(), "SIP over TLS has no ALPN");
    assert!(sip.ignore_client_order);
}

#[test]
fn unusable_ca_and_crl_files_are_named_in_typed_errors() {
    let pki = Pki::new();
    let missing_ca = pki.path("no-such-ca.pem");
    let profile = pki.profile(ClientAuth::Required(ClientTrust { ca: missing_ca.clone(), crl: None }));
    let err = profile.server_config().unwrap_err();
    assert!(matches!(&err, TlsError::ClientCa { path, problem: PemProblem::Unreadable(_) } if *path == missing_ca), "{err:?}");
    assert!(err.to_string().contains(&missing_ca.display().to_string()), "{err}");

    let bad_ca = pki.path("bad-ca.pem");
    std::fs::write(&bad_ca, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n").unwrap();
    let profile = pki.profile(ClientAuth::Optional(ClientTrust { ca: bad_ca.clone(), crl: None }));
    let err = profile.server_config().unwrap_err();
    assert!(matches!(&err, TlsError::ClientCa { path, problem: PemProblem::Invalid(_) } if *path == bad_ca), "{err:?}");

    let invalid_crl = pki.path("invalid-crl.pem");
    std::fs::write(&invalid_crl, "-----BEGIN X509 CRL-----\nbm90IGEgY3Js\n-----END X509 CRL-----\n").unwrap();
    let err = pki.profile(ClientAuth::Required(pki.trust(Some(invalid_crl.clone())))).server_config().unwrap_err();
    assert!(matches!(&err, TlsError::Crl { path, problem: PemProblem::Invalid(_) } if *path == invalid_crl), "{err:?}");
    assert!(err.to_string().contains(&invalid_crl.display().to_string()), "{err}");

    let no_crl = pki.path("server.pem");
    let err = pki.profile(ClientAuth::Required(pki.trust(Some(no_crl.clone())))).server_config().unwrap_err();
    assert!(matches!(&err, TlsError::Crl { path, problem: PemProblem::Empty("X509 CRL") } if *path == no_crl), "{err:?}");

    let missing_crl = pki.path("no-such-crl.pem");
    let err = pki.profile(ClientAuth::Required(pki.trust(Some(missing_crl.clone())))).server_config().unwrap_err();
    assert!(matches!(&err, TlsError::Crl { path, problem: PemProblem::Unreadable(_) } if *path == missing_crl), "{err:?}");
}

#[test]
fn several_crls_in_one_file_are_all_read() {
    let pki = Pki::new();
    let first = std::fs::read_to_string(pki.write_crl("a.pem", 1, &[REVOKED])).unwrap();
    let second = std::fs::read_to_string(pki.write_crl("b.pem", 2, &[GOOD])).unwrap();
    let both = pki.path("both.pem");
    std::fs::write(&both, format!("{first}{second}")).unwrap();
    assert_eq!(load_crls(&both).unwrap().len(), 2);
    assert!(pki.profile(ClientAuth::Required(pki.trust(Some(both)))).server_config().is_ok());
}
