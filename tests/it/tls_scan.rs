//! testssl.sh (Debian's `testssl.sh` package, command `testssl`) against the HTTPS listener:
//! protocols, cipher categories and every cipher per protocol, forward secrecy, server
//! preferences and defaults, HTTP headers, the known vulnerabilities and client simulation,
//! read back from its JSON report. No finding may be HIGH or CRITICAL; SSLv2, SSLv3, TLS 1.0
//! and 1.1 are not offered, TLS 1.2 and 1.3 are; every cipher offered is an AEAD (no CBC, RC4,
//! 3DES, NULL, EXPORT or anonymous suite).
//!
//! Two scans: an ECDSA P-256 certificate (the full set of checks) and an RSA 2048 one. Each
//! is issued by a test CA (handed to testssl with `--add-ca`) and shaped like an operator's
//! CA-issued certificate (SAN, 90 days, server-auth usage, a CRL URL), so the verdict is about
//! the TLS configuration, not about a self-signed certificate (which testssl rates CRITICAL
//! whatever the server does). Each scan is killed after five minutes. Skipped with a message
//! when testssl is missing (`PORTCULLIS_REQUIRE_TESTSSL=1`, set by `.ci/run`, fails instead).
//! The reports are kept in `target/tmp/testssl/` (`ecdsa.txt`, `rsa.json`, `summary.txt`, …);
//! `docs/security.md` summarises a run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use crate::support::{TestEdge, Upstream};

/// What testssl checks (`testssl --help`) with the ECDSA certificate: its whole default run
/// (protocols, standard cipher categories, forward secrecy, server preference, server
/// defaults, HTTP headers, vulnerabilities, client simulation) plus every cipher per protocol
/// (`-E`).
const CHECKS_ECDSA: &[&str] = &["-p", "-s", "-f", "-P", "-S", "-h", "-U", "-c", "-E"];

/// With an RSA certificate (what most public CAs issue; RSA-only attacks such as ROBOT and
/// DROWN apply): the same without client simulation and HTTP headers, which do not depend on
/// the key.
const CHECKS_RSA: &[&str] = &["-p", "-s", "-f", "-P", "-S", "-U", "-E"];

/// Each scan is killed after this long.
const SCAN_DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_finds_only_tls_1_2_and_1_3_with_aead_ciphers_and_nothing_high() {
    let Some(version) = testssl_version() else {
        crate::support::external::missing("TESTSSL", "the TLS scan needs testssl (apt-get install testssl.sh); CI installs it");
        return;
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testssl");
    std::fs::create_dir_all(&out).unwrap();
    let mut summaries = vec![version];
    for (name, algorithm, checks) in [("ecdsa", &rcgen::PKCS_ECDSA_P256_SHA256, CHECKS_ECDSA), ("rsa", &rcgen::PKCS_RSA_SHA256, CHECKS_RSA)]
    {
        let scan = scan(&out, name, algorithm, checks).await;
        eprintln!("{}", scan.summary);
        summaries.push(scan.summary.clone());
        std::fs::write(out.join("summary.txt"), summaries.join("\n\n") + "\n").unwrap();
        scan.check();
    }
}

/// One scan's findings.
struct Scan {
    findings: Vec<Finding>,
    summary: String,
    report: PathBuf,
}

/// Starts an edge whose HTTPS listener serves a CA-issued certificate with an `algorithm`
/// key, scans it with `checks`, and reads the JSON report (`out/<name>.json`, `<name>.txt`).
async fn scan(out: &Path, name: &str, algorithm: &'static rcgen::SignatureAlgorithm, checks: &[&str]) -> Scan {
    let up = Upstream::start("app").await;
    let builder = TestEdge::new();
    let ca = ca_signed_certificate(builder.dir.path(), algorithm);
    let edge = builder
        .https()
        .raw(&format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", ca.cert.display(), ca.key.display()))
        .proxy("app", "/", &[(up.addr, 1, 0)], "")
        .start()
        .await;
    let port = edge.https.unwrap().port();

    let (json, text) = (out.join(format!("{name}.json")), out.join(format!("{name}.txt")));
    let _ = std::fs::remove_file(&json);
    let mut command = Command::new("testssl");
    command
        .args(["--quiet", "--warnings", "off", "--color", "0", "--ip", "127.0.0.1", "--add-ca"])
        .arg(&ca.ca)
        .arg("--jsonfile")
        .arg(&json)
        .args(checks)
        .arg(format!("localhost:{port}"));
    let shown =
        format!("testssl --quiet --warnings off --color 0 --ip 127.0.0.1 --add-ca CA --jsonfile FILE {} localhost:PORT", checks.join(" "));
    let started = tokio::time::Instant::now();
    let status = run_bounded(command, &text, SCAN_DEADLINE).await;
    let elapsed = started.elapsed().as_secs_f64();
    edge.stop().await;
    up.stop();
    let report = std::fs::read_to_string(&text).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("testssl still running after {SCAN_DEADLINE:?}: killed; its output:\n{report}"));
    let findings: Vec<Finding> = match std::fs::read_to_string(&json).ok().and_then(|j| serde_json::from_str::<Value>(&j).ok()) {
        Some(Value::Array(items)) => items.iter().map(Finding::from_json).collect(),
        _ => panic!("testssl ({status}) wrote no JSON report; its output:\n{report}"),
    };
    let summary = format!("{name} certificate, {elapsed:.0} s: {shown}\n{}", summarise(&findings));
    Scan { findings, summary, report: text }
}

impl Scan {
    fn check(&self) {
        let findings = &self.findings;
        let problems: Vec<&Finding> = findings.iter().filter(|f| f.severity == "HIGH" || f.severity == "CRITICAL").collect();
        assert!(problems.is_empty(), "HIGH/CRITICAL findings:\n{problems:#?}\nfull report: {}", self.report.display());
        let scan_errors: Vec<&Finding> = findings.iter().filter(|f| f.id == "scanProblem" || f.severity == "FATAL").collect();
        assert!(scan_errors.is_empty(), "the scan itself failed: {scan_errors:#?}");
        for (id, name) in [("SSLv2", "SSLv2"), ("SSLv3", "SSLv3"), ("TLS1", "TLS 1.0"), ("TLS1_1", "TLS 1.1")] {
            let finding = protocol(findings, id);
            assert!(finding.starts_with("not offered"), "{name} must not be offered: {finding:?}");
        }
        for (id, name) in [("TLS1_2", "TLS 1.2"), ("TLS1_3", "TLS 1.3")] {
            let finding = protocol(findings, id);
            assert!(finding.starts_with("offered"), "{name} must be offered: {finding:?}");
        }
        let ciphers = offered_ciphers(findings);
        assert!(ciphers.iter().any(|c| c.starts_with("TLS_ECDHE_")), "no TLS 1.2 cipher listed: {ciphers:?}");
        assert!(
            ciphers.iter().any(|c| c.starts_with("TLS_AES_") || c.starts_with("TLS_CHACHA20_")),
            "no TLS 1.3 cipher listed: {ciphers:?}"
        );
        for cipher in &ciphers {
            assert!(is_aead(cipher), "{cipher} is offered but is not an AEAD suite");
        }
        // NULL, anonymous, export, 64-bit/DES/RC2/RC4, 3DES/IDEA, CBC ("obsolete") categories.
        for category in
            ["cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW", "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"]
        {
            let finding = findings.iter().find(|f| f.id == category).map_or("missing", |f| f.finding.as_str());
            assert_eq!(finding, "not offered", "{category}");
        }
    }
}

/// One entry of testssl's flat JSON report (`--jsonfile`).
#[derive(Debug)]
struct Finding {
    id: String,
    severity: String,
    finding: String,
}

impl Finding {
    fn from_json(item: &Value) -> Finding {
        let field = |name: &str| item.get(name).and_then(Value::as_str).unwrap_or("").to_string();
        Finding { id: field("id"), severity: field("severity"), finding: field("finding") }
    }
}

fn protocol<'a>(findings: &'a [Finding], id: &str) -> &'a str {
    findings.iter().find(|f| f.id == id).map(|f| f.finding.as_str()).unwrap_or_else(|| panic!("no {id} in the report"))
}

/// The IANA names of the ciphers `-E` found, per protocol (`cipher-tls1_2_xc02b`: `TLSv1.2
/// xc02b ECDHE-ECDSA-AES128-GCM-SHA256 ECDH 253 AESGCM 128 TLS_ECDHE_ECDSA_WITH_…`).
fn offered_ciphers(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.id.starts_with("cipher-") || f.id.starts_with("cipher_x"))
        .map(|f| f.finding.split_whitespace().last().unwrap_or("").to_string())
        .collect()
}

/// An authenticated-encryption suite: AES-GCM, AES-CCM or ChaCha20-Poly1305, and none of
/// CBC, RC4, 3DES, NULL, EXPORT or anonymous key exchange.
fn is_aead(iana: &str) -> bool {
    let aead = ["_GCM_", "_CCM", "_CHACHA20_POLY1305_"].iter().any(|m| iana.contains(m));
    let weak = ["_CBC_", "_RC4_", "_3DES_", "_DES_", "_NULL_", "_EXPORT", "_anon_", "_IDEA_"].iter().any(|m| iana.contains(m));
    iana.starts_with("TLS_") && aead && !weak
}

/// Protocols, ciphers (with the server's order) and findings by severity, for the log and
/// `docs/security.md`.
fn summarise(findings: &[Finding]) -> String {
    let mut lines = Vec::new();
    let offered = |id: &str| findings.iter().find(|f| f.id == id).map_or("?".to_string(), |f| f.finding.clone());
    lines.push(
        ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"]
            .iter()
            .map(|id| format!("{id}: {}", offered(id)))
            .collect::<Vec<_>>()
            .join("; "),
    );
    for f in findings.iter().filter(|f| f.id.starts_with("cipher-") || f.id.starts_with("cipher_x") || f.id.starts_with("cipherorder_")) {
        lines.push(format!("{}: {}", f.id, f.finding.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    for severity in ["CRITICAL", "HIGH", "MEDIUM", "LOW", "WARN", "INFO", "OK"] {
        let of: Vec<&Finding> = findings.iter().filter(|f| f.severity == severity).collect();
        let shown = if matches!(severity, "INFO" | "OK") {
            String::new()
        } else {
            of.iter().map(|f| format!("\n  {}: {}", f.id, f.finding)).collect()
        };
        lines.push(format!("{severity}: {}{shown}", of.len()));
    }
    lines.join("\n")
}

/// `testssl --version`'s own line (`testssl 3.0.8 from https://testssl.sh/`), or `None` when
/// testssl is not installed.
fn testssl_version() -> Option<String> {
    let out = Command::new("testssl").args(["--version", "--color", "0"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find(|l| l.trim_start().starts_with("testssl")).map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    Some(line.unwrap_or_else(|| "testssl (version unknown)".to_string()))
}

/// Runs `command` in its own process group with stdout and stderr to `log`; kills the whole
/// group (testssl starts many `openssl` processes) after `deadline`. `None` when killed.
async fn run_bounded(mut command: Command, log: &Path, deadline: Duration) -> Option<std::process::ExitStatus> {
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::create(log).unwrap();
    let mut child = command.process_group(0).stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if tokio::time::Instant::now() >= end {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A test CA (ECDSA) and a certificate it issued for `localhost` and `127.0.0.1`.
struct CaFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn ca_signed_certificate(dir: &Path, algorithm: &'static rcgen::SignatureAlgorithm) -> CaFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, CrlDistributionPoint, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::OrganizationName, "Portcullis tests");
    ca.distinguished_name.push(DnType::CommonName, "Portcullis test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(365);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(algorithm).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::OrganizationName, "Portcullis tests");
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    leaf.key_usages = if algorithm == &rcgen::PKCS_ECDSA_P256_SHA256 {
        vec![KeyUsagePurpose::DigitalSignature]
    } else {
        vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment]
    };
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.crl_distribution_points = vec![CrlDistributionPoint { uris: vec!["http://crl.example.invalid/test-ca.crl".to_string()] }];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = now - time::Duration::days(1);
    leaf.not_after = now + time::Duration::days(90);
    let cert_pem = leaf.signed_by(&key, &issuer).unwrap().pem();

    let files = CaFiles { ca: dir.join("test-ca.pem"), cert: dir.join("edge.pem"), key: dir.join("edge.key") };
    std::fs::write(&files.ca, ca_pem).unwrap();
    std::fs::write(&files.cert, cert_pem).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}
