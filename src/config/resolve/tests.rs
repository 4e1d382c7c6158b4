//! Tests of configuration resolution: one per key family, and the error list.

use std::path::Path;
use std::time::Duration;

use super::super::*;
use super::protection::valid_table_name;
use super::services::valid_host_port;
use super::valid_host_name;

const MINIMAL: &str = r#"
[server]
name = "edge.test"
state_dir = "state"
log_dir = "logs"
[[listener]]
name = "http"
address = "127.0.0.1:8080"
[[service]]
name = "app"
[[service.upstream]]
address = "127.0.0.1:9000"
[[route]]
path = "/"
service = "app"
"#;

fn resolve_ok(text: &str) -> Config {
    match Config::from_toml_str(text, Path::new("/etc/portcullis")) {
        Ok(config) => config,
        Err(errors) => panic!("unexpected errors:\n{errors}"),
    }
}

fn errors_of(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, Path::new("/etc/portcullis")) {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn minimal_file_resolves_with_defaults() {
    let c = resolve_ok(MINIMAL);
    assert_eq!(c.server.state_dir, Path::new("/etc/portcullis/state"));
    assert_eq!(c.server.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
    assert_eq!(c.server.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    let ServiceKind::Proxy(pool) = &c.services[0].kind else { panic!("proxy service") };
    assert_eq!(pool.servers[0], UpstreamConfig { address: "127.0.0.1:9000".into(), weight: 1, max_conns: 0 });
    assert_eq!(pool.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert!(pool.health_check.is_some(), "active TCP health checks are on by default");
    assert_eq!(c.services[0].auth, AuthMode::None);
    assert_eq!(
        c.cluster,
        ClusterConfig { store: StoreKind::Embedded, peer: "edge.test".into(), heartbeat: Duration::from_secs(2), redis_ca: None }
    );
    assert_eq!((c.protection.blocked_status, c.protection.ipv6_prefix), (418, 64));
    let auth = &c.protection.categories[&Category::HttpAuthFailure];
    assert_eq!((auth.enabled, auth.trigger, auth.window, auth.ban), (true, 5, Duration::from_secs(30), Duration::from_secs(1800)));
    assert!(!c.protection.categories[&Category::HttpResourceAccessFailure].enabled, "off by default (NAT false positives)");
    assert_eq!(c.protection.categories.len(), 7);
}

#[test]
fn example_file_in_the_repository_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/portcullis.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.len(), 3);
    assert_eq!(c.listeners[2].redirect_to, Some(RedirectTarget { listener: "https".into(), port: 8445 }));
    assert_eq!(c.listeners[1].address, "[::]:8445".parse().unwrap());
    assert_eq!(c.services[0].public_paths, vec![PublicPath::Prefix("/desktop/assets/".into()), PublicPath::Exact("/favicon.ico".into())]);
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml");
    Config::load(&quickstart).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_error_is_reported_at_once_with_path_and_hint() {
    let text = r#"
[server]
name = "bad name!"
idle_timeout = "soon"
[[listener]]
name = "a"
address = "0.0.0.0"
[[listener]]
name = "a"
address = "127.0.0.1:80"
redirect_to = "nowhere"
[[service]]
name = "app"
auth = "magic"
public_paths = ["assets/"]
[[service.upstream]]
address = "no-port"
weight = 5000
[[route]]
path = "x"
service = "ghost"
[cluster]
store = "etcd"
"#;
    let errors = errors_of(text);
    let expected = [
        "server.name: \"bad name!\" is not a host name; use letters, digits, '-' and '.', e.g. \"edge1.example.com\"",
        "server.idle_timeout: \"soon\" is not a duration (expected number at 0); write a duration such as \"30s\", \"15m\" or \"8h\"",
        "listener[0].address: \"0.0.0.0\" is not an IP:port address; write \"0.0.0.0:8445\" (IPv4) or \"[::]:8445\" (IPv6)",
        "listener[1].name: \"a\" is used twice; give each listener a unique name",
        "listener[0].redirect_to: no listener named \"nowhere\"; name a [[listener]] with tls = true",
        "service[0].auth: \"magic\" is not an auth mode; use one of none, basic, jwt, basic_or_jwt",
        "service[0].public_paths[0]: \"assets/\" is not a path; write a prefix \"/assets/\" or an exact path \"=/favicon.ico\"",
        "service[0].upstream[0].address: \"no-port\" is not host:port; write \"finesse-a.corp.example:8082\" or \"10.0.0.5:8082\"",
        "service[0].upstream[0].weight: 5000 is out of range; use a value from 0 to 1000",
        "route[0].path: \"x\" does not start with '/'; write a path prefix such as \"/finesse/\"",
        "route[0].service: no service named \"ghost\"; name a [[service]] defined in this file",
        "cluster.store: \"etcd\" is not a store; use \"embedded\" or \"redis\"",
    ];
    for want in expected {
        assert!(errors.iter().any(|e| e == want), "missing error:\n  {want}\ngot:\n  {}", errors.join("\n  "));
    }
    assert_eq!(errors.len(), expected.len(), "{}", errors.join("\n"));
}

#[test]
fn unknown_keys_and_sections_are_errors_with_their_section() {
    let text = format!("{MINIMAL}\n[serverz]\nx = 1\n");
    assert_eq!(
        errors_of(&text),
        vec![
            "serverz: unknown section; known sections: server, listener, tls, admin, service, route, auth, rate_control, protection, maintenance, cluster, sip, federation, firewall, logging"
        ]
    );
    let text = MINIMAL.replace("address = \"127.0.0.1:9000\"", "address = \"127.0.0.1:9000\"\nmax_con = 5");
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("service[0].upstream[0].max_con: unknown field `max_con`"), "{}", errors[0]);
}

/// The one error of `text`, which must be exactly one.
fn only_error(text: &str) -> String {
    let errors = errors_of(text);
    assert_eq!(errors.len(), 1, "{}", errors.join("\n"));
    errors.into_iter().next().unwrap_or_default()
}

#[test]
fn type_errors_and_unknown_keys_name_the_full_key_path() {
    const HINT: &str = "; fix the key or value; see docs/configuration.md";
    let upstream = MINIMAL.replace("address = \"127.0.0.1:9000\"", "address = \"127.0.0.1:9000\"\nweight = \"x\"");
    assert_eq!(only_error(&upstream), format!("service[0].upstream[0].weight: invalid type: string \"x\", expected u64{HINT}"));
    let second = format!("{MINIMAL}[[service.upstream]]\naddress = \"127.0.0.1:9001\"\nmax_conns = -1\n");
    assert!(only_error(&second).starts_with("service[0].upstream[1].max_conns: invalid value: integer `-1`"), "{second}");
    let server = MINIMAL.replace("log_dir = \"logs\"", "log_dir = \"logs\"\nmax_headers = \"x\"");
    assert_eq!(only_error(&server), format!("server.max_headers: invalid type: string \"x\", expected u64{HINT}"));
    let category = format!("{MINIMAL}[protection.categories.http-auth-failure]\ntrigger = \"x\"\n");
    assert_eq!(
        only_error(&category),
        format!("protection.categories.http-auth-failure.trigger: invalid type: string \"x\", expected u64{HINT}")
    );
    let exemption = format!("{MINIMAL}[[protection.exemption]]\naddress = \"10.0.0.0\"\ncategories = [\"http-auth-failure\", 5]\n");
    assert!(only_error(&exemption).starts_with("protection.exemption[0].categories[1]: invalid type: integer `5`"), "{exemption}");
    let health = MINIMAL.replace("name = \"app\"", "name = \"app\"\n[service.health_check]\nfails = true");
    assert!(only_error(&health).starts_with("service[0].health_check.fails: invalid type: boolean `true`"), "{health}");
    let jwt = format!("{MINIMAL}[auth.jwt]\nsecret = \"{}\"\nissuerr = \"x\"\n", "s".repeat(32));
    assert!(only_error(&jwt).starts_with("auth.jwt.issuerr: unknown field `issuerr`"), "{jwt}");
    let listener = MINIMAL.replace("address = \"127.0.0.1:8080\"", "address = \"127.0.0.1:8080\"\ntls = \"yes\"");
    assert_eq!(only_error(&listener), format!("listener[0].tls: invalid type: string \"yes\", expected a boolean{HINT}"));
    let public = MINIMAL.replace("name = \"app\"", "name = \"app\"\npublic_paths = \"/assets/\"");
    assert!(only_error(&public).starts_with("service[0].public_paths: invalid type: string \"/assets/\""), "{public}");
    // A whole section of the wrong type is named by its own path.
    let cluster = format!("cluster = 5\n{MINIMAL}");
    assert!(only_error(&cluster).starts_with("cluster: invalid type: integer `5`"), "{cluster}");
}

#[test]
fn a_section_that_fails_to_parse_adds_no_false_missing_name() {
    let server = MINIMAL.replace("log_dir = \"logs\"", "log_dir = \"logs\"\nmax_headers = \"x\"");
    assert!(only_error(&server).starts_with("server.max_headers: "));
    let unknown = MINIMAL.replace("log_dir = \"logs\"", "log_dir = \"logs\"\nlogdir = \"x\"");
    assert!(only_error(&unknown).starts_with("server.logdir: unknown field `logdir`"));
    // Without a name and with a broken key: only the broken key (the name is not known).
    let nameless = MINIMAL.replace("name = \"edge.test\"\n", "").replace("log_dir = \"logs\"", "log_dir = 5");
    assert!(only_error(&nameless).starts_with("server.log_dir: invalid type: integer `5`"));
    // A [server] that parsed without a name, and no [server] at all: the name is missing.
    const MISSING: &str = "server.name: missing; set the edge's host name, e.g. name = \"edge1.example.com\"";
    assert_eq!(only_error(&MINIMAL.replace("name = \"edge.test\"\n", "")), MISSING);
    let absent = MINIMAL.replace("[server]\nname = \"edge.test\"\nstate_dir = \"state\"\nlog_dir = \"logs\"\n", "");
    assert_eq!(only_error(&absent), MISSING);
}

#[test]
fn websocket_auth_is_on_unless_turned_off() {
    let c = resolve_ok(MINIMAL);
    assert!(c.services[0].websocket_auth, "on by default (DESIGN §2)");
    let off = resolve_ok(&MINIMAL.replace("name = \"app\"", "name = \"app\"\nwebsocket_auth = false"));
    assert!(!off.services[0].websocket_auth);
    let on = resolve_ok(&MINIMAL.replace("name = \"app\"", "name = \"app\"\nwebsocket_auth = true"));
    assert!(on.services[0].websocket_auth);
}

#[test]
fn toml_syntax_errors_name_the_line() {
    let errors = errors_of("[server]\nname = \"a\"\nstate_dir = /var\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("invalid TOML (line 3):"), "{}", errors[0]);
}

#[test]
fn missing_essentials_are_named() {
    let errors = errors_of("[server]\nstate_dir = \"x\"\n");
    assert!(
        errors.contains(&"server.name: missing; set the edge's host name, e.g. name = \"edge1.example.com\"".to_string()),
        "{errors:?}"
    );
    assert!(errors.contains(&"listener: no listener configured; add a [[listener]] with name, address and tls".to_string()), "{errors:?}");
}

#[test]
fn tls_files_must_exist_and_admin_must_stay_on_loopback_without_tls() {
    let text = format!("{MINIMAL}\n[tls]\ncert = \"/nonexistent/edge.pem\"\n[admin]\naddress = \"0.0.0.0:9443\"\ntoken = \"short\"\n");
    let errors = errors_of(&text);
    assert!(
        errors.contains(&"tls.cert: \"/nonexistent/edge.pem\" not found; set an existing PEM certificate chain path".to_string()),
        "{errors:?}"
    );
    assert!(errors.contains(&"tls.key: missing; set key to the PEM private key of tls.cert".to_string()), "{errors:?}");
    assert!(
        errors.contains(
            &"admin.address: 0.0.0.0:9443 is not loopback and admin.tls is off; bind the admin API to 127.0.0.1 or set admin.tls = true"
                .to_string()
        ),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"admin.token: shorter than 8 characters; use a long random token (e.g. `openssl rand -hex 24`)".to_string()),
        "{errors:?}"
    );
}

#[test]
fn auth_modes_need_their_sections() {
    let text = MINIMAL.replace("name = \"app\"", "name = \"app\"\nauth = \"basic_or_jwt\"");
    let errors = errors_of(&text);
    assert_eq!(
        errors,
        vec![
            "service[0].auth: basic auth needs [auth.basic]; add [auth.basic] with validate_url or users_file",
            "service[0].auth: jwt auth needs [auth.jwt]; add [auth.jwt] with secret or jwks_url",
        ]
    );
    let text = format!("{MINIMAL}\n[auth.jwt]\nsecret = \"tiny\"\njwks_url = \"ftp://x\"\n");
    let errors = errors_of(&text);
    assert!(errors.contains(&"auth.jwt.secret: shorter than 32 bytes; use a random secret of at least 32 bytes".to_string()), "{errors:?}");
    assert!(
        errors.contains(
            &"auth.jwt.jwks_url: \"ftp://x\" is not an http(s) URL; write an absolute URL such as \"https://ids.example.com/keys\""
                .to_string()
        ),
        "{errors:?}"
    );
}

#[test]
fn pools_need_a_primary_and_static_services_a_directory() {
    let text = MINIMAL.replace("address = \"127.0.0.1:9000\"", "address = \"127.0.0.1:9000\"\nweight = 0");
    assert_eq!(
        errors_of(&text),
        vec!["service[0].upstream: every server has weight 0 (backup); give at least one server a weight of 1 or more"]
    );
    let text = MINIMAL.replace("[[service.upstream]]\naddress = \"127.0.0.1:9000\"", "static_dir = \"/nonexistent-www\"");
    assert_eq!(errors_of(&text), vec!["service[0].static_dir: \"/nonexistent-www\" is not a directory; set an existing directory"]);
}

#[test]
fn protection_categories_and_exemptions_are_checked() {
    let text = format!(
        "{MINIMAL}\n[protection]\nblocked_status = 200\n[protection.categories.sip-everything]\ntrigger = 1\n[protection.categories.http-auth-failure]\ntrigger = 0\n[[protection.exemption]]\naddress = \"10.0.0.0\"\nprefix_length = 33\ncategories = [\"nope\"]\n"
    );
    let errors = errors_of(&text);
    assert!(errors.contains(&"protection.blocked_status: 200 is out of range; use a value from 400 to 599".to_string()), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("protection.categories.sip-everything: unknown category")), "{errors:?}");
    assert!(
        errors.contains(&"protection.categories.http-auth-failure.trigger: 0 is out of range; use a value from 1 to 100000".to_string()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"protection.exemption[0].prefix_length: 33 is out of range; use a value from 0 to 32".to_string()),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.starts_with("protection.exemption[0].categories[0]: \"nope\" is not a category")), "{errors:?}");
}

#[test]
fn host_names_and_host_ports_are_validated() {
    assert!(valid_host_name("edge1.example.com"));
    assert!(!valid_host_name("-bad.example"));
    assert!(!valid_host_name("a..b"));
    assert!(valid_host_port("finesse-a.corp.example:8082"));
    assert!(valid_host_port("[::1]:80"));
    assert!(!valid_host_port("host:0"));
    assert!(!valid_host_port(":80"));
}

#[test]
fn nftables_table_names_are_restricted_to_safe_identifiers() {
    assert!(valid_table_name("portcullis"));
    assert!(valid_table_name("edge_1"));
    for bad in ["", "a b", "x;flush ruleset", "t{", &"a".repeat(33)] {
        assert!(!valid_table_name(bad), "{bad:?}");
    }
}

#[test]
fn the_firewall_is_off_unless_enabled_and_takes_its_defaults() {
    assert_eq!(resolve_ok(MINIMAL).firewall, None);
    assert_eq!(resolve_ok(&format!("{MINIMAL}[firewall]\ninterface = \"eth1\"\n")).firewall, None, "enabled defaults to false");
    let on = resolve_ok(&format!(
        "{MINIMAL}[firewall]\nenabled = true\ninterface = \"eth1\"\nload_balancers = [\"10.0.0.10\", \"2001:db8::/64\"]\n"
    ))
    .firewall
    .unwrap();
    assert_eq!((on.interface.as_str(), on.table.as_str()), ("eth1", "portcullis"));
    assert_eq!(
        (on.new_connections.to_string(), on.burst, on.global_new_connections.to_string()),
        ("50/second".into(), 100, "5000/second".into())
    );
    assert_eq!(on.load_balancers, vec![("10.0.0.10".parse().unwrap(), 32), ("2001:db8::".parse().unwrap(), 64)]);
    assert!(on.hardening && !on.load_balancers_only);
}

#[test]
fn firewall_mistakes_are_errors_with_their_key() {
    let text = format!(
        "{MINIMAL}[protection]\nnftables_set = true\nnftables_table = \"other\"\n\
         [firewall]\nenabled = true\ninterface = \"eth 1; drop\"\ntable = \"a-b\"\nnew_connections = \"50 per second\"\n\
         global_new_connections = \"0/second\"\nburst = 0\nexempt = [\"10.0.0.1/24\", \"nowhere\"]\nload_balancers_only = true\n"
    );
    let errors = errors_of(&text);
    for key in [
        "firewall.interface: \"eth 1; drop\" is not an interface name",
        "firewall.table: \"a-b\" is not a usable table name",
        "protection.nftables_table: \"other\" differs from firewall.table",
        "firewall.new_connections: \"50 per second\" is not a rate",
        "firewall.global_new_connections: \"0/second\" is not a rate",
        "firewall.burst: 0 is out of range",
        "firewall.exempt[0]: \"10.0.0.1/24\" is not an address or a network",
        "firewall.exempt[1]: \"nowhere\" is not an address or a network",
        "firewall.load_balancers_only: true without load_balancers would admit no one",
    ] {
        assert!(errors.iter().any(|e| e.starts_with(key)), "missing {key:?} in\n{}", errors.join("\n"));
    }
    assert_eq!(errors.len(), 9, "{}", errors.join("\n"));
    let missing = errors_of(&format!("{MINIMAL}[firewall]\nenabled = true\n"));
    assert!(missing[0].starts_with("firewall.interface: missing"), "{missing:?}");
}
