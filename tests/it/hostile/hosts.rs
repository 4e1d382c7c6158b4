//! One authority (contract 2): Host syntax, canonical host (lower case, no trailing dot, port
//! kept) used for routing AND sent upstream, absolute-form targets, duplicate and missing
//! Host, HTTP/2 `:authority` against `host`. Routing makes confusion observable: the host
//! route `desktop.example.com` → `hosted` (Basic, own upstream), anything else → `open`.

use super::model::{self, Cred, ModelRequest};
use super::{Case, DESKTOP_HOST, EDGE_HOST, Expect, H2Request, Options, Report, Wire, good_basic, h1, run_tables};

/// Host values the model accepts.
fn valid_hosts() -> Vec<(&'static str, String)> {
    let label = "a".repeat(60);
    vec![
        ("plain", DESKTOP_HOST.to_string()),
        ("mixed-case-trailing-dot", "Desktop.Example.COM.".to_string()),
        ("upper-with-port", "DESKTOP.EXAMPLE.COM:8445".to_string()),
        ("trailing-dot-with-port", "desktop.example.com.:8445".to_string()),
        ("port-80", "desktop.example.com:80".to_string()),
        ("port-65535", "desktop.example.com:65535".to_string()),
        ("ows", "  desktop.example.com  ".to_string()),
        ("other", "other.example".to_string()),
        ("other-mixed-case-dot", "Other.Example.".to_string()),
        ("ipv4", "127.0.0.1".to_string()),
        ("ipv4-port", "127.0.0.1:8080".to_string()),
        ("ipv6", "[::1]".to_string()),
        ("ipv6-port", "[::1]:8443".to_string()),
        ("ipv6-doc", "[2001:db8::1]".to_string()),
        ("underscore", "my_host.example".to_string()),
        ("punycode", "xn--bcher-kva.example".to_string()),
        ("single-label", "intranet".to_string()),
        ("long-190", format!("{label}.{label}.{label}.example")),
    ]
}

/// Host values the contract refuses with 400.
fn invalid_hosts() -> Vec<(&'static str, String)> {
    let label = "a".repeat(60);
    vec![
        ("userinfo", format!("user@{DESKTOP_HOST}")),
        ("userinfo-password", format!("user:pw@{DESKTOP_HOST}")),
        ("empty-userinfo", format!("@{DESKTOP_HOST}")),
        ("slash", format!("{DESKTOP_HOST}/x")),
        ("question", format!("{DESKTOP_HOST}?x")),
        ("hash", format!("{DESKTOP_HOST}#x")),
        ("lt", format!("{DESKTOP_HOST}<")),
        ("gt", format!("{DESKTOP_HOST}>")),
        ("script", "<script>".to_string()),
        ("quotes", format!("\"{DESKTOP_HOST}\"")),
        ("inner-space", "desktop .example.com".to_string()),
        ("percent", "desktop%2eexample.com".to_string()),
        ("percent-first", "%64esktop.example.com".to_string()),
        ("empty", String::new()),
        ("port-only", ":8445".to_string()),
        ("empty-port", format!("{DESKTOP_HOST}:")),
        ("port-too-big", format!("{DESKTOP_HOST}:99999")),
        ("port-65536", format!("{DESKTOP_HOST}:65536")),
        ("port-hex", format!("{DESKTOP_HOST}:8a")),
        ("port-negative", format!("{DESKTOP_HOST}:-1")),
        ("port-plus", format!("{DESKTOP_HOST}:+80")),
        ("two-ports", format!("{DESKTOP_HOST}:80:80")),
        ("port-junk", format!("{DESKTOP_HOST}:8445x")),
        ("too-long-300", format!("{label}.{label}.{label}.{label}.{label}.example")),
        ("ipv6-unclosed", "[::1".to_string()),
        ("ipv6-bare", "::1".to_string()),
        ("ipv6-zone", "[fe80::1%25eth0]".to_string()),
        ("ipv6-junk-after", "[::1]x".to_string()),
        ("ipv6-garbage", "[garbage]".to_string()),
        ("ipv6-empty-port", "[::1]:".to_string()),
        ("comma-list", format!("{DESKTOP_HOST},other.example")),
        ("backslash", format!("{DESKTOP_HOST}\\")),
        ("semicolon", format!("{DESKTOP_HOST};x")),
        ("asterisk", "*".to_string()),
        ("dot-only", ".".to_string()),
        ("non-ascii", "d\u{e9}sktop.example.com".to_string()),
        ("tab-inside", "desktop.\texample.com".to_string()),
    ]
}

fn host_case(name: String, target: &str, host_header: &str, cred: &Cred) -> Case {
    let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
    let (expect, tag) = model::expect(&ModelRequest {
        method: "GET",
        path: model::canonical_path(path, true),
        query,
        host: model::canonical_host(host_header),
        cred,
        body_len: 0,
        ci: false,
    });
    let headers: Vec<(&str, &str)> = cred.value().map(|v| ("Authorization", v)).into_iter().collect();
    let mut case = Case::new(name, Wire::Raw(h1("GET", target, Some(host_header), &headers, b"")), expect);
    if let Some(tag) = tag {
        case = case.tagged(tag);
    }
    case
}

/// An absolute-form request: the target's authority is THE host.
fn absolute_case(name: &str, target: &str, host_header: &str, cred: &Cred) -> Case {
    let after_scheme = target.split_once("://").map_or("", |(_, rest)| rest);
    let (authority, path_and_query) = match after_scheme.find('/') {
        Some(i) => (&after_scheme[..i], &after_scheme[i..]),
        None => (after_scheme, "/"),
    };
    let (path, query) = path_and_query.split_once('?').map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    let (expect, _) = model::expect(&ModelRequest {
        method: "GET",
        path: model::canonical_path(path, true),
        query,
        host: model::canonical_host(authority),
        cred,
        body_len: 0,
        ci: false,
    });
    let headers: Vec<(&str, &str)> = cred.value().map(|v| ("Authorization", v)).into_iter().collect();
    Case::new(format!("absolute-form/{name}"), Wire::Raw(h1("GET", target, Some(host_header), &headers, b"")), expect)
}

fn h2_case(name: &str, authority: &str, host_header: Option<&str>, cred: &Cred, expect: Expect) -> Case {
    let mut headers = Vec::new();
    if let Some(host) = host_header {
        headers.push(("host".to_string(), host.to_string()));
    }
    if let Some(value) = cred.value() {
        headers.push(("authorization".to_string(), value.to_string()));
    }
    Case::new(
        format!("h2-authority/{name}"),
        Wire::H2(H2Request { method: "GET".into(), uri: format!("http://{authority}/hx/h2-{name}"), headers, body: Vec::new() }),
        expect,
    )
}

fn h2_model(name: &str, authority: &str, cred: &Cred) -> Expect {
    model::expect(&ModelRequest {
        method: "GET",
        path: Ok(format!("/hx/h2-{name}")),
        query: None,
        host: model::canonical_host(authority),
        cred,
        body_len: 0,
        ci: false,
    })
    .0
}

pub fn cases() -> Vec<Case> {
    let basic = Cred::Basic(good_basic());
    let mut out = Vec::new();
    for (i, (name, host)) in valid_hosts().into_iter().enumerate() {
        out.push(host_case(format!("valid/{name}"), &format!("/hx/v{i}?c=anon"), &host, &Cred::None));
        out.push(host_case(format!("valid-authed/{name}"), &format!("/hx/v{i}?c=authed"), &host, &basic));
    }
    for (i, (name, host)) in invalid_hosts().into_iter().enumerate() {
        let case = host_case(format!("invalid/{name}"), &format!("/hx/i{i}"), &host, &basic);
        // RFC 3986 allows an empty port; the contract says "digits".
        out.push(if name.ends_with("empty-port") { case.tagged("ambiguous") } else { case });
    }
    // Two trailing dots: only one is removed; the result must not reach `open` while naming
    // the desktop host (refused, or routed to `hosted`).
    out.push(
        Case::new("ambiguous/two-trailing-dots", super::get("/hx/dots", "desktop.example.com..", None), Expect::status(400))
            .or(Expect::status(401))
            .tagged("ambiguous"),
    );
    // Duplicate and missing Host.
    for (name, hosts) in [
        ("same-twice", vec![DESKTOP_HOST, DESKTOP_HOST]),
        ("different", vec!["other.example", DESKTOP_HOST]),
        ("different-reversed", vec![DESKTOP_HOST, "other.example"]),
        ("second-empty", vec!["other.example", ""]),
        ("three", vec!["a.example", "b.example", "c.example"]),
    ] {
        let mut raw = format!("GET /hx/dup-{name} HTTP/1.1\r\n");
        for host in hosts {
            raw.push_str(&format!("Host: {host}\r\n"));
        }
        raw.push_str("Connection: close\r\n\r\n");
        out.push(Case::new(format!("duplicate-host/{name}"), Wire::Raw(raw.into_bytes()), Expect::status(400)));
    }
    out.push(Case::new(
        "duplicate-host/name-case",
        Wire::Raw(b"GET /hx/dup-case HTTP/1.1\r\nHost: other.example\r\nhost: desktop.example.com\r\nConnection: close\r\n\r\n".to_vec()),
        Expect::status(400),
    ));
    out.push(Case::new("missing-host/http11", Wire::Raw(h1("GET", "/public/no-host", None, &[], b"")), Expect::status(400)));
    // Absolute form.
    for (name, target, host) in [
        ("other-over-desktop", "http://other.example/hx/a1", DESKTOP_HOST),
        ("desktop-over-other", "http://desktop.example.com/hx/a2", "other.example"),
        ("canonicalised", "http://Desktop.Example.COM./hx/a3", "other.example"),
        ("port-kept", "http://other.example:8080/hx/a4", DESKTOP_HOST),
        ("https-scheme", "https://other.example/hx/a5", DESKTOP_HOST),
        ("no-path", "http://other.example", DESKTOP_HOST),
        ("ipv6", "http://[::1]:8080/hx/a9", DESKTOP_HOST),
        ("same-host", "http://desktop.example.com/hx/a10", DESKTOP_HOST),
        ("query", "http://other.example/hx/a11?x=1", DESKTOP_HOST),
    ] {
        out.push(absolute_case(name, target, host, &Cred::None));
        out.push(absolute_case(&format!("{name}-authed"), target, host, &basic));
    }
    for (name, target) in [
        ("userinfo", "http://user@desktop.example.com/hx/b1"),
        ("userinfo-password", "http://user:pw@other.example/hx/b2"),
        ("empty-authority", "http:///hx/b3"),
        ("bad-port", "http://other.example:99999/hx/b4"),
        ("percent-host", "http://desktop%2eexample.com/hx/b5"),
        ("above-root-path", "http://other.example/../finesse/api"),
    ] {
        out.push(absolute_case(name, target, EDGE_HOST, &basic));
    }
    // A network-path reference is a path, never an authority.
    out.push(host_case("network-path/desktop".into(), "//desktop.example.com/hx/n1", "other.example", &Cred::None));
    out.push(host_case("network-path/desktop-authed".into(), "//desktop.example.com/hx/n2", "other.example", &basic));
    // Authority-form outside CONNECT, and CONNECT itself: never forwarded.
    out.push(Case::new(
        "authority-form/get",
        Wire::Raw(h1("GET", "desktop.example.com:443", Some(DESKTOP_HOST), &[], b"")),
        Expect::status(400),
    ));
    out.push(Case::new(
        "authority-form/connect",
        Wire::Raw(h1("CONNECT", "desktop.example.com:443", Some(DESKTOP_HOST), &[], b"")),
        Expect::statuses(&[400, 403, 404, 405, 501]),
    ));
    // HTTP/2: `:authority` and `host` must agree.
    out.push(h2_case("differs", DESKTOP_HOST, Some("other.example"), &basic, Expect::status(400)));
    out.push(h2_case("differs-reversed", "other.example", Some(DESKTOP_HOST), &basic, Expect::status(400)));
    out.push(h2_case("differs-port", "other.example", Some("other.example:8443"), &basic, Expect::status(400)));
    out.push(h2_case("agrees", DESKTOP_HOST, Some(DESKTOP_HOST), &Cred::None, h2_model("agrees", DESKTOP_HOST, &Cred::None)));
    out.push(h2_case("agrees-authed", DESKTOP_HOST, Some(DESKTOP_HOST), &basic, h2_model("agrees-authed", DESKTOP_HOST, &basic)));
    out.push(h2_case("canonical", "Desktop.Example.COM.", None, &basic, h2_model("canonical", "Desktop.Example.COM.", &basic)));
    out.push(h2_case("port-kept", "desktop.example.com:8445", None, &basic, h2_model("port-kept", "desktop.example.com:8445", &basic)));
    out.push(h2_case("other", "other.example", None, &Cred::None, h2_model("other", "other.example", &Cred::None)));
    out.push(h2_case("userinfo", "user@desktop.example.com", None, &basic, Expect::status(400)));
    let mut two_hosts = h2_case("two-host-fields", DESKTOP_HOST, Some(DESKTOP_HOST), &basic, Expect::status(400));
    if let Wire::H2(request) = &mut two_hosts.wire {
        request.headers.push(("host".into(), "other.example".into()));
    }
    out.push(two_hosts);
    out
}

#[tokio::test]
async fn hostile_hosts() {
    let mut report = Report::new("hosts");
    run_tables(&mut report, &Options::default(), &cases()).await;
    report.finish();
}
