//! A private `rsyslogd -n` for the log-shipping tests: a TLS `imtcp` listener (anonymous or
//! mutual TLS) or an `imrelp` listener over TLS on a loopback port, writing every message it
//! receives to a file the tests read; and the test PKI (a CA, the server's certificate, the
//! edge's client certificate, and a rogue CA with a client certificate of its own).
//!
//! `rsyslogd` missing skips the test, or fails it with `PORTCULLIS_REQUIRE_RSYSLOG=1` (CI).
//! The daemon is killed and reaped on drop; its port stays reserved while it is stopped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::support::external::missing;

/// What the server listens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// RFC 5425 over TLS, any client (no client certificate asked).
    Tls,
    /// RFC 5425 over TLS; the client must present a certificate for `edge1.example.com`.
    MutualTls,
    /// RELP over TLS, client certificate for `edge1.example.com` required.
    Relp,
}

/// The files of the test PKI.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA the server does not trust, and a client certificate it signed.
    pub rogue_ca: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn new_ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

fn leaf(dir: &Path, name: &str, san: &str, usage: ExtendedKeyUsagePurpose, issuer: &Issuer<'static, KeyPair>) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec![san.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, san);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

impl Pki {
    /// Generates the PKI into `dir`.
    pub fn new(dir: &Path) -> Pki {
        let (ca_cert, ca) = new_ca("Log CA");
        let (rogue_cert_ca, rogue) = new_ca("Rogue CA");
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("rogue-ca.pem"), rogue_cert_ca.pem()).unwrap();
        let (server_cert, server_key) = leaf(dir, "server", "localhost", ExtendedKeyUsagePurpose::ServerAuth, &ca);
        let (client_cert, client_key) = leaf(dir, "client", "edge1.example.com", ExtendedKeyUsagePurpose::ClientAuth, &ca);
        let (rogue_cert, rogue_key) = leaf(dir, "rogue", "edge1.example.com", ExtendedKeyUsagePurpose::ClientAuth, &rogue);
        Pki {
            ca: dir.join("ca.pem"),
            server_cert,
            server_key,
            client_cert,
            client_key,
            rogue_ca: dir.join("rogue-ca.pem"),
            rogue_cert,
            rogue_key,
        }
    }
}

/// Whether `rsyslogd` and its TLS and RELP modules are here; otherwise skip (or fail in CI).
pub fn available() -> bool {
    let ok = Command::new("rsyslogd").arg("-v").output().is_ok_and(|o| o.status.success())
        && ["lmnsd_gtls.so", "imrelp.so"]
            .iter()
            .all(|m| Path::new("/usr/lib/x86_64-linux-gnu/rsyslog").join(m).exists() || Path::new("/usr/lib/rsyslog").join(m).exists());
    if !ok {
        missing("RSYSLOG", "rsyslogd with rsyslog-gnutls and rsyslog-relp not installed");
    }
    ok
}

/// A running (or stopped) `rsyslogd`.
pub struct Rsyslog {
    dir: PathBuf,
    pub address: SocketAddr,
    child: Option<Child>,
    /// Holds the port while the daemon is stopped.
    reserved: Option<socket2::Socket>,
    /// The network namespace it runs in (`ip netns exec`), if not ours.
    netns: Option<String>,
}

impl Rsyslog {
    /// Starts a server with `listener`, its files in `dir` (which must exist).
    pub fn start(dir: &Path, pki: &Pki, listener: Listener) -> Rsyslog {
        Rsyslog::start_in(dir, pki, listener, None)
    }

    /// [`Rsyslog::start`] inside network namespace `netns` (on its own 127.0.0.1).
    pub fn start_in(dir: &Path, pki: &Pki, listener: Listener, netns: Option<&str>) -> Rsyslog {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.display();
        let (ca, cert, key) = (pki.ca.display(), pki.server_cert.display(), pki.server_key.display());
        let template = "template(name=\"proto\" type=\"string\" string=\"%PRI% %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% %STRUCTURED-DATA% %msg%\\n\")\n\
             ruleset(name=\"in\" queue.type=\"Direct\") { action(type=\"omfile\" file=\"DIR/received.log\" template=\"proto\") }\n"
            .replace("DIR", &d.to_string());
        let config = match listener {
            Listener::Tls | Listener::MutualTls => {
                let auth = if listener == Listener::Tls {
                    "streamDriver.authMode=\"anon\""
                } else {
                    "streamDriver.authMode=\"x509/name\" permittedPeer=[\"edge1.example.com\"]"
                };
                format!(
                    "global(workDirectory=\"{d}/work\" defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{ca}\"\n\
                     defaultNetstreamDriverCertFile=\"{cert}\" defaultNetstreamDriverKeyFile=\"{key}\"\n\
                     parser.escapeControlCharactersOnReceive=\"off\")\n\
                     module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" {auth})\n\
                     input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\")\n{template}"
                )
            }
            Listener::Relp => format!(
                "global(workDirectory=\"{d}/work\" parser.escapeControlCharactersOnReceive=\"off\")\n\
                 module(load=\"imrelp\")\n\
                 input(type=\"imrelp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\" tls=\"on\" tls.caCert=\"{ca}\"\n\
                 tls.myCert=\"{cert}\" tls.myPrivKey=\"{key}\" tls.authMode=\"name\" tls.permittedPeer=[\"edge1.example.com\"])\n{template}"
            ),
        };
        std::fs::write(dir.join("rsyslog.conf"), config).unwrap();
        let mut server = Rsyslog {
            dir: dir.to_path_buf(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
            reserved: None,
            netns: netns.map(str::to_string),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        self.reserved = None;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("rsyslogd.out")).unwrap();
        let mut command = match &self.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, "rsyslogd"]);
                command
            }
            None => Command::new("rsyslogd"),
        };
        let child = command
            .args(["-n", "-f"])
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // At most 10 s (200 tries, 50 ms apart) until it listens.
        let mut tries = 0;
        while !self.listening() {
            tries += 1;
            assert!(tries < 200, "rsyslogd did not listen: {}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn listening(&self) -> bool {
        match &self.netns {
            None => std::net::TcpStream::connect_timeout(&self.address, Duration::from_millis(200)).is_ok(),
            Some(ns) => {
                let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{}", self.address.port());
                Command::new("ip").args(["netns", "exec", ns, "bash", "-c", &probe]).output().is_ok_and(|o| o.status.success())
            }
        }
    }

    /// What rsyslogd printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.out")).unwrap_or_default()
    }

    /// Every line written to the output file.
    pub fn received(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("received.log")).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// Stops the daemon: gracefully (SIGTERM, it writes what it has) or with SIGKILL.
    pub fn stop(&mut self, kill: bool) {
        if let Some(mut child) = self.child.take() {
            let signal = if kill { "-KILL" } else { "-TERM" };
            let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
            let _ = child.wait();
        }
        // Bound, not listening: connections are refused, as by a dead server, and nobody else
        // takes the port meanwhile.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let _ = socket.set_reuse_address(true);
        self.reserved = socket.bind(&self.address.into()).ok().map(|()| socket);
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.reserved = None;
        self.spawn();
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
