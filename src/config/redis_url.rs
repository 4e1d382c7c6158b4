//! `cluster.redis_url`: the Redis address grammar, parsed once into a [`RedisUrl`].
//!
//! `redis://host:port/db` and `rediss://host:port/db` (TLS) name one server and are handed to
//! the Redis client as written; `redis+sentinel://s1:26379[,s2:26379…]/<master>[/db]` names
//! the Sentinels that know the master, and is parsed here into a [`SentinelTarget`] so the
//! cluster store never re-reads the text.

use std::fmt;

/// URL scheme that names Sentinels instead of a server.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// Sentinels, master name and database of a `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// `redis://host:port` of each Sentinel.
    pub sentinels: Vec<String>,
    pub master: String,
    pub db: i64,
}

/// Parses what follows `redis+sentinel://`: `host:port[,host:port…]/master[/db]`.
pub fn parse_sentinel(rest: &str) -> Option<SentinelTarget> {
    let (hosts, path) = rest.split_once('/')?;
    let mut parts = path.split('/');
    let master = parts.next().filter(|m| !m.is_empty())?.to_string();
    let db = match parts.next() {
        None | Some("") => 0,
        Some(db) => db.parse().ok()?,
    };
    let sentinels: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("redis://{h}")).collect();
    (!sentinels.is_empty() && parts.next().is_none()).then_some(SentinelTarget { sentinels, master, db })
}

/// A Redis address (`cluster.redis_url`), as written and as understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisUrl {
    /// One server (`redis://` or `rediss://`), opened by the Redis client as written.
    Server(String),
    /// Sentinels asked for the master (`redis+sentinel://`).
    Sentinel { url: String, target: SentinelTarget },
}

/// Why a `cluster.redis_url` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUrlError {
    /// `redis+sentinel://` without Sentinels or a master name, with a database that is not a
    /// number, or with more path segments.
    #[error("{0:?} is not a Sentinel URL")]
    Sentinel(String),
    /// Neither `redis://`, `rediss://` nor `redis+sentinel://`.
    #[error("{0:?} is not a redis URL")]
    Scheme(String),
}

impl RedisUrl {
    /// Reads a `redis://`, `rediss://` or `redis+sentinel://` URL.
    pub fn parse(text: &str) -> Result<RedisUrl, RedisUrlError> {
        if text.starts_with("redis://") || text.starts_with("rediss://") {
            return Ok(RedisUrl::Server(text.to_string()));
        }
        let Some(rest) = text.strip_prefix(SENTINEL_SCHEME) else { return Err(RedisUrlError::Scheme(text.to_string())) };
        match parse_sentinel(rest) {
            Some(target) => Ok(RedisUrl::Sentinel { url: text.to_string(), target }),
            None => Err(RedisUrlError::Sentinel(text.to_string())),
        }
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        match self {
            RedisUrl::Server(url) | RedisUrl::Sentinel { url, .. } => url,
        }
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_sentinels_master_and_database() {
        let t = parse_sentinel("10.0.0.1:26379,10.0.0.2:26379/mymaster/2").unwrap();
        assert_eq!(t.sentinels, ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"]);
        assert_eq!((t.master.as_str(), t.db), ("mymaster", 2));
        assert_eq!(parse_sentinel("h:1/m").unwrap().db, 0);
        for bad in ["", "h:1", "h:1/", "/m", "h:1/m/x", "h:1/m/0/extra"] {
            assert_eq!(parse_sentinel(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn redis_urls_are_a_server_or_sentinels() {
        assert_eq!(RedisUrl::parse("redis://h:6379/0"), Ok(RedisUrl::Server("redis://h:6379/0".into())));
        assert_eq!(RedisUrl::parse("rediss://h:6380/1").map(|u| u.to_string()).as_deref(), Ok("rediss://h:6380/1"));
        let Ok(RedisUrl::Sentinel { url, target }) = RedisUrl::parse("redis+sentinel://s:26379/pc/3") else { panic!("sentinel") };
        assert_eq!((url.as_str(), target.master.as_str(), target.db), ("redis+sentinel://s:26379/pc/3", "pc", 3));
        assert_eq!(
            RedisUrl::parse("redis+sentinel://s:26379").unwrap_err().to_string(),
            "\"redis+sentinel://s:26379\" is not a Sentinel URL"
        );
        assert_eq!(RedisUrl::parse("http://h").unwrap_err().to_string(), "\"http://h\" is not a redis URL");
    }
}
