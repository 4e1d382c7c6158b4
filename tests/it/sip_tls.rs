//! The SIP edge over mutual TLS with a revocation list: a partner with a certificate from the
//! configured CA is served when its certificate speaks for its From domain (403 when it does
//! not); one without a certificate is refused in the handshake; a CRL
//! written while the edge runs applies to new handshakes after a reload, and a connection
//! already established keeps working.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{ADMIN_TOKEN, TestEdge, Upstream};

const PARTNER_SERIAL: u64 = 7;

fn write_crl(ca: &Issuer<'static, KeyPair>, path: &std::path::Path, number: u64, revoked: &[u64]) {
    let now = OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(7),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|&serial| RevokedCertParams {
                serial_number: SerialNumber::from(serial),
                revocation_time: now - time::Duration::minutes(5),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(ca)
    .unwrap();
    std::fs::write(path, crl.pem().unwrap()).unwrap();
}

/// A TLS client trusting `ca_der`, presenting `identity` when given.
fn client(
    ca_der: &CertificateDer<'static>,
    identity: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Sends one MESSAGE on `tls` and returns the status line of the answer.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(tls: &mut S, call: &str) -> std::io::Result<String> {
    let message = format!(
        "MESSAGE sip:alice@corp.example SIP/2.0\r\nVia: SIP/2.0/TLS sip.partner.example;branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\n\
         From: <sip:bob@partner.example>;tag=1\r\nTo: <sip:alice@corp.example>\r\nCall-ID: {call}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(message.as_bytes()).await?;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut answer)).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
    Ok(String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn a_partner_certificate_revoked_by_a_new_crl_is_refused_after_a_reload_while_live_connections_stay() {
    let dir = tempfile::tempdir().unwrap();
    // The partners' CA, the edge's SIP certificate and one partner's client certificate.
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "Partner CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_der = ca_cert.der().clone();
    let ca = Issuer::new(ca_params, ca_key);
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&server_key, &ca).unwrap();
    std::fs::write(dir.path().join("sip.pem"), server.pem()).unwrap();
    std::fs::write(dir.path().join("sip.key"), server_key.serialize_pem()).unwrap();
    let partner_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut partner_params = CertificateParams::new(vec!["sip.partner.example".to_string()]).unwrap();
    partner_params.serial_number = Some(SerialNumber::from(PARTNER_SERIAL));
    partner_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let partner = partner_params.signed_by(&partner_key, &ca).unwrap();
    let identity = || Some((partner.der().clone(), PrivateKeyDer::try_from(partner_key.serialize_der()).unwrap()));
    let crl = dir.path().join("partners.crl.pem");
    write_crl(&ca, &crl, 1, &[]);

    let (next_hop, _) = crate::sip::answering_next_hop("200 OK").await;
    let up = Upstream::start("web").await;
    let d = dir.path().display();
    let edge = TestEdge::new()
        .proxy("web", "/", &[(up.addr, 1, 0)], "")
        .raw(&format!(
            "[[sip.listener]]\nname = \"partners\"\naddress = \"127.0.0.1:0\"\ntransport = \"tls\"\nclient_auth = \"required\"\n\
             ca = \"{d}/ca.pem\"\ncrl = \"{d}/partners.crl.pem\"\ncert = \"{d}/sip.pem\"\nkey = \"{d}/sip.key\"\n\
             [sip]\nnext_hop = \"sip:127.0.0.1:{next_hop};transport=tcp\"\n[[federation.allow]]\ndomain = \"partner.example\"\nedge = \"sip.partner.example\"\n"
        ))
        .start()
        .await;
    let sip = edge
        .running()
        .runtime
        .listeners
        .all()
        .into_iter()
        .find(|b| b.protocol == portcullis::runtime::listeners::Protocol::SipTls)
        .unwrap()
        .address;
    let name = || ServerName::try_from("localhost").unwrap();
    let connect = |identity| {
        let connector = client(&ca_der, identity);
        async move { connector.connect(name(), tokio::net::TcpStream::connect(sip).await.unwrap()).await }
    };

    // A partner with its certificate is served; one without is refused.
    let mut live = connect(identity()).await.expect("the partner's handshake");
    assert_eq!(exchange(&mut live, "c1").await.unwrap(), "SIP/2.0 200 OK", "its certificate names the allow entry's edge");
    // The same certificate claiming another domain in From: 403 (the certificate does not
    // speak for it).
    let claim = "MESSAGE sip:alice@corp.example SIP/2.0\r\nVia: SIP/2.0/TLS sip.partner.example;branch=z9hG4bKx1\r\nMax-Forwards: 70\r\n\
                 From: <sip:ceo@other.example>;tag=1\r\nTo: <sip:alice@corp.example>\r\nCall-ID: x1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    live.write_all(claim.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), live.read(&mut answer)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("SIP/2.0 403 Forbidden\r\n"), "{}", String::from_utf8_lossy(&answer[..n]));
    let anonymous = match connect(None).await {
        Err(_) => true,
        Ok(mut tls) => exchange(&mut tls, "c2").await.is_err(),
    };
    assert!(anonymous, "no client certificate: refused");

    // The partner's certificate is revoked; after a reload new handshakes fail…
    write_crl(&ca, &crl, 2, &[PARTNER_SERIAL]);
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let reload = crate::support::client::h1(edge.admin, "POST", "/api/v1/reload", &[("authorization", &admin)], bytes::Bytes::new()).await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    let refused = match connect(identity()).await {
        Err(_) => true,
        Ok(mut tls) => exchange(&mut tls, "c3").await.is_err(),
    };
    assert!(refused, "a revoked partner's new handshake is refused after the reload");
    // …while the connection made before keeps working.
    assert_eq!(exchange(&mut live, "c4").await.unwrap(), "SIP/2.0 200 OK");
    edge.stop().await;
}
