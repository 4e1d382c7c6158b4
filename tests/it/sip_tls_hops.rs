//! TLS on the connections the SIP edge opens itself, with a test PKI made by rcgen:
//! - toward the next hop (`next_hop = "sips:…"`): `stunnel4` in server mode in front of a
//!   `sipp` UAS stands for a TLS call control; partners' MESSAGEs reach it and their 200s come
//!   back when its certificate chains to `next_hop_ca`; with a CA that did not sign it, 503 +
//!   `Retry-After` and nothing reaches the UAS;
//! - toward partners (mutual TLS): the edge presents its TLS listener's certificate, and
//!   verifies the partner against that listener's `ca` for the allow entry's `edge` FQDN;
//!   a partner whose certificate another CA signed gets nothing (503 to the inside).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::sip::{SCENARIOS, free_port, run_uac, sipp_available, wait_listening};
use crate::sip_outward::{ask, inside, outward};
use crate::support::external::missing;
use crate::support::{TestEdge, Upstream, raw_exchange};

/// A test CA: its issuer, its certificate (PEM) written to `dir/<name>.pem`.
fn ca(dir: &Path, name: &str) -> (Issuer<'static, KeyPair>, CertificateDer<'static>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    (Issuer::new(params, key), cert.der().clone())
}

/// A certificate for `names` signed by `ca`, written to `dir/<file>.pem` and `.key`; its DER
/// chain and key.
fn leaf(dir: &Path, file: &str, ca: &Issuer<'static, KeyPair>, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap().signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    (vec![cert.der().clone()], PrivateKeyDer::try_from(key.serialize_der()).unwrap())
}

/// A child process under `timeout`, stopped when dropped: SIGTERM to `timeout`, which passes
/// it on to the program (a SIGKILL would leave the program running without its timeout).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

fn stunnel_available() -> bool {
    Command::new("stunnel4").arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// An edge with a TCP listener for partners and `sip` TOML (the `[sip]` keys).
async fn tcp_edge(sip: &str) -> (Upstream, crate::support::RunningEdge, std::net::SocketAddr) {
    let up = Upstream::start("web").await;
    let edge = TestEdge::new()
        .proxy("web", "/", &[(up.addr, 1, 0)], "")
        .raw(&format!(
            "[[sip.listener]]\nname = \"partners\"\naddress = \"127.0.0.1:0\"\ntransport = \"tcp\"\n[sip]\n{sip}\n\
             [[federation.allow]]\ndomain = \"partner.example\"\n"
        ))
        .start()
        .await;
    let address = edge
        .running()
        .runtime
        .listeners
        .all()
        .into_iter()
        .find(|b| b.protocol == portcullis::runtime::listeners::Protocol::SipTcp)
        .unwrap()
        .address;
    (up, edge, address)
}

fn message_from_partner(call: &str) -> String {
    format!(
        "MESSAGE sip:alice@corp.example SIP/2.0\r\nVia: SIP/2.0/TCP partner.example;branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\n\
         From: <sip:bob@partner.example>;tag=1\r\nTo: <sip:alice@corp.example>\r\nCall-ID: {call}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn partner_requests_reach_a_tls_next_hop_whose_certificate_chains_to_next_hop_ca_and_no_other() {
    if !sipp_available() {
        return missing("SIPP", "sipp (Debian's sip-tester) is not installed");
    }
    if !stunnel_available() {
        return missing("STUNNEL", "stunnel4 is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (next_hop_ca, _) = ca(d, "next-hop-ca");
    ca(d, "other-ca");
    leaf(d, "next-hop", &next_hop_ca, &["localhost"]);
    // The next hop: a sipp UAS (TCP) behind stunnel (TLS, server mode).
    let (uas_port, tls_port) = (free_port(), free_port());
    let uas_log = d.join("uas.log");
    let _uas = Process(
        Command::new("timeout")
            .args(["60", "sipp", "-sf", &format!("{SCENARIOS}/uas-message.xml"), "-i", "127.0.0.1", "-p", &uas_port.to_string()])
            .args(["-t", "t1", "-nd", "-nostdin", "-timeout", "55s", "-trace_msg", "-message_file"])
            .arg(&uas_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(uas_port).await;
    let conf = d.join("stunnel.conf");
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\noutput = {0}/stunnel.log\n[next-hop]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{uas_port}\n\
             cert = {0}/next-hop.pem\nkey = {0}/next-hop.key\nsslVersionMin = TLSv1.2\n",
            d.display()
        ),
    )
    .unwrap();
    let _stunnel =
        Process(Command::new("timeout").arg("60").arg("stunnel4").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    wait_listening(tls_port).await;

    // A next hop whose certificate another CA signed: 503, and nothing reaches it.
    let (_up, edge, sip) =
        tcp_edge(&format!("next_hop = \"sips:localhost:{tls_port}\"\nnext_hop_ca = \"{}/other-ca.pem\"", d.display())).await;
    let answer = raw_exchange(sip, message_from_partner("u1").as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("SIP/2.0 503 Service Unavailable\r\n") && answer.contains("Retry-After: 30\r\n"), "{answer}");
    let error_log = edge.log_once("error.log", "SIP next hop localhost").await;
    assert!(error_log.contains("TLS handshake"), "the reason is in error.log: {error_log}");
    edge.stop().await;
    assert!(!std::fs::read_to_string(&uas_log).unwrap_or_default().contains("MESSAGE sip:"), "nothing delivered to an untrusted next hop");

    // Trusted through next_hop_ca: a sipp partner's MESSAGEs all get their 200.
    let (_up, edge, sip) =
        tcp_edge(&format!("next_hop = \"sip:localhost:{tls_port};transport=tls\"\nnext_hop_ca = \"{}/next-hop-ca.pem\"", d.display()))
            .await;
    let args = ["-s", "alice", "-key", "fromdom", "partner.example", "-m", "10", "-r", "20", "-recv_timeout", "5000", "-timeout", "30s"];
    run_uac("uac-message-200.xml", sip, 60, &args, "every MESSAGE got its 200 over TLS to the next hop").await;
    let delivered = std::fs::read_to_string(&uas_log).unwrap();
    assert_eq!(delivered.matches("MESSAGE sip:alice@corp.example SIP/2.0").count(), 10, "{delivered}");
    assert!(delivered.contains(&format!("Via: SIP/2.0/TCP {sip};branch=z9hG4bK.pc.")), "through the edge: {delivered}");
    edge.stop().await;
}

/// A partner edge over TLS on loopback requiring a client certificate from `client_ca`: it
/// answers each request with 200 and keeps what it received and the client's certificate.
async fn tls_partner(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: CertificateDer<'static>,
) -> (u16, Arc<Mutex<String>>, Arc<Mutex<Option<CertificateDer<'static>>>>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, client) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(None)));
    let (log, presented) = (seen.clone(), client.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await else { continue };
            *presented.lock().unwrap() = tls.get_ref().1.peer_certificates().and_then(|c| c.first().cloned());
            let mut pending = String::new();
            let mut buffer = [0u8; 8192];
            while let Ok(n) = tls.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                pending.push_str(&String::from_utf8_lossy(&buffer[..n]));
                log.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
                while let Some(end) = pending.find("\r\n\r\n") {
                    let head: String = pending.drain(..end + 4).collect();
                    let copied: String = head
                        .lines()
                        .filter(|l| ["Via:", "From:", "To:", "Call-ID:", "CSeq:"].iter().any(|h| l.starts_with(h)))
                        .map(|l| format!("{l}\r\n"))
                        .collect();
                    let _ = tls.write_all(format!("SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n").as_bytes()).await;
                }
            }
        }
    });
    (port, seen, client)
}

#[tokio::test]
async fn the_inside_reaches_a_partner_over_mutual_tls_verified_against_the_listeners_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (partners_ca, partners_ca_der) = ca(d, "partners-ca");
    let (rogue_ca, _) = ca(d, "rogue-ca");
    let (edge_chain, _) = leaf(d, "edge-sip", &partners_ca, &["edge.corp.example"]);
    // The partner's edge certificate names its edge FQDN, not its SIP domain.
    let (chain, key) = leaf(d, "partner", &partners_ca, &["sip.partner.example"]);
    let (partner_port, seen, presented) = tls_partner(chain, key, partners_ca_der.clone()).await;
    let (rogue_chain, rogue_key) = leaf(d, "rogue", &rogue_ca, &["sip.partner.example"]);
    let (rogue_port, rogue_seen, _) = tls_partner(rogue_chain, rogue_key, partners_ca_der).await;

    let (hop_port, accepted) = inside().await;
    let up = Upstream::start("web").await;
    let edge = TestEdge::new()
        .proxy("web", "/", &[(up.addr, 1, 0)], "")
        .raw(&format!(
            "[[sip.listener]]\nname = \"partners\"\naddress = \"127.0.0.1:0\"\ntransport = \"tls\"\nclient_auth = \"required\"\n\
             ca = \"{0}/partners-ca.pem\"\ncert = \"{0}/edge-sip.pem\"\nkey = \"{0}/edge-sip.key\"\n\
             [sip]\nnext_hop = \"sip:127.0.0.1:{hop_port};transport=tcp\"\n\
             [[federation.allow]]\ndomain = \"partner.example\"\nedge = \"sip.partner.example\"\n",
            d.display()
        ))
        .start()
        .await;
    let mut tcp = tokio::time::timeout(Duration::from_secs(10), accepted).await.unwrap().unwrap();
    // Route names the partner's address; its certificate is checked for the edge FQDN.
    let route = |port: u16| format!("Route: <sip:127.0.0.1:{port};transport=tls;lr>\r\nMax-Forwards: 70\r\n");
    let answer = ask(&mut tcp, &outward("sips:bob@partner.example", "t1", &route(partner_port)), "t1").await;
    assert_eq!(answer, "SIP/2.0 200 OK");
    let received = seen.lock().unwrap().clone();
    assert!(received.starts_with("MESSAGE sips:bob@partner.example SIP/2.0\r\nVia: SIP/2.0/TLS "), "{received}");
    assert_eq!(presented.lock().unwrap().as_ref(), Some(&edge_chain[0]), "the edge presented its TLS listener's certificate");
    // The same partner again: the pooled connection is reused.
    assert_eq!(ask(&mut tcp, &outward("sips:bob@partner.example", "t2", &route(partner_port)), "t2").await, "SIP/2.0 200 OK");
    assert_eq!(seen.lock().unwrap().matches("MESSAGE sips:").count(), 2);
    // A partner whose certificate the listener's CA did not sign: 503, nothing sent.
    let answer = ask(&mut tcp, &outward("sips:bob@partner.example", "t3", &route(rogue_port)), "t3").await;
    assert_eq!(answer, "SIP/2.0 503 Service Unavailable");
    assert_eq!(rogue_seen.lock().unwrap().as_str(), "", "nothing sent to a partner that is not verified");
    edge.stop().await;
}
