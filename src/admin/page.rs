//! The status web page on the admin listener (`/`): a token login, then a server-rendered
//! overview — maintenance (with a switch), counts, each service's state with its upstreams'
//! health and weights, blocked sources (with unblock), the SIP federation views (partner
//! domains, watch list, allow and block lists, with buttons), the certificate notice, and the last
//! refused configuration reload with its hints. No JavaScript: plain forms.
//!
//! Threat model: the page is reachable by whoever reaches the admin port. The login compares
//! the admin token in constant time (failures count as `admin-auth-failure` for the shield);
//! a session is a random 256-bit id in an `HttpOnly; SameSite=Strict` cookie (`Secure` on a
//! TLS admin listener), kept in memory for [`SESSION_TTL`] (at most [`MAX_SESSIONS`]); every
//! form carries the session's CSRF token; every value shown is HTML-escaped.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::{AdminBody, AdminState, read_body};

/// A page session lasts this long.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most page sessions at once (the oldest is dropped beyond).
pub const MAX_SESSIONS: usize = 64;
/// Largest form body read.
const MAX_FORM_BYTES: usize = 4096;
const COOKIE: &str = "portcullis_admin";

/// Logged-in page sessions: id → (CSRF token, expiry).
#[derive(Debug, Default)]
pub struct PageSessions {
    sessions: Mutex<HashMap<String, (String, Instant)>>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl PageSessions {
    fn create(&self) -> (String, String) {
        let (id, csrf) = (random_hex(), random_hex());
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, (_, until)| *until > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, (_, until))| *until).map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), (csrf.clone(), now + SESSION_TTL));
        (id, csrf)
    }

    /// The CSRF token of a live session.
    fn csrf_of(&self, id: &str) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions
            .iter()
            .find(|(k, (_, until))| bool::from(k.as_bytes().ct_eq(id.as_bytes())) && *until > now)
            .map(|(_, (csrf, _))| csrf.clone())
    }

    fn remove(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Whether `path` belongs to the page (served with cookie authentication).
pub fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/login" | "/logout" | "/ui/maintenance" | "/ui/unblock" | "/ui/federation")
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn session_cookie(request: &Request<Incoming>) -> Option<String> {
    request.headers().get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then(|| value.to_string())
    })
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| crate::net::percent::decode(&value.replace('+', " "))).flatten()
    })
}

fn html(status: StatusCode, body: String) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

fn see_other(location: &'static str) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_static(location));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}th{background:#f3f3f3}.up{color:#0a0}.down{color:#c00;font-weight:bold}\
.notice{background:#fff3cd;padding:.5em;border:1px solid #e0c060}.error{background:#f8d7da;padding:.5em;border:1px solid #d08080}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}form{display:inline}";

fn login_page(message: Option<&str>) -> String {
    let note = message.map(|m| format!("<p class=\"error\" id=\"login-error\">{}</p>", escape(m))).unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Portcullis — sign in</title><style>{STYLE}</style></head><body>\
         <h1>Portcullis</h1>{note}<form method=\"post\" action=\"/login\"><label>Admin token <input type=\"password\" name=\"token\" \
         id=\"token\" autocomplete=\"current-password\" autofocus></label> <button type=\"submit\" id=\"sign-in\">Sign in</button></form></body></html>"
    )
}

async fn overview(state: &AdminState, csrf: &str) -> String {
    let s = super::status::status_with_firewall(state).await;
    let mut out = String::new();
    let csrf = escape(csrf);
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"30\"><title>Portcullis — {server}</title>\
         <style>{STYLE}</style></head><body><h1>Portcullis — {server}</h1>\
         <p>Host {host} · version {version} · up {uptime} · load {l0:.2} {l1:.2} {l2:.2} · {date} \
         <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button id=\"sign-out\">Sign out</button></form></p>",
        server = escape(&s.server),
        host = escape(&s.host),
        version = escape(&s.version),
        uptime = humantime::format_duration(Duration::from_secs(s.uptime_seconds)),
        l0 = s.load_average[0],
        l1 = s.load_average[1],
        l2 = s.load_average[2],
        date = escape(&s.date),
    );
    if let Some((at, errors)) = state.last_reload_errors.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        let file = s.config_file.as_deref().unwrap_or("the configuration file");
        let _ = write!(
            out,
            "<div class=\"error\" id=\"config-error\"><b>The last configuration reload ({}) was refused</b>; the running configuration \
             stays. Fix {} and reload:<ul>",
            escape(at),
            escape(file)
        );
        for e in errors {
            let _ = write!(out, "<li>{}</li>", escape(e));
        }
        out.push_str("</ul></div>");
    }
    if let Some(notice) = s.certificate.as_ref().and_then(|c| c.notice.as_ref()) {
        let _ = write!(
            out,
            "<p class=\"notice\" id=\"cert-notice\">{} — install a new one with <code>portcullis web cert add FILE</code></p>",
            escape(notice)
        );
    }
    let (label, action, button) = if s.maintenance {
        ("ON — new sessions are refused", "off", "Turn maintenance off")
    } else {
        ("off", "on", "Turn maintenance on")
    };
    let _ = write!(
        out,
        "<h2>Maintenance: <span id=\"maintenance\">{label}</span></h2><form method=\"post\" action=\"/ui/maintenance\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"enabled\" value=\"{action}\">\
         <button id=\"maintenance-toggle\">{button}</button></form>"
    );
    if let Some(f) = &s.firewall {
        let ports: Vec<String> = f.ports.iter().map(u16::to_string).collect();
        let _ = write!(
            out,
            "<h2>Firewall: <span id=\"firewall\">{}</span></h2><p>table inet {} on {}, {} <span id=\"firewall-ports\">{}</span></p>\
             <table id=\"firewall-counters\"><tr><th>counter</th><th>packets</th></tr>",
            if f.applied { "applied" } else { "NOT APPLIED" },
            escape(&f.table),
            escape(&f.interface),
            // Taken down, it filters nothing: every port is reachable.
            if f.applied { "open ports" } else { "ports it opens once applied" },
            if ports.is_empty() { "none".to_string() } else { ports.join(", ") },
        );
        for (name, packets) in &f.counters {
            let _ = write!(out, "<tr><td>{}</td><td>{packets}</td></tr>", escape(name));
        }
        out.push_str("</table>");
        if let Some(c) = f.conntrack {
            let _ = write!(out, "<p>conntrack table: <span id=\"conntrack\">{} of {}</span> entries</p>", c.entries, c.max);
        }
        if let Some(error) = &f.error {
            let _ = write!(out, "<p class=\"error\">last apply/remove failed: {}</p>", escape(error));
        }
    }
    if let Some(ship) = &s.shipping {
        let _ = write!(
            out,
            "<h2>Log shipping: <span id=\"shipping\">{}</span></h2><p>{} to {}: {} line(s) queued ({} bytes of {}{}), oldest {} s; \
             sent {}, acknowledged {}, reconnects {}, not shipped (queue full) {}</p>",
            if ship.connected { "connected" } else { "NOT CONNECTED" },
            escape(&ship.protocol),
            escape(&ship.address),
            ship.queued,
            ship.queued_bytes,
            ship.queue_max_bytes,
            if ship.queue_full { ", FULL" } else { "" },
            ship.oldest_queued_age_s,
            ship.sent,
            ship.acknowledged,
            ship.reconnects,
            ship.dropped,
        );
        if let Some(error) = &ship.last_error {
            let _ = write!(out, "<p class=\"error\" id=\"shipping-error\">{}</p>", escape(error));
        }
    }
    let c = &s.counts;
    let _ = write!(
        out,
        "<h2>Counts</h2><table id=\"counts\"><tr><th></th><th>current</th><th>peak</th></tr>\
         <tr><td>sessions</td><td>{}</td><td>{}</td></tr><tr><td>WebSockets</td><td>{}</td><td>{}</td></tr>\
         <tr><td>SIP registrations</td><td>{}</td><td>{}</td></tr></table>",
        c.sessions,
        c.sessions_peak,
        c.websockets,
        c.websockets_peak,
        c.sip_registrations.map_or("-".to_string(), |n| n.to_string()),
        c.sip_registrations_peak.map_or("-".to_string(), |n| n.to_string()),
    );
    let k = &s.cluster;
    let _ = write!(
        out,
        "<h2>Cluster</h2><p id=\"cluster\">{} store · this peer {} · {} · primary {} · cluster sessions {} (peak {})</p>",
        escape(&k.store),
        escape(&k.peer),
        escape(&k.state),
        escape(k.primary.as_deref().unwrap_or("-")),
        k.sessions,
        k.sessions_peak
    );
    if !k.peers.is_empty() {
        out.push_str("<table id=\"peers\"><tr><th>peer</th><th>address</th><th>last seen</th><th>maintenance</th><th>sessions</th><th>WebSockets</th></tr>");
        for p in &k.peers {
            let _ = write!(
                out,
                "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.name),
                if p.primary { " (primary)" } else { "" },
                escape(&p.address),
                escape(&p.last_seen),
                if p.maintenance { "ON" } else { "off" },
                p.sessions,
                p.websockets
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Services</h2><table id=\"services\"><tr><th>service</th><th>state</th><th>auth</th><th>sessions</th><th>WebSockets</th><th>upstreams</th></tr>");
    for svc in &s.services {
        let mut servers = String::new();
        for srv in &svc.servers {
            let weight = if srv.weight == srv.configured_weight {
                srv.weight.to_string()
            } else {
                format!("{} (configured {})", srv.weight, srv.configured_weight)
            };
            let _ = write!(
                servers,
                "<div>{} <span class=\"{}\">{}</span> weight {}{}</div>",
                escape(&srv.address),
                if srv.up { "up" } else { "down" },
                if srv.up { "UP" } else { "DOWN" },
                weight,
                if srv.backup { " (backup)" } else { "" }
            );
        }
        let _ = write!(
            out,
            "<tr class=\"service\" data-name=\"{name}\"><td>{name}</td><td class=\"state\">{}</td><td>{}</td><td>{} (peak {})</td><td>{} (peak {})</td><td>{servers}</td></tr>",
            escape(&svc.state),
            escape(&svc.auth),
            svc.sessions,
            svc.sessions_peak,
            svc.websockets,
            svc.websockets_peak,
            name = escape(&svc.name),
        );
    }
    out.push_str("</table>");
    let bans = state.runtime.shield.list();
    let _ = write!(
        out,
        "<h2>Blocked sources ({})</h2><table id=\"blocked\"><tr><th>source</th><th>category</th><th>until</th><th>hits</th><th></th></tr>",
        bans.len()
    );
    for ban in bans.iter().take(500) {
        let until = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ban.until_ms));
        let _ = write!(
            out,
            "<tr class=\"ban\" data-source=\"{src}\"><td>{src}</td><td>{}</td><td>{until}</td><td>{}</td><td><form method=\"post\" action=\"/ui/unblock\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"ip\" value=\"{src}\"><button class=\"unblock\">Unblock</button></form></td></tr>",
            escape(&ban.category),
            ban.hits,
            src = escape(&ban.source),
        );
    }
    out.push_str("</table>");
    out.push_str(&federation(state, &csrf).await);
    if let Some(cert) = &s.certificate
        && let Some(d) = &cert.details
    {
        let _ = write!(
            out,
            "<h2>Web certificate</h2><p>{} ({}) valid until {}</p>",
            escape(&d.subject),
            escape(&cert.origin),
            escape(&d.not_after)
        );
    }
    out.push_str("</body></html>");
    out
}

/// Most partner domains the page lists (the API and CLI show more).
const DOMAINS_ON_PAGE: usize = 200;

/// The federation views: partner domains (with allow, block and clear buttons), the watch
/// list, and the allow and block lists.
async fn federation(state: &AdminState, csrf: &str) -> String {
    let federation = &state.runtime.federation;
    let button = |domain: &str, action: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"/ui/federation\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"action\" value=\"{action}\"><input type=\"hidden\" name=\"domain\" value=\"{}\">\
             <button class=\"{action}\">{label}</button></form>",
            escape(domain)
        )
    };
    let domains = federation.domains(DOMAINS_ON_PAGE).await;
    let mut out = format!(
        "<h2>Federation: partner domains ({})</h2><table id=\"federation-domains\"><tr><th>domain</th><th>state</th><th>first seen</th>\
         <th>last seen</th><th>requests</th><th>throttled</th><th>refused</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th><th>6xx</th>\
         <th>errors</th><th>distinct users</th><th></th></tr>",
        domains.len()
    );
    let at = |ms: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    for d in &domains {
        let r = &d.responses;
        let actions = match d.state {
            "watched" | "flagged" => format!(
                "{}{}{}",
                button(&d.domain, "clear", "Clear"),
                button(&d.domain, "allow", "Allow"),
                button(&d.domain, "block", "Block")
            ),
            "allowed" | "blocked" => String::new(),
            _ => format!("{}{}", button(&d.domain, "allow", "Allow"), button(&d.domain, "block", "Block")),
        };
        let _ = write!(
            out,
            "<tr class=\"domain\" data-domain=\"{name}\"><td>{name}</td><td class=\"state\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"users\">{}</td><td>{actions}</td></tr>",
            d.state,
            at(d.first_seen_ms),
            at(d.last_seen_ms),
            d.requests,
            d.throttled,
            d.refused,
            r.success,
            r.redirect,
            r.client_error,
            r.server_error,
            r.global_failure,
            d.errors,
            d.distinct_users,
            name = escape(&d.domain),
        );
    }
    out.push_str("</table>");
    let watch = federation.watch_list();
    let _ = write!(
        out,
        "<h2>Federation: watch list ({})</h2><table id=\"federation-watch\"><tr><th>domain</th><th>reason</th><th>since</th><th></th></tr>",
        watch.len()
    );
    for w in &watch {
        let reason = serde_json::to_value(w.reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let _ = write!(
            out,
            "<tr class=\"watched\" data-domain=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&reason),
            at(w.since_ms),
            button(&w.domain, "clear", "Clear"),
            name = escape(&w.domain),
        );
    }
    out.push_str("</table>");
    for (list, entries, remove) in [("allow", federation.allow_list(), "disallow"), ("block", federation.block_list(), "unblock")] {
        let _ =
            write!(out, "<h3>{list} list</h3><table id=\"federation-{list}\"><tr><th>domain</th><th>edge</th><th>from</th><th></th></tr>");
        for e in &entries {
            let origin = if e.origin == crate::federation::Origin::File { "file" } else { "run time" };
            let action = if e.origin == crate::federation::Origin::File { String::new() } else { button(&e.domain, remove, "Remove") };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{origin}</td><td>{action}</td></tr>",
                escape(&e.domain),
                escape(e.edge.as_deref().unwrap_or("-"))
            );
        }
        out.push_str("</table>");
    }
    out
}

/// Answers a page request (`is_page(path)` was true).
pub async fn respond(state: &AdminState, client: SocketAddr, request: Request<Incoming>) -> Response<AdminBody> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let session = session_cookie(&request).and_then(|id| state.page_sessions.csrf_of(&id).map(|csrf| (id, csrf)));
    match (method, path.as_str(), session) {
        (Method::GET, "/", Some((_, csrf))) => html(StatusCode::OK, overview(state, &csrf).await),
        (Method::GET, "/", None) => html(StatusCode::OK, login_page(None)),
        (Method::POST, "/login", _) => {
            let over_tls = request.extensions().get::<super::OverTls>().is_some_and(|t| t.0);
            let body = read_body(request, MAX_FORM_BYTES).await.unwrap_or_default();
            let presented = form_value(&body, "token").unwrap_or_default();
            if !state.token.load().matches(presented.as_bytes()) {
                state.runtime.error_log.warn(&format!("{} :: admin page sign-in failed", client.ip()));
                let line = crate::protect::RequestLine { method: "POST", path: "/login", protocol: "HTTP/1.1", host: "admin" };
                state.runtime.shield.record(client.ip(), crate::config::Category::AdminAuthFailure, line).await;
                return html(StatusCode::UNAUTHORIZED, login_page(Some("Wrong token.")));
            }
            let (id, _) = state.page_sessions.create();
            let mut response = see_other("/");
            let secure = if over_tls { "; Secure" } else { "" };
            if let Ok(cookie) = HeaderValue::from_str(&format!(
                "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                SESSION_TTL.as_secs()
            )) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        (Method::POST, "/logout" | "/ui/maintenance" | "/ui/unblock" | "/ui/federation", Some((id, csrf))) => {
            let body = read_body(request, MAX_FORM_BYTES).await.unwrap_or_default();
            let presented = form_value(&body, "csrf").unwrap_or_default();
            if !bool::from(presented.as_bytes().ct_eq(csrf.as_bytes())) {
                return html(StatusCode::FORBIDDEN, login_page(Some("The form expired; sign in again.")));
            }
            match path.as_str() {
                "/logout" => {
                    state.page_sessions.remove(&id);
                    let mut response = see_other("/");
                    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("portcullis_admin=; Path=/; Max-Age=0"));
                    return response;
                }
                "/ui/maintenance" => {
                    let query = format!("enabled={}", form_value(&body, "enabled").unwrap_or_default());
                    let _ = super::operate::set_maintenance(state, &query).await;
                }
                "/ui/federation" => {
                    let (action, domain) =
                        (form_value(&body, "action").unwrap_or_default(), form_value(&body, "domain").unwrap_or_default());
                    let federation = &state.runtime.federation;
                    // Errors (already listed, from the file) leave the page as it is.
                    let _ = match action.as_str() {
                        "allow" => federation.allow(&domain, None).await.map(|()| true),
                        "block" => federation.block(&domain).await.map(|()| true),
                        "clear" => federation.clear(&domain).await,
                        "disallow" => federation.disallow(&domain).await,
                        "unblock" => federation.unblock(&domain).await,
                        _ => Ok(false),
                    };
                }
                _ => {
                    if let Some(ip) = form_value(&body, "ip").and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) {
                        state.runtime.shield.unban(ip).await;
                    }
                }
            }
            see_other("/")
        }
        (Method::POST, _, None) => html(StatusCode::UNAUTHORIZED, login_page(Some("Sign in first."))),
        _ => html(StatusCode::METHOD_NOT_ALLOWED, login_page(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dynamic_value_is_escaped() {
        assert_eq!(escape("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
    }

    #[test]
    fn sessions_are_random_bounded_and_removable() {
        let sessions = PageSessions::default();
        let (a, csrf) = sessions.create();
        assert_eq!(a.len(), 64);
        assert_eq!(sessions.csrf_of(&a), Some(csrf));
        assert_eq!(sessions.csrf_of("nope"), None);
        for _ in 0..MAX_SESSIONS + 5 {
            sessions.create();
        }
        assert!(sessions.sessions.lock().unwrap().len() <= MAX_SESSIONS);
        let (b, _) = sessions.create();
        sessions.remove(&b);
        assert_eq!(sessions.csrf_of(&b), None);
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_value(b"csrf=ab&ip=2001%3Adb8%3A%3A1", "ip").as_deref(), Some("2001:db8::1"));
        assert_eq!(form_value(b"token=a+b", "token").as_deref(), Some("a b"));
    }
}
