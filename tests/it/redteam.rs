//! Red-team probes (helper-4): attacks on the canonical view, the framing guard and its
//! upgrade gate, WebSocket tunnels and the shield, each written as a failing-then-fixed test.

use std::time::Duration;

use crate::hostile::{Authz, Case, EDGE_HOST, Expect, Options, Report, Want, Wire, run_tables};

const H: &str = EDGE_HOST;

/// A naive HTTP/1.1 upstream (like an application server behind a status-reflecting
/// endpoint): `/fake101` answers `101 Switching Protocols` **without** switching — the
/// connection keeps being read as HTTP requests. Every request line is recorded.
async fn naive_upstream() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let line = head.lines().next().unwrap_or("").to_string();
                    record.lock().unwrap().push(line.clone());
                    let answer: &[u8] = if line.contains("/fake101") {
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// An upstream endpoint on the `auth = "none"` service answers 101 without switching
/// protocols (a status-reflecting or misbehaving endpoint). The edge must not turn that into
/// a raw tunnel into the shared upstream: the bytes that follow would be read there as HTTP
/// requests the edge never authenticated (here: `GET /finesse/api/User`, a protected path).
#[tokio::test]
async fn redteam_fake_101_does_not_open_a_tunnel_into_the_shared_upstream() {
    let (upstream, seen) = naive_upstream().await;
    let mut toml = String::new();
    for (name, auth) in [("finesse", "basic"), ("open", "none")] {
        toml.push_str(&format!(
            "[[service]]\nname = \"{name}\"\nauth = \"{auth}\"\n[service.health_check]\nenabled = false\n[[service.upstream]]\naddress = \"{upstream}\"\n"
        ));
    }
    toml.push_str("[[route]]\npath = \"/finesse/\"\nservice = \"finesse\"\n[[route]]\npath = \"/\"\nservice = \"open\"\n");
    let builder = crate::support::TestEdge::new();
    let users = builder.dir.path().join("users.toml");
    std::fs::write(&users, format!("[users]\nalice = \"{}\"\n", crate::support::argon2_hash("pw"))).unwrap();
    toml.push_str(&format!("[auth.basic]\nusers_file = \"{}\"\n", users.display()));
    let edge = builder.raw(&toml).start().await;
    let request = format!(
        "GET /public/fake101 HTTP/1.1\r\nHost: {H}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let smuggled = format!("GET /finesse/api/User HTTP/1.1\r\nHost: {H}\r\n\r\n");
    let outcome = crate::hostile::raw_exchange(edge.http, format!("{request}{smuggled}").as_bytes()).await;
    // A negative check: there is nothing to poll for, so give a smuggled request 300 ms to
    // reach the upstream before concluding it never will.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = seen.lock().unwrap().clone();
    let statuses: Vec<u16> = outcome.responses.iter().map(|r| r.status).collect();
    edge.stop().await;
    assert!(
        !lines.iter().any(|l| l.contains("/finesse/")),
        "an unauthenticated request reached the protected path through a tunnel: upstream saw {lines:?}, client got {statuses:?}"
    );
    assert!(!statuses.contains(&101), "the client was told the connection switched: {statuses:?}");
}

/// A request line with the method `PRI` (a valid token; hyper serves it as HTTP/1.1) must not
/// switch the framing guard off for the rest of the connection: the guard took any head
/// starting with `PRI ` for the HTTP/2 preface. Every later request then skipped the guard,
/// so CL+TE, bare-LF and empty-size-line chunking reached hyper, which repairs or accepts
/// them, instead of the 400 the contract promises.
pub fn pri_cases() -> Vec<Case> {
    let smuggled = format!("GET /public/pri-smuggled HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n");
    let cl_te = format!(
        "POST /public/pri-carrier HTTP/1.1\r\nHost: {H}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    let bare_lf =
        format!("POST /public/pri-lf HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\n\r\n{smuggled}");
    let pri = format!("PRI /public/pri HTTP/1.1\r\nHost: {H}\r\n\r\n");
    let get = format!("GET /public/pri-first HTTP/1.1\r\nHost: {H}\r\n\r\n");
    let pri_seen = || Want::new("tomcat", "PRI", "/public/pri", H, Authz::Any);
    let first_seen = || Want::new("tomcat", "GET", "/public/pri-first", H, Authz::Any);
    // The PRI request itself may be served or refused; what follows must get the guard's 400.
    let after_pri = |tail: &str, name: &str| {
        Case::new(
            format!("pri/{name}"),
            Wire::Raw(format!("{pri}{tail}").into_bytes()),
            Expect::sequence(&[&[200], &[400]]).forwarded(pri_seen()),
        )
        .or(Expect::sequence(&[&[400, 405, 501]]))
    };
    vec![
        after_pri(&cl_te, "then-cl-te"),
        after_pri(&bare_lf, "then-bare-lf-trailer"),
        Case::new(
            "pri/second-request-then-cl-te",
            Wire::Raw(format!("{get}{pri}{cl_te}").into_bytes()),
            Expect::sequence(&[&[200], &[200], &[400]]).forwarded(first_seen()).forwarded(pri_seen()),
        )
        .or(Expect::sequence(&[&[200], &[400, 405, 501]]).forwarded(first_seen())),
        Case::new(
            "pri/tls-http11-then-cl-te",
            Wire::Tls { alpn: vec![b"http/1.1".to_vec()], bytes: format!("{pri}{cl_te}").into_bytes() },
            Expect::sequence(&[&[200], &[400]]).forwarded(pri_seen()),
        )
        .or(Expect::sequence(&[&[400, 405, 501]])),
        // Control: HTTP/2 with prior knowledge still works on the plain listener.
        Case::new(
            "pri/h2-prior-knowledge-control",
            Wire::H2(crate::hostile::H2Request {
                method: "GET".into(),
                uri: format!("http://{H}/public/pri-h2"),
                headers: Vec::new(),
                body: Vec::new(),
            }),
            Expect::status(200).forwarded(Want::new("tomcat", "GET", "/public/pri-h2", H, Authz::Any)),
        ),
    ]
}

#[tokio::test]
async fn redteam_pri_method_does_not_switch_the_framing_guard_off() {
    let mut report = Report::new("redteam pri");
    run_tables(&mut report, &Options { https: true, ..Options::default() }, &pri_cases()).await;
    report.finish();
}

/// The shield's admission under a burst of *mixed* guesses from one source: edge access
/// tokens, refresh tokens (body and header), token requests, JWTs, WebSocket protocol
/// credentials and Basic passwords, all at once on parallel connections. However they are
/// mixed, at most `trigger` (5) of them are checked and refused (401); the rest get 418.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redteam_mixed_credential_burst_is_admitted_one_check_at_a_time() {
    let options = Options {
        shield: true,
        top: "[protection.categories.http-auth-failure]\ntrigger = 5\nwindow = \"60s\"\n".into(),
        ..Options::default()
    };
    let d = crate::hostile::Deployment::start(&options).await.unwrap();
    let addr = d.edge.http;
    let requests: Vec<Vec<u8>> = (0..42)
        .map(|i| {
            let h1 = crate::hostile::h1;
            match i % 7 {
                0 => h1("GET", &format!("/finesse/api/m{i}"), Some(H), &[("Authorization", &format!("Bearer pca_guess{i:040}"))], b""),
                1 => h1("POST", "/portcullis/token/refresh", Some(H), &[("Authorization", &format!("Bearer pcr_guess{i:040}"))], b""),
                2 => h1(
                    "POST",
                    "/portcullis/token/refresh",
                    Some(H),
                    &[("Content-Type", "application/json")],
                    format!("{{\"refresh_token\":\"pcr_body{i:040}\"}}").as_bytes(),
                ),
                3 => h1("POST", "/portcullis/token", Some(H), &[("Authorization", &crate::support::basic("alice", &format!("t{i}")))], b""),
                4 => h1(
                    "GET",
                    &format!("/cuic/m{i}"),
                    Some(H),
                    &[("Authorization", &format!("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig{i}"))],
                    b"",
                ),
                5 => {
                    let credential = format!("Authorization%3A%20Bearer%20pca_ws{i:040}");
                    let protocol = format!("xmpp, {credential}");
                    h1(
                        "GET",
                        &format!("/finesse/ws{i}"),
                        Some(H),
                        &[
                            ("Connection", "Upgrade"),
                            ("Upgrade", "websocket"),
                            ("Sec-WebSocket-Version", "13"),
                            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                            ("Sec-WebSocket-Protocol", &protocol),
                        ],
                        b"",
                    )
                }
                _ => h1(
                    "GET",
                    &format!("/finesse/api/m{i}"),
                    Some(H),
                    &[("Authorization", &crate::support::basic(&format!("agent{i}"), "x"))],
                    b"",
                ),
            }
        })
        .collect();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|bytes| {
            tokio::spawn(async move { crate::hostile::raw_exchange(addr, &bytes).await.responses.first().map_or(0, |r| r.status) })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap_or(0));
    }
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let seen: Vec<String> =
        d.upstreams().iter().flat_map(|(_, u)| u.seen.lock().unwrap().iter().map(|s| s.target.clone()).collect::<Vec<_>>()).collect();
    d.stop().await;
    assert!(statuses.iter().all(|s| matches!(s, 401 | 418)), "every guess is refused or blocked: {statuses:?}");
    assert!(refused <= 5, "{refused} guesses were checked (at most the trigger, 5): {statuses:?}");
    assert!(seen.is_empty(), "nothing reaches an upstream: {seen:?}");
}

/// An upstream that honours `Range` like Tomcat's default servlet: `206 Partial Content`
/// with the asked bytes, else `200` with the whole body (cacheable, `max-age=3600`).
async fn range_upstream(body: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end + 4);
                    let range = head.lines().find_map(|l| l.strip_prefix("range: bytes=")).and_then(|r| {
                        let (a, b) = r.split_once('-')?;
                        Some((a.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?))
                    });
                    let mut answer = match range {
                        Some((first, last)) if first <= last && last < body.len() => format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Type: application/javascript\r\nCache-Control: max-age=3600\r\nContent-Range: bytes {first}-{last}/{}\r\nContent-Length: {}\r\n\r\n",
                            body.len(),
                            last - first + 1
                        )
                        .into_bytes(),
                        _ => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\nCache-Control: max-age=3600\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .into_bytes(),
                    };
                    match range {
                        Some((first, last)) if first <= last && last < body.len() => answer.extend_from_slice(&body[first..=last]),
                        _ => answer.extend_from_slice(body),
                    }
                    if tcp.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The public-path cache must not keep a partial answer: a `Range` request on a public
/// asset (206, a few bytes) was stored under the key of the whole asset and served — status
/// 206 and the truncated body — to every later client for the response's lifetime (here an
/// hour): one unauthenticated request breaks the application's scripts for everybody.
#[tokio::test]
async fn redteam_a_range_request_does_not_poison_the_public_cache() {
    const SCRIPT: &[u8] = b"window.app = function () { return 'the whole desktop application'; };";
    let upstream = range_upstream(SCRIPT).await;
    let builder = crate::support::TestEdge::new();
    let users = builder.dir.path().join("users.toml");
    std::fs::write(&users, format!("[users]\nalice = \"{}\"\n", crate::support::argon2_hash("pw"))).unwrap();
    let toml = format!(
        "[[service]]\nname = \"finesse\"\nauth = \"basic\"\npublic_paths = [\"/desktop/assets/\"]\n[service.health_check]\nenabled = false\n[[service.upstream]]\naddress = \"{upstream}\"\n[[route]]\npath = \"/\"\nservice = \"finesse\"\n[auth.basic]\nusers_file = \"{}\"\n",
        users.display()
    );
    let edge = builder.raw(&toml).start().await;
    let fetch = |range: Option<&str>| {
        let mut headers = Vec::new();
        if let Some(range) = range {
            headers.push(("Range", range));
        }
        crate::hostile::h1("GET", "/desktop/assets/app.js", Some(H), &headers, b"")
    };
    let first = crate::hostile::raw_exchange(edge.http, &fetch(Some("bytes=0-9"))).await;
    let second = crate::hostile::raw_exchange(edge.http, &fetch(None)).await;
    edge.stop().await;
    let first = first.responses.first().map(|r| (r.status, r.body.len()));
    let second = second.responses.first().map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()));
    assert!(matches!(first, Some((200 | 206, _))), "the range request itself: {first:?}");
    assert_eq!(
        second,
        Some((200, String::from_utf8_lossy(SCRIPT).into_owned())),
        "a client asking for the whole asset must get all of it (the range request came first: {first:?})"
    );
}

/// Fields a client sets that tell an upstream another path, prefix, port or client address
/// than the edge decided on. `X-Original-URL` / `X-Rewrite-URL` replace the request path in
/// IIS URL Rewrite, Symfony and Zend (an unauthenticated request to `/public/x` is then
/// served `/finesse/api/User`); `X-Forwarded-Prefix` / `-Port` / `-Ssl` / `-Server` are read by
/// Spring's `ForwardedHeaderFilter` and Tomcat's `RemoteIpValve` for links and redirects —
/// and a public page built from them lands in the shared public cache; `True-Client-IP`,
/// `X-Client-IP` and friends are what IP allow-lists read. The edge replaces
/// `X-Forwarded-For/-Proto/-Host` and removes `X-Real-IP` because client values are never
/// trusted; these siblings must not pass either.
pub fn spoofed_field_cases() -> Vec<Case> {
    const SPOOFED: &[(&str, &str)] = &[
        ("X-Original-URL", "/finesse/api/User"),
        ("X-Rewrite-URL", "/finesse/api/User"),
        ("X-Forwarded-Prefix", "/attacker"),
        ("X-Forwarded-Port", "8443"),
        ("X-Forwarded-Ssl", "on"),
        ("X-Forwarded-Server", "evil.example"),
        ("X-Forwarded-Uri", "/finesse/api/User"),
        ("True-Client-IP", "10.0.0.1"),
        ("X-Client-IP", "10.0.0.1"),
        ("X-Cluster-Client-IP", "10.0.0.1"),
        ("Client-IP", "10.0.0.1"),
        ("CF-Connecting-IP", "10.0.0.1"),
        ("X-Originating-IP", "10.0.0.1"),
    ];
    let absent = |want: Want| SPOOFED.iter().fold(want, |want, (name, _)| want.header(name, crate::hostile::HeaderWant::Absent));
    let mut out = Vec::new();
    for (name, target, authorization) in [
        ("open", "/public/spoof", None),
        ("public-path", "/desktop/assets/spoof.js", None),
        ("authenticated", "/finesse/api/spoof", Some(crate::hostile::good_basic())),
    ] {
        let mut headers: Vec<(&str, &str)> = SPOOFED.to_vec();
        if let Some(value) = &authorization {
            headers.push(("Authorization", value));
        }
        let authz = match &authorization {
            Some(value) => Authz::Exactly(value.clone()),
            None => Authz::Absent,
        };
        out.push(Case::new(
            format!("spoofed-fields/{name}"),
            Wire::Raw(crate::hostile::h1("GET", target, Some(H), &headers, b"")),
            Expect::status(200).forwarded(absent(Want::new("tomcat", "GET", target, H, authz))),
        ));
    }
    out
}

#[tokio::test]
async fn redteam_client_forwarding_and_path_override_fields_never_reach_the_upstream() {
    let mut report = Report::new("redteam spoofed fields");
    run_tables(&mut report, &Options::default(), &spoofed_field_cases()).await;
    report.finish();
}

/// A WebSocket upgrade on a public path carrying a credential in `Sec-WebSocket-Protocol`:
/// the edge validates nothing there, so — like `Authorization` and `Cookie` — that
/// credential must not reach the upstream (it did, untouched: an unvalidated password handed
/// to the upstream, and a way to try credentials on it past the shield).
pub fn public_websocket_cases() -> Vec<Case> {
    let credential = format!("Authorization%3A%20{}", crate::hostile::good_basic().replace(' ', "%20").replace('=', "%3D"));
    let mut out = Vec::new();
    for (name, protocol, forwarded) in [
        ("credential-only", credential.clone(), None),
        ("with-subprotocol", format!("xmpp, {credential}"), Some("xmpp")),
        ("malformed-credential", "xmpp, Authorization%3A%20Basic%20%ZZ".to_string(), Some("xmpp")),
    ] {
        let headers = [
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", protocol.as_str()),
        ];
        let target = format!("/desktop/assets/ws-{name}");
        let protocol_want = match forwarded {
            Some(p) => crate::hostile::HeaderWant::Exactly(p.to_string()),
            None => crate::hostile::HeaderWant::Absent,
        };
        // The recording upstream does not switch: the client gets its answer, not a 101.
        out.push(
            Case::new(
                format!("public-websocket/{name}"),
                Wire::Raw(crate::hostile::h1("GET", &target, Some(H), &headers, b"")),
                Expect::statuses(&[200, 400, 426, 502]).forwarded(
                    Want::new("tomcat", "GET", &target, H, Authz::Absent).header("sec-websocket-protocol", protocol_want.clone()),
                ),
            )
            .or(Expect::status(400)),
        );
    }
    out
}

#[tokio::test]
async fn redteam_a_public_websocket_forwards_no_protocol_credential() {
    let mut report = Report::new("redteam public websocket");
    run_tables(&mut report, &Options::default(), &public_websocket_cases()).await;
    report.finish();
}
