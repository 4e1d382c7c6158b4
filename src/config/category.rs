//! The shield's categories (DESIGN §3, "Automated intrusion protection"): the classes of
//! suspicious event counted per source IP, their names and their default settings.
//!
//! A category's name ([`Category::as_str`]) is what operators see and write: the
//! `[protection.categories.<name>]` key, exemption lists, the admin API's JSON, the
//! `portcullis_bans_total` label, ban records in the state store and `error.log` lines. The
//! names, their order and the defaults are the specification's; they never change
//! spelling, since stored bans and exemptions carry them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::CategorySettings;

/// A class of suspicious event the shield counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Credentials presented at the HTTP edge and refused (Basic, JWT, edge tokens): the
    /// brute-force lockout.
    HttpAuthFailure,
    /// A request the edge can read one way only (path, host, credential count, framing).
    HttpProtocolViolation,
    /// A 403 or 404 answer: probing for resources. Off by default: behind NAT, the 404s of
    /// many users add up to false positives.
    HttpResourceAccessFailure,
    /// SIP credentials refused (the SIP edge).
    SipAuthFailure,
    /// A malformed SIP message (the SIP edge).
    SipProtocolViolation,
    /// A malformed credential in a WebSocket upgrade's `Sec-WebSocket-Protocol`.
    WebsocketProtocolViolation,
    /// A wrong admin token, on the admin API or the status page's sign-in.
    AdminAuthFailure,
}

/// A name that is not a category (config keys, exemption lists, the admin API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a category")]
pub struct UnknownCategory(pub String);

impl Category {
    /// Every category, in the specification's order (the order error hints list them in).
    pub const ALL: [Category; 7] = [
        Category::HttpAuthFailure,
        Category::HttpProtocolViolation,
        Category::HttpResourceAccessFailure,
        Category::SipAuthFailure,
        Category::SipProtocolViolation,
        Category::WebsocketProtocolViolation,
        Category::AdminAuthFailure,
    ];

    /// The category's name, as configured, logged, labelled and stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::HttpAuthFailure => "http-auth-failure",
            Category::HttpProtocolViolation => "http-protocol-violation",
            Category::HttpResourceAccessFailure => "http-resource-access-failure",
            Category::SipAuthFailure => "sip-auth-failure",
            Category::SipProtocolViolation => "sip-protocol-violation",
            Category::WebsocketProtocolViolation => "websocket-protocol-violation",
            Category::AdminAuthFailure => "admin-auth-failure",
        }
    }

    /// The settings a category has when the file does not set them (DESIGN §3: 5 events in
    /// 30 s ban for 30 minutes; resource-access failures are off, and need 10).
    pub fn default_settings(self) -> CategorySettings {
        let (enabled, trigger) = match self {
            Category::HttpResourceAccessFailure => (false, 10),
            _ => (true, 5),
        };
        CategorySettings { enabled, trigger, window: Duration::from_secs(30), ban: Duration::from_secs(1800) }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = UnknownCategory;

    fn from_str(name: &str) -> Result<Category, UnknownCategory> {
        Category::ALL.into_iter().find(|c| c.as_str() == name).ok_or_else(|| UnknownCategory(name.to_string()))
    }
}

impl serde::Serialize for Category {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Category {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Category, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_specifications_and_parse_back() {
        let names: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "http-auth-failure",
                "http-protocol-violation",
                "http-resource-access-failure",
                "sip-auth-failure",
                "sip-protocol-violation",
                "websocket-protocol-violation",
                "admin-auth-failure",
            ]
        );
        for category in Category::ALL {
            assert_eq!(category.as_str().parse::<Category>(), Ok(category));
            assert_eq!(category.to_string(), category.as_str());
        }
        assert_eq!("manual".parse::<Category>(), Err(UnknownCategory("manual".into())));
        assert_eq!(UnknownCategory("x".into()).to_string(), "\"x\" is not a category");
    }

    #[test]
    fn serde_uses_the_names() {
        let json = serde_json::to_string(&[Category::HttpAuthFailure, Category::AdminAuthFailure]).unwrap();
        assert_eq!(json, r#"["http-auth-failure","admin-auth-failure"]"#);
        let back: Vec<Category> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [Category::HttpAuthFailure, Category::AdminAuthFailure]);
        assert!(serde_json::from_str::<Category>(r#""sip-flood""#).is_err());
    }

    #[test]
    fn defaults_follow_the_specification() {
        for category in Category::ALL {
            let d = category.default_settings();
            assert_eq!((d.window, d.ban), (Duration::from_secs(30), Duration::from_secs(1800)), "{category}");
            let expected = if category == Category::HttpResourceAccessFailure { (false, 10) } else { (true, 5) };
            assert_eq!((d.enabled, d.trigger), expected, "{category}");
        }
    }
}
