//! `[logging]` and `[logging.ship]`: the file logs' format, and the syslog server the logs are
//! shipped to (address, protocol, the TLS files, the disk queue's cap). Every refusal names
//! its key; the certificate files must exist (their contents are read at start, where a bad
//! file is an error of its own).

use super::super::file::{LoggingFile, ShipFile};
use super::super::{LogFormat, LoggingConfig, ShipConfig, ShipProtocol};
use super::Checker;

/// `logging.ship.queue_max` when not set.
pub(super) const DEFAULT_QUEUE_MAX: u64 = 1 << 30;
/// Smallest `queue_max` accepted: room for a few thousand lines.
pub(super) const MIN_QUEUE_MAX: u64 = 64 * 1024;
/// Largest `queue_max` accepted (1 TiB).
pub(super) const MAX_QUEUE_MAX: u64 = 1 << 40;

pub(super) fn resolve_logging(c: &mut Checker<'_>, raw: LoggingFile, ship: Option<ShipFile>) -> LoggingConfig {
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            c.err("logging.format", format!("{other:?} is not a log format"), "use \"text\" or \"json\"");
            LogFormat::Text
        }
    };
    LoggingConfig { format, ship: ship.and_then(|s| resolve_ship(c, s)) }
}

fn resolve_ship(c: &mut Checker<'_>, raw: ShipFile) -> Option<ShipConfig> {
    let before = c.errors.len();
    let (host, port) = match raw.address.as_deref() {
        Some(text) => match split_host_port(text) {
            Some(parts) => parts,
            None => {
                c.err(
                    "logging.ship.address",
                    format!("{text:?} is not host:port"),
                    "write the syslog server as \"logs.example.com:6514\" or \"[2001:db8::1]:6514\"",
                );
                (String::new(), 0)
            }
        },
        None => {
            c.err("logging.ship.address", "missing", "set the syslog server, e.g. address = \"logs.example.com:6514\"");
            (String::new(), 0)
        }
    };
    let protocol = match raw.protocol.as_deref() {
        None | Some("tls") => ShipProtocol::Tls,
        Some("relp") => ShipProtocol::Relp,
        Some(other) => {
            c.err("logging.ship.protocol", format!("{other:?} is not a shipping protocol"), "use \"tls\" (RFC 5425) or \"relp\"");
            ShipProtocol::Tls
        }
    };
    let server_name = raw.server_name.clone().unwrap_or_else(|| host.clone());
    if raw.server_name.is_some() && rustls_pki_types::ServerName::try_from(server_name.as_str()).is_err() {
        c.err("logging.ship.server_name", format!("{server_name:?} is not a host name"), "write the name in the server's certificate");
    }
    let ca = match raw.ca.as_deref() {
        Some(text) => c.existing_file("logging.ship.ca", text, "PEM CA bundle"),
        None => {
            c.err("logging.ship.ca", "missing", "set the PEM bundle of the CA that signed the syslog server's certificate");
            Default::default()
        }
    };
    let client_identity = match (raw.client_cert.as_deref(), raw.client_key.as_deref()) {
        (Some(cert), Some(key)) => Some((
            c.existing_file("logging.ship.client_cert", cert, "PEM certificate"),
            c.existing_file("logging.ship.client_key", key, "PEM private key"),
        )),
        (None, None) => None,
        (Some(_), None) => {
            c.err("logging.ship.client_key", "missing while client_cert is set", "set both client_cert and client_key, or neither");
            None
        }
        (None, Some(_)) => {
            c.err("logging.ship.client_cert", "missing while client_key is set", "set both client_cert and client_key, or neither");
            None
        }
    };
    let queue_max = match &raw.queue_max {
        None => DEFAULT_QUEUE_MAX,
        Some(value) => match size(value) {
            Some(bytes) if (MIN_QUEUE_MAX..=MAX_QUEUE_MAX).contains(&bytes) => bytes,
            _ => {
                c.err(
                    "logging.ship.queue_max",
                    format!("{value} is not a size from 64KiB to 1TiB"),
                    "write a size such as \"1GiB\", \"500MB\" or a number of bytes",
                );
                DEFAULT_QUEUE_MAX
            }
        },
    };
    (c.errors.len() == before).then_some(ShipConfig { host, port, protocol, server_name, ca, client_identity, queue_max })
}

/// `host:port` or `[v6]:port`, port 1–65535.
fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let valid = host.parse::<std::net::IpAddr>().is_ok() || super::valid_host_name(host);
    valid.then(|| (host.to_string(), port))
}

/// A size: an integer of bytes, or a string with a unit (B, KB, MB, GB, KiB, MiB, GiB, TiB).
pub(in crate::config) fn size(value: &toml::Value) -> Option<u64> {
    match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(text) => {
            let text = text.trim();
            let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let number: u64 = number.parse().ok()?;
            let factor: u64 = match unit.trim() {
                "" | "B" => 1,
                "KB" => 1_000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "TiB" => 1 << 40,
                _ => return None,
            };
            number.checked_mul(factor)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, LogFormat, ShipProtocol};

    const BASE: &str = "[server]\nname = \"edge.test\"\nstate_dir = \"state\"\nlog_dir = \"logs\"\n\
                        [[listener]]\nname = \"http\"\naddress = \"127.0.0.1:8080\"\n";

    fn resolve(extra: &str, dir: &Path) -> Result<Config, Vec<String>> {
        Config::from_toml_str(&format!("{BASE}{extra}"), dir).map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn logging_defaults_to_text_files_and_no_shipping() {
        let dir = tempfile::tempdir().unwrap();
        let config = resolve("", dir.path()).unwrap();
        assert_eq!(config.logging.format, LogFormat::Text);
        assert!(config.logging.ship.is_none());
        assert_eq!(resolve("[logging]\nformat = \"json\"\n", dir.path()).unwrap().logging.format, LogFormat::Json);
        let errors = resolve("[logging]\nformat = \"xml\"\n", dir.path()).unwrap_err();
        assert!(errors[0].starts_with("logging.format: \"xml\" is not a log format"), "{errors:?}");
    }

    #[test]
    fn a_ship_section_resolves_every_key_and_names_each_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["ca.pem", "ship.pem", "ship.key"] {
            std::fs::write(dir.path().join(file), "x").unwrap();
        }
        let ship = "[logging.ship]\naddress = \"logs.example.com:6514\"\nprotocol = \"relp\"\nca = \"ca.pem\"\n\
                    client_cert = \"ship.pem\"\nclient_key = \"ship.key\"\nqueue_max = \"64MiB\"\n";
        let config = resolve(ship, dir.path()).unwrap();
        let ship = config.logging.ship.unwrap();
        assert_eq!((ship.host.as_str(), ship.port, ship.protocol), ("logs.example.com", 6514, ShipProtocol::Relp));
        assert_eq!(ship.server_name, "logs.example.com", "defaults to the host of address");
        assert_eq!(ship.queue_max, 64 << 20);
        assert_eq!(ship.client_identity, Some((dir.path().join("ship.pem"), dir.path().join("ship.key"))));

        let v6 = resolve("[logging.ship]\naddress = \"[::1]:6514\"\nca = \"ca.pem\"\nserver_name = \"logs.test\"\n", dir.path());
        let v6 = v6.unwrap().logging.ship.unwrap();
        assert_eq!((v6.host.as_str(), v6.protocol, v6.server_name.as_str()), ("::1", ShipProtocol::Tls, "logs.test"));
        assert_eq!(v6.queue_max, super::DEFAULT_QUEUE_MAX);

        let bad = "[logging.ship]\naddress = \"logs.example.com\"\nprotocol = \"udp\"\nca = \"missing.pem\"\n\
                   client_cert = \"ship.pem\"\nqueue_max = \"1KiB\"\n";
        let errors = resolve(bad, dir.path()).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            ["logging.ship.address", "logging.ship.protocol", "logging.ship.ca", "logging.ship.client_key", "logging.ship.queue_max"],
            "{errors:#?}"
        );
        let unknown = resolve("[logging.ship]\naddres = \"x:1\"\n", dir.path()).unwrap_err();
        assert!(unknown[0].starts_with("logging.ship.addres"), "{unknown:?}");
    }

    #[test]
    fn sizes_take_bytes_or_a_unit() {
        use toml::Value;
        assert_eq!(super::size(&Value::Integer(4096)), Some(4096));
        assert_eq!(super::size(&Value::String("1GiB".into())), Some(1 << 30));
        assert_eq!(super::size(&Value::String("500 MB".into())), Some(500_000_000));
        assert_eq!(super::size(&Value::String("5 parsecs".into())), None);
        assert_eq!(super::size(&Value::Integer(-1)), None);
        assert_eq!(super::size(&Value::String("99999999999999TiB".into())), None);
    }
}
