//! Canonical path (contract 1): climbing out of public prefixes in every spelling, percent
//! decoding, dot-segments, repeated slashes, refused shapes, `;` parameters, case. The
//! expected outcome of every case comes from `model` (a reference written from the
//! contract), so the upstream must have seen exactly the model's canonical path — or nothing.

use super::model::{self, Cred, ModelRequest};
use super::{Case, DESKTOP_HOST, EDGE_HOST, H2Request, Options, Report, Wire, good_basic, h1, run_tables};

/// Where a climb starts: (name, prefix ending in `/`, segments below the root).
const BASES: &[(&str, &str, usize)] = &[
    ("assets", "/desktop/assets/", 2),
    ("assets-js", "/desktop/assets/js/", 3),
    ("public", "/public/", 1),
    ("root", "/", 0),
    ("favicon", "/favicon.ico/", 1),
    ("cuic", "/cuic/", 1),
];

/// Where a climb lands (relative to the root).
const TARGETS: &[(&str, &str)] = &[("finesse-api", "finesse/api/User"), ("cuic-report", "cuic/report"), ("desktop-home", "desktop/home")];

/// One climbing step in many spellings (each includes its separator).
const CLIMBS: &[(&str, &str)] = &[
    ("dotdot", "../"),
    ("enc", "%2e%2e/"),
    ("enc-upper", "%2E%2E/"),
    ("enc-mixed", "%2E%2e/"),
    ("dot-enc", ".%2e/"),
    ("enc-dot", "%2e./"),
    ("dot-enc-upper", ".%2E/"),
    ("dot-then-dotdot", "./../"),
    ("enc-dot-then-enc-dotdot", "%2e/%2e%2e/"),
    ("dotdot-double-slash", "..//"),
    ("double-slash-dotdot", "/../"),
    ("dotdot-semicolon", "..;/"),
    ("dotdot-semicolon-param", "..;jsessionid=x/"),
    ("dotdot-enc-semicolon", "..%3B/"),
    ("dotdot-enc-semicolon-lower", "..%3bx/"),
    ("enc-dotdot-semicolon", "%2e%2e;/"),
    ("dot-semicolon", ".;x/../"),
    ("empty-semicolon", ";/../"),
    ("dotdot-backslash", "..\\"),
    ("enc-dotdot-enc-slash", "%2e%2e%2f"),
    ("dotdot-enc-slash", "..%2F"),
    ("enc-dotdot-enc-backslash", "%2e%2e%5c"),
    ("dotdot-enc-backslash", "..%5C"),
    ("double-enc", "%252e%252e/"),
    ("dotdot-double-enc-slash", "..%252f"),
    ("dotdot-nul", "..%00/"),
    ("dotdot-tab", "..%09/"),
    ("overlong-utf8-slash", "..%c0%af"),
    ("triple-dot", ".../"),
    ("dotdot-space", "..%20/"),
];

/// Hand-written paths: (group, path). Queries are appended by the generator unless the
/// path has one.
const HANDWRITTEN: &[(&str, &str)] = &[
    // Unreserved characters decoded, other escapes upper-cased.
    ("decode", "/fin%65sse/api/x"),
    ("decode", "/%66inesse/api"),
    ("decode", "/%64esktop/assets/app.js"),
    ("decode", "/desktop/%61ssets/app.js"),
    ("decode", "/desktop/assets/%61pp.js"),
    ("decode", "/%63uic/report"),
    ("decode", "/public/%7e%7E"),
    ("decode", "/public/%2D%2E%5F%7E"),
    ("decode", "/public/%41%42%43"),
    ("decode", "/public/%30%39"),
    ("decode", "/public/%3c%3E"),
    ("decode", "/public/a%20b"),
    ("decode", "/public/%c3%a9"),
    ("decode", "/public/%3f%23"),
    ("decode", "/public/%25"),
    ("decode", "/public/%25zz"),
    ("decode", "/public/%3a%40%21"),
    ("decode", "/public/%5b%5d"),
    ("decode", "/public/%80%ff"),
    ("decode", "/public/%2b%26%3d"),
    ("decode", "/public/a:b@c!$&'()*+,="),
    ("decode", "/desktop/assets/%2e/app.js"),
    ("decode", "/desktop/assets/a%2eb.js"),
    ("decode", "/%2e/desktop/assets/x.js"),
    ("decode", "/desktop%2fassets/x.js"),
    // Dot-segments.
    ("dots", "/desktop/assets/."),
    ("dots", "/desktop/assets/.."),
    ("dots", "/desktop/assets/%2e"),
    ("dots", "/desktop/assets/%2e%2e"),
    ("dots", "/desktop/assets/x/.."),
    ("dots", "/desktop/assets/x/../.."),
    ("dots", "/desktop/assets/./app.js"),
    ("dots", "/./desktop/assets/app.js"),
    ("dots", "/desktop/./assets/app.js"),
    ("dots", "/desktop/assets/js/../app.js"),
    ("dots", "/desktop/assets/js/../../home"),
    ("dots", "/public/./x"),
    ("dots", "/public/../finesse/api"),
    ("dots", "/public/../desktop/assets/a.js"),
    ("dots", "/finesse/./api"),
    ("dots", "/finesse/api/../api2"),
    ("dots", "/finesse/.."),
    ("dots", "/finesse/../public/x"),
    ("dots", "/cuic/../public/x"),
    ("dots", "/cuic/./r"),
    ("dots", "/desktop/assets/..."),
    ("dots", "/desktop/assets/.../x"),
    ("dots", "/desktop/assets/..a"),
    ("dots", "/desktop/assets/a.."),
    ("dots", "/desktop/assets/.a"),
    ("dots", "/public/x/."),
    ("dots", "/public/x/./"),
    ("dots", "/favicon.ico/.."),
    ("dots", "/favicon.ico/."),
    ("dots", "/favicon.ico/../favicon.ico"),
    ("dots", "/desktop/assets/%2E%2E/%2E%2E/favicon.ico"),
    // Trailing dots on segments are ordinary characters.
    ("trailing-dot", "/finesse./api"),
    ("trailing-dot", "/desktop./assets/x.js"),
    ("trailing-dot", "/public/x."),
    ("trailing-dot", "/public/x.."),
    ("trailing-dot", "/desktop/assets/app.js."),
    ("trailing-dot", "/finesse/api."),
    ("trailing-dot", "/favicon.ico."),
    ("trailing-dot", "/favicon.ico%2e"),
    // Repeated slashes.
    ("slashes", "//finesse//api"),
    ("slashes", "//desktop/assets/a.js"),
    ("slashes", "/desktop//assets/a.js"),
    ("slashes", "/desktop/assets//a.js"),
    ("slashes", "///public///x"),
    ("slashes", "/public//../finesse/api"),
    ("slashes", "/finesse/api//"),
    ("slashes", "//"),
    ("slashes", "/desktop//assets//..//..//finesse/api"),
    ("slashes", "//cuic/x"),
    ("slashes", "/public/x//y"),
    ("slashes", "//favicon.ico"),
    // Above the root.
    ("above-root", "/.."),
    ("above-root", "/../"),
    ("above-root", "/../finesse/api"),
    ("above-root", "/%2e%2e/finesse"),
    ("above-root", "/./../x"),
    ("above-root", "/a/../../b"),
    ("above-root", "/public/../../x"),
    ("above-root", "/desktop/assets/../../../finesse"),
    ("above-root", "/%2e%2e"),
    ("above-root", "/.%2e/x"),
    ("above-root", "/..//x"),
    ("above-root", "//../x"),
    // Encoded slash / backslash, literal backslash.
    ("refuse-slash", "/public/a%2Fb"),
    ("refuse-slash", "/public/a%2fb"),
    ("refuse-slash", "/finesse%2Fapi"),
    ("refuse-slash", "/desktop/assets%2F..%2F..%2Ffinesse/api"),
    ("refuse-slash", "/public/%2F"),
    ("refuse-slash", "/public/a%5Cb"),
    ("refuse-slash", "/public/a%5cb"),
    ("refuse-slash", "/desktop/assets/..%5C..%5Cfinesse/api"),
    ("refuse-slash", "/public/a\\b"),
    ("refuse-slash", "/desktop/assets/..\\..\\finesse\\api"),
    ("refuse-slash", "/\\finesse/api"),
    ("refuse-slash", "/public/\\"),
    // `;` on empty or dot segments.
    ("refuse-semicolon", "/public/..;/finesse/api"),
    ("refuse-semicolon", "/desktop/assets/..;/..;/finesse/api"),
    ("refuse-semicolon", "/public/.;x/"),
    ("refuse-semicolon", "/public/.;/x"),
    ("refuse-semicolon", "/a/;/b"),
    ("refuse-semicolon", "/public/;x"),
    ("refuse-semicolon", "/;/finesse/api"),
    ("refuse-semicolon", "/public/%2e%2e;x/finesse"),
    ("refuse-semicolon", "/public/..%3B/finesse"),
    ("refuse-semicolon", "/public/..%3bx/finesse"),
    ("refuse-semicolon", "/public/%3b/x"),
    ("refuse-semicolon", "/public/.%3B/x"),
    ("refuse-semicolon", "/public/%2e;jsessionid=1/x"),
    ("refuse-semicolon", "/finesse/api/;"),
    ("refuse-semicolon", "/desktop/assets/;/../../finesse/api"),
    ("refuse-semicolon", "/desktop/assets/%2E%2E%3B/finesse/api"),
    // Encoded control bytes.
    ("refuse-control", "/public/%00"),
    ("refuse-control", "/public/a%00.js"),
    ("refuse-control", "/public/%01"),
    ("refuse-control", "/public/%09"),
    ("refuse-control", "/public/%0a"),
    ("refuse-control", "/public/%0D"),
    ("refuse-control", "/public/%1f"),
    ("refuse-control", "/public/%7f"),
    ("refuse-control", "/public/%7F"),
    ("refuse-control", "/desktop/assets/app.js%00.png"),
    // Double encoding.
    ("refuse-double", "/public/%252e"),
    ("refuse-double", "/public/%252E%252E/finesse"),
    ("refuse-double", "/public/%252f"),
    ("refuse-double", "/public/%2541"),
    ("refuse-double", "/desktop/assets/%252e%252e/%252e%252e/finesse/api"),
    ("refuse-double", "/public/%25%32%65"),
    // Malformed escapes.
    ("refuse-malformed", "/public/%zz"),
    ("refuse-malformed", "/public/%4"),
    ("refuse-malformed", "/public/%"),
    ("refuse-malformed", "/public/%%"),
    ("refuse-malformed", "/public/%g0"),
    ("refuse-malformed", "/public/%0g"),
    ("refuse-malformed", "/public/a%2"),
    ("refuse-malformed", "/public/%-1"),
    ("refuse-malformed", "/public/%2%65"),
    ("refuse-malformed", "/desktop/assets/%"),
    // `;` parameters on ordinary segments pass unchanged.
    ("params", "/finesse/api;jsessionid=1/x"),
    ("params", "/desktop/assets/app.js;v=1"),
    ("params", "/desktop/assets;x/app.js"),
    ("params", "/public/x;y"),
    ("params", "/public/x;y/z"),
    ("params", "/public/x%3By"),
    ("params", "/desktop/home;jsessionid=ABC"),
    ("params", "/public;x/../finesse/api"),
    // `;` on a route segment: forwarded to `open` as is, the shared upstream would strip the
    // parameter and serve finesse — the suite expects a refusal.
    ("params-route", "/finesse;x/api"),
    ("params-route", "/desktop;jsessionid=1/home"),
    ("params-route", "/%66inesse;/api"),
    ("params-route", "/desktop;x/assets/../home"),
    ("params-route", "/finesse%3Bx/api"),
    // Case-sensitive matching.
    ("case", "/FINESSE/api"),
    ("case", "/Finesse/api"),
    ("case", "/DESKTOP/ASSETS/a.js"),
    ("case", "/Desktop/home"),
    ("case", "/CUIC/report"),
    ("case", "/PUBLIC/x"),
    ("case", "/FAVICON.ICO"),
    ("case", "/desktop/ASSETS/a.js"),
    // The query is forwarded unchanged, whatever it holds.
    ("query", "/public/q1?a=%2e%2e/..&b=%2F"),
    ("query", "/public/q2?x=1&x=2"),
    ("query", "/public/q3?%zz"),
    ("query", "/public/q4?/../finesse/api"),
    ("query", "/desktop/assets/../../finesse/api?x=/desktop/assets/"),
    ("query", "/public/q5?a=%00"),
    ("query", "/public/q6?a=..%2F..%5C"),
    ("query", "/desktop/assets/q7.js?%2e%2e/%2e%2e/finesse"),
];

/// Request targets that are not origin-form paths.
const NOT_ORIGIN_FORM: &[(&str, &str, &str)] = &[
    ("relative", "GET", "finesse/api"),
    ("relative-dotdot", "GET", "../finesse/api"),
    ("asterisk-get", "GET", "*"),
    ("asterisk-options", "OPTIONS", "*"),
    ("dot", "GET", "."),
    ("enc-slash-first", "GET", "%2Ffinesse/api"),
    ("backslash-first", "GET", "\\finesse\\api"),
    ("query-only", "GET", "?x=1"),
];

fn split_query(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// A case for `path` (with its query): the model's outcome, the other slash/dot order as an
/// alternative where it differs. `cred` is sent as `Authorization`.
fn model_case(name: String, method: &str, raw_target: &str, wire_target: &str, cred: &Cred, ci: bool, h2: bool) -> Case {
    let (path, query) = split_query(raw_target);
    let host = model::canonical_host(EDGE_HOST);
    let outcome = |merge_first| {
        model::expect(&ModelRequest {
            method,
            path: model::canonical_path(path, merge_first),
            query,
            host: host.clone(),
            cred,
            body_len: 0,
            ci,
        })
    };
    let (expect, tag) = outcome(true);
    let (alternative, _) = outcome(false);
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(value) = cred.value() {
        headers.push(("Authorization", value));
    }
    let wire = if h2 {
        Wire::H2(H2Request {
            method: method.to_string(),
            uri: format!("http://{EDGE_HOST}{wire_target}"),
            headers: headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect(),
            body: Vec::new(),
        })
    } else {
        Wire::Raw(h1(method, wire_target, Some(EDGE_HOST), &headers, b""))
    };
    let ambiguous = model::canonical_path(path, true) != model::canonical_path(path, false);
    let mut case = Case::new(name, wire, expect.clone());
    if ambiguous && alternative.to_string() != expect.to_string() {
        case = case.or(alternative).tagged("slash/dot order");
    }
    if let Some(tag) = tag {
        case = case.tagged(tag);
    }
    case
}

/// The credential that would let the model's primary outcome reach an authenticated service.
fn cred_for(path: &str, ci: bool, token: &str) -> Cred {
    match model::canonical_path(split_query(path).0, true) {
        Ok(canonical) => match model::route(EDGE_HOST, &canonical, ci) {
            model::Svc::Cuic => Cred::Bearer(format!("Bearer {token}")),
            _ => Cred::Basic(good_basic()),
        },
        Err(_) => Cred::Basic(good_basic()),
    }
}

fn needs_credentials(path: &str, ci: bool) -> bool {
    match model::canonical_path(split_query(path).0, true) {
        Ok(canonical) => {
            let svc = model::route(EDGE_HOST, &canonical, ci);
            svc.needs_auth() && !model::is_public(svc, &canonical, ci)
        }
        Err(_) => true,
    }
}

fn with_id(path: &str, id: usize) -> String {
    if path.contains('?') { path.to_string() } else { format!("{path}?c={id}") }
}

pub fn cases() -> Vec<Case> {
    let token = super::jwt::good_token();
    let mut out = Vec::new();
    let mut id = 0;
    let mut next = || {
        id += 1;
        id
    };
    for (base_name, base, depth) in BASES {
        for (climb_name, climb) in CLIMBS {
            for (target_name, target) in TARGETS {
                // Every base to finesse; the two public bases to every target.
                if *target_name != "finesse-api" && !matches!(*base_name, "assets" | "public") {
                    continue;
                }
                if *depth > 0 {
                    let path = with_id(&format!("{base}{}{target}", climb.repeat(*depth)), next());
                    out.push(model_case(
                        format!("climb/{base_name}/{climb_name}/{target_name}"),
                        "GET",
                        &path,
                        &path,
                        &Cred::None,
                        false,
                        false,
                    ));
                    if *target_name == "finesse-api" && matches!(*base_name, "assets" | "public") {
                        let path = with_id(&format!("{base}{}{target}", climb.repeat(*depth)), next());
                        let cred = cred_for(&path, false, &token);
                        if needs_credentials(&path, false) {
                            out.push(model_case(
                                format!("climb-authed/{base_name}/{climb_name}/{target_name}"),
                                "GET",
                                &path,
                                &path,
                                &cred,
                                false,
                                false,
                            ));
                        }
                    }
                }
                if *target_name == "finesse-api" {
                    let path = with_id(&format!("{base}{}{target}", climb.repeat(depth + 1)), next());
                    out.push(model_case(format!("climb-over/{base_name}/{climb_name}"), "GET", &path, &path, &Cred::None, false, false));
                }
            }
        }
    }
    for (i, (group, path)) in HANDWRITTEN.iter().enumerate() {
        let target = with_id(path, next());
        let case = model_case(format!("{group}/{i}:{path}"), "GET", &target, &target, &Cred::None, false, false);
        // The contract names `%25` + two hex digits in the request; this one only becomes
        // `%252e` once unreserved escapes are decoded.
        out.push(if path.contains("%25%32") { case.tagged("ambiguous") } else { case });
        if needs_credentials(path, false) {
            let target = with_id(path, next());
            let cred = cred_for(path, false, &token);
            out.push(model_case(format!("{group}-authed/{i}:{path}"), "GET", &target, &target, &cred, false, false));
        }
    }
    // Absolute-form targets: the path part obeys the same rules.
    for (i, path) in [
        "/desktop/assets/../../finesse/api",
        "/%2e%2e/x",
        "//finesse//api",
        "/fin%65sse/x",
        "/public/a%2Fb",
        "/public/..;/finesse",
        "/desktop/assets/%2e%2e/%2e%2e/cuic/r",
        "/public/ok",
    ]
    .iter()
    .enumerate()
    {
        let target = with_id(path, next());
        out.push(model_case(
            format!("absolute-form/{i}:{path}"),
            "GET",
            &target,
            &format!("http://{EDGE_HOST}{target}"),
            &Cred::None,
            false,
            false,
        ));
    }
    // The same shapes over HTTP/2 (paths the h2 client can carry).
    for (i, path) in [
        "/desktop/assets/../../finesse/api",
        "/desktop/assets/%2e%2e/%2e%2e/finesse/api",
        "/desktop/assets/.%2e/.%2E/finesse/api",
        "/public/..;/finesse/api",
        "/public/%2e%2e%2ffinesse/api",
        "/public/a%5Cb",
        "//finesse//api",
        "/fin%65sse/x",
        "/../finesse",
        "/public/%00",
        "/public/%252e%252e/finesse",
        "/public/%zz",
        "/finesse;x/api",
        "/desktop//assets/a.js",
        "/public/%3c",
        "/FINESSE/api",
    ]
    .iter()
    .enumerate()
    {
        let target = with_id(path, next());
        out.push(model_case(format!("h2/{i}:{path}"), "GET", &target, &target, &Cred::None, false, true));
    }
    for (name, method, target) in NOT_ORIGIN_FORM {
        out.push(Case::new(
            format!("not-origin-form/{name}"),
            Wire::Raw(h1(method, target, Some(EDGE_HOST), &[], b"")),
            super::Expect::status(400),
        ));
    }
    // Host route + path tricks: the path rules hold on every route.
    for (i, path) in ["/x/../../finesse/api", "/desktop/assets/../home", "/%2e%2e/x", "/x;/../y", "/assets/%2e%2e%2f"].iter().enumerate() {
        let target = with_id(path, next());
        let (p, q) = split_query(&target);
        let host = model::canonical_host(DESKTOP_HOST);
        let (expect, _) = model::expect(&ModelRequest {
            method: "GET",
            path: model::canonical_path(p, true),
            query: q,
            host,
            cred: &Cred::None,
            body_len: 0,
            ci: false,
        });
        out.push(Case::new(format!("host-route/{i}:{path}"), Wire::Raw(h1("GET", &target, Some(DESKTOP_HOST), &[], b"")), expect));
    }
    out
}

/// `case_insensitive = true` on finesse: its routes and public paths match in any case.
pub fn case_insensitive_cases() -> Vec<Case> {
    let token = super::jwt::good_token();
    let mut out = Vec::new();
    let paths = [
        "/DESKTOP/ASSETS/a.js",
        "/Desktop/Assets/b.js",
        "/desktop/ASSETS/c.js",
        "/Finesse/api",
        "/FINESSE/API",
        "/fInEsSe/x",
        "/Desktop/Assets/../../FINESSE/api",
        "/DESKTOP/home",
        "/FAVICON.ICO",
        "/Favicon.ico/x",
        "/%46INESSE/api",
        "/desktop/assets/../FINESSE/x",
        "/CUIC/x",
        "/PUBLIC/x",
        "/public/../Finesse/api",
        "/Finesse;x/api",
    ];
    for (i, path) in paths.iter().enumerate() {
        let target = format!("{path}?ci={i}");
        out.push(model_case(format!("ci/{i}:{path}"), "GET", &target, &target, &Cred::None, true, false));
        if needs_credentials(path, true) {
            let target = format!("{path}?ci-authed={i}");
            let cred = cred_for(path, true, &token);
            out.push(model_case(format!("ci-authed/{i}:{path}"), "GET", &target, &target, &cred, true, false));
        }
    }
    out
}

#[tokio::test]
async fn hostile_paths() {
    let mut report = Report::new("paths");
    run_tables(&mut report, &Options::default(), &cases()).await;
    report.finish();
}

#[tokio::test]
async fn hostile_paths_case_insensitive() {
    let mut report = Report::new("paths (case_insensitive)");
    let options = Options { finesse: "case_insensitive = true".into(), ..Options::default() };
    run_tables(&mut report, &options, &case_insensitive_cases()).await;
    report.finish();
}
