//! Edge caches that keep unauthenticated traffic away from upstreams (DESIGN §1):
//!
//! - [`PublicCache`]: responses of a service's `public_paths` (GET/HEAD), fetched once and
//!   served from memory while `Cache-Control` allows (no-store/private/no-cache are never
//!   cached; max-age/s-maxage set the lifetime, capped); only 2xx bodies (never a 206
//!   fragment) are cached, and a
//!   404 is remembered so probing the same unknown path does not reach the upstream again.
//!   Keyed by the canonical authority + path + query; a response with `Vary` is served only
//!   to requests with the same values of the named fields (`Vary: *` is never cached).
//!   Size-capped in bytes and entries; the oldest entries go first.
//! - [`CorsCache`]: the `access-control-*` headers of the first successful preflight per
//!   service and origin, replayed at the edge for `cors_cache` (default 5 min); preflights
//!   forwarded to the upstream are bounded per minute, since the client picks the origin.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use tokio::time::Instant;

use super::body::ProxyBody;

/// Largest response body cached for a public path.
pub const MAX_CACHED_BODY: usize = 1024 * 1024;
/// Total bytes of cached public responses per service.
pub const MAX_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Most cached public entries (including remembered 404s) per service.
pub const MAX_CACHE_ENTRIES: usize = 4096;
/// Lifetime when the upstream gives no `max-age`.
pub const DEFAULT_PUBLIC_TTL: Duration = Duration::from_secs(300);
/// Longest lifetime of a cached public response.
pub const MAX_PUBLIC_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long an upstream 404 on a public path is answered at the edge.
pub const NOT_FOUND_TTL: Duration = Duration::from_secs(300);
/// Most origins remembered per service for preflights.
pub const MAX_CORS_ORIGINS: usize = 256;

/// Response fields worth keeping with a cached public response.
const KEPT: [HeaderName; 6] =
    [header::CONTENT_TYPE, header::CACHE_CONTROL, header::ETAG, header::LAST_MODIFIED, header::CONTENT_LANGUAGE, header::EXPIRES];

/// The preflight response fields replayed by the edge.
const CORS_FIELDS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_MAX_AGE,
];

struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    expires: Instant,
    /// The request fields the response varies on, with the values the upstream saw.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
}

/// Most fields a cached response may vary on (more: not cached).
pub const MAX_VARY_FIELDS: usize = 8;

/// The fields named by the response's `Vary`, with the request's values; `None` when the
/// response cannot be cached (`Vary: *`, unknown names, too many).
fn vary_fields(response: &HeaderMap, request: &HeaderMap) -> Option<Vec<(HeaderName, Option<HeaderValue>)>> {
    let mut fields = Vec::new();
    for value in response.get_all(header::VARY) {
        for name in value.to_str().ok()?.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if fields.len() >= MAX_VARY_FIELDS {
                return None;
            }
            let value = request.get(&name).cloned();
            fields.push((name, value));
        }
    }
    Some(fields)
}

#[derive(Default)]
struct Store {
    entries: HashMap<String, Entry>,
    order: VecDeque<String>,
    bytes: usize,
}

/// A cached answer, or nothing.
pub enum Lookup {
    Hit(Box<Response<ProxyBody>>),
    Miss,
}

/// Cached responses of one service's public paths.
#[derive(Default)]
pub struct PublicCache {
    store: Mutex<Store>,
}

/// How long a response may be cached, from its `Cache-Control`; `None` = not at all.
pub fn cache_lifetime(headers: &HeaderMap) -> Option<Duration> {
    let mut lifetime = DEFAULT_PUBLIC_TTL;
    for value in headers.get_all(header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()) {
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match directive.split_once('=') {
                None if matches!(directive.as_str(), "no-store" | "private" | "no-cache") => return None,
                Some(("max-age" | "s-maxage", secs)) => {
                    let secs: u64 = secs.trim_matches('"').parse().ok()?;
                    if secs == 0 {
                        return None;
                    }
                    lifetime = Duration::from_secs(secs);
                }
                _ => {}
            }
        }
    }
    if headers.contains_key(header::SET_COOKIE) || headers.get(header::VARY).is_some_and(|v| v.as_bytes() == b"*") {
        return None;
    }
    Some(lifetime.min(MAX_PUBLIC_TTL))
}

impl std::fmt::Debug for PublicCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("PublicCache").field("entries", &store.entries.len()).field("bytes", &store.bytes).finish()
    }
}

impl std::fmt::Debug for CorsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorsCache").field("ttl", &self.ttl).finish()
    }
}

impl PublicCache {
    /// The cached answer for `key` (canonical authority, path and query) and a request with
    /// `request` fields, if fresh and not varying on a field whose value differs.
    pub fn lookup(&self, key: &str, method: &Method, request: &HeaderMap) -> Lookup {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = store.entries.get(key) else { return Lookup::Miss };
        if entry.expires <= Instant::now() || entry.vary.iter().any(|(name, value)| request.get(name) != value.as_ref()) {
            return Lookup::Miss;
        }
        let body = if method == Method::HEAD { ProxyBody::empty() } else { ProxyBody::full(entry.body.clone()) };
        let mut response = Response::new(body);
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
        response.headers_mut().insert(HeaderName::from_static("x-portcullis-cache"), HeaderValue::from_static("hit"));
        Lookup::Hit(Box::new(response))
    }

    /// Remembers a 2xx response (when cacheable) or a 404 for `key`; `request` holds the
    /// fields the upstream was sent (for `Vary`).
    pub fn store(&self, key: &str, status: StatusCode, headers: &HeaderMap, request: &HeaderMap, body: Bytes) {
        let Some(vary) = vary_fields(headers, request) else { return };
        let lifetime = match status {
            StatusCode::NOT_FOUND => NOT_FOUND_TTL,
            // A partial answer (206, to a `Range` request) is not the resource: kept under the
            // resource's key it would be served, truncated, to every later client.
            StatusCode::PARTIAL_CONTENT => return,
            s if s.is_success() => match cache_lifetime(headers) {
                Some(lifetime) => lifetime,
                None => return,
            },
            _ => return,
        };
        if body.len() > MAX_CACHED_BODY || key.len() > 2048 {
            return;
        }
        let mut kept = HeaderMap::new();
        if let Some(value) = headers.get(header::VARY) {
            kept.insert(header::VARY, value.clone());
        }
        for name in &KEPT {
            if let Some(value) = headers.get(name) {
                kept.insert(name, value.clone());
            }
        }
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = store.entries.remove(key) {
            store.bytes -= old.body.len();
            store.order.retain(|k| k != key);
        }
        while (store.bytes + body.len() > MAX_CACHE_BYTES || store.entries.len() >= MAX_CACHE_ENTRIES) && !store.order.is_empty() {
            if let Some(oldest) = store.order.pop_front()
                && let Some(old) = store.entries.remove(&oldest)
            {
                store.bytes -= old.body.len();
            }
        }
        store.bytes += body.len();
        store.order.push_back(key.to_string());
        store.entries.insert(key.to_string(), Entry { status, headers: kept, body, expires: Instant::now() + lifetime, vary });
    }
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ORIGIN) && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The client's answer to a forwarded preflight: only the `access-control-*` fields, no
/// body; 204 when the upstream answered 2xx, else the upstream's status alone.
pub fn preflight_answer(status: StatusCode, headers: &HeaderMap) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    if !status.is_success() {
        *response.status_mut() = status;
        return response;
    }
    *response.status_mut() = StatusCode::NO_CONTENT;
    for name in &CORS_FIELDS {
        for value in headers.get_all(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

/// Cached preflight answers of one service, per origin.
pub struct CorsCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (HeaderMap, Instant)>>,
    /// Start of the current minute and preflights forwarded in it.
    forwarded: Mutex<(Instant, u32)>,
}

impl CorsCache {
    /// A cache keeping answers for `ttl`.
    pub fn new(ttl: Duration) -> CorsCache {
        CorsCache { ttl, entries: Mutex::new(HashMap::new()), forwarded: Mutex::new((Instant::now(), 0)) }
    }

    /// Counts one preflight forwarded to the upstream, unless `per_minute` were already
    /// forwarded in the current minute: then the seconds until the next one may go.
    pub fn admit_forward(&self, per_minute: u32) -> Result<(), u64> {
        let now = Instant::now();
        let mut forwarded = self.forwarded.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.duration_since(forwarded.0);
        if elapsed >= Duration::from_secs(60) {
            *forwarded = (now, 0);
        }
        if forwarded.1 >= per_minute {
            return Err(60u64.saturating_sub(now.duration_since(forwarded.0).as_secs()).max(1));
        }
        forwarded.1 += 1;
        Ok(())
    }

    /// The edge's answer to a preflight from `origin`, if one is cached.
    pub fn lookup(&self, origin: &str) -> Option<Response<ProxyBody>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (headers, expires) = entries.get(origin)?;
        if *expires <= Instant::now() {
            return None;
        }
        let mut response = Response::new(ProxyBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        *response.headers_mut() = headers.clone();
        response.headers_mut().insert(HeaderName::from_static("x-portcullis-cache"), HeaderValue::from_static("hit"));
        Some(response)
    }

    /// Keeps the `access-control-*` fields of a successful preflight answer.
    pub fn store(&self, origin: &str, status: StatusCode, headers: &HeaderMap) {
        if !status.is_success() || !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) || origin.len() > 256 {
            return;
        }
        let mut kept = HeaderMap::new();
        for name in &CORS_FIELDS {
            for value in headers.get_all(name) {
                kept.append(name, value.clone());
            }
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CORS_ORIGINS && !entries.contains_key(origin) {
            let now = Instant::now();
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_CORS_ORIGINS {
                return;
            }
        }
        entries.insert(origin.to_string(), (kept, Instant::now() + self.ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn cache_control_decides_the_lifetime() {
        assert_eq!(cache_lifetime(&HeaderMap::new()), Some(DEFAULT_PUBLIC_TTL));
        assert_eq!(cache_lifetime(&cc("public, max-age=60")), Some(Duration::from_secs(60)));
        assert_eq!(cache_lifetime(&cc("max-age=999999999")), Some(MAX_PUBLIC_TTL));
        for never in ["no-store", "private, max-age=60", "no-cache", "max-age=0"] {
            assert_eq!(cache_lifetime(&cc(never)), None, "{never}");
        }
        let mut cookie = HeaderMap::new();
        cookie.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
        assert_eq!(cache_lifetime(&cookie), None);
    }

    #[tokio::test(start_paused = true)]
    async fn public_entries_expire_and_large_bodies_are_not_cached() {
        let cache = PublicCache::default();
        let none = HeaderMap::new();
        cache.store("/a.js", StatusCode::OK, &cc("max-age=10"), &none, Bytes::from_static(b"js"));
        assert!(matches!(cache.lookup("/a.js", &Method::GET, &none), Lookup::Hit(_)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(cache.lookup("/a.js", &Method::GET, &none), Lookup::Miss));
        cache.store("/big", StatusCode::OK, &none, &none, Bytes::from(vec![0; MAX_CACHED_BODY + 1]));
        assert!(matches!(cache.lookup("/big", &Method::GET, &none), Lookup::Miss));
        cache.store("/err", StatusCode::INTERNAL_SERVER_ERROR, &none, &none, Bytes::new());
        assert!(matches!(cache.lookup("/err", &Method::GET, &none), Lookup::Miss));
        cache.store("/part", StatusCode::PARTIAL_CONTENT, &none, &none, Bytes::from_static(b"fr"));
        assert!(matches!(cache.lookup("/part", &Method::GET, &none), Lookup::Miss), "a 206 fragment is never cached");
        cache.store("/missing", StatusCode::NOT_FOUND, &none, &none, Bytes::new());
        assert!(matches!(cache.lookup("/missing", &Method::GET, &none), Lookup::Hit(_)));
    }

    #[test]
    fn a_varying_response_is_served_only_to_requests_with_the_same_values() {
        let cache = PublicCache::default();
        let mut response = HeaderMap::new();
        response.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
        let mut english = HeaderMap::new();
        english.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
        let mut french = HeaderMap::new();
        french.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("fr"));
        cache.store("a.example/x", StatusCode::OK, &response, &english, Bytes::from_static(b"hello"));
        assert!(matches!(cache.lookup("a.example/x", &Method::GET, &english), Lookup::Hit(_)));
        assert!(matches!(cache.lookup("a.example/x", &Method::GET, &french), Lookup::Miss));
        assert!(matches!(cache.lookup("a.example/x", &Method::GET, &HeaderMap::new()), Lookup::Miss));
        let mut star = HeaderMap::new();
        star.insert(header::VARY, HeaderValue::from_static("*"));
        cache.store("a.example/y", StatusCode::OK, &star, &english, Bytes::from_static(b"y"));
        assert!(matches!(cache.lookup("a.example/y", &Method::GET, &english), Lookup::Miss));
    }

    #[tokio::test(start_paused = true)]
    async fn forwarded_preflights_are_bounded_per_minute() {
        let cors = CorsCache::new(Duration::from_secs(300));
        for _ in 0..3 {
            assert_eq!(cors.admit_forward(3), Ok(()));
        }
        let wait = cors.admit_forward(3).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(cors.admit_forward(3), Ok(()));
    }

    #[test]
    fn the_byte_cap_evicts_the_oldest() {
        let cache = PublicCache::default();
        let chunk = Bytes::from(vec![0; MAX_CACHED_BODY]);
        for i in 0..(MAX_CACHE_BYTES / MAX_CACHED_BODY + 2) {
            cache.store(&format!("/{i}"), StatusCode::OK, &HeaderMap::new(), &HeaderMap::new(), chunk.clone());
        }
        assert!(cache.store.lock().unwrap().bytes <= MAX_CACHE_BYTES);
        assert!(matches!(cache.lookup("/0", &Method::GET, &HeaderMap::new()), Lookup::Miss), "oldest evicted");
    }
}
