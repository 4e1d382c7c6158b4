//! The public-path cache (contract 5): keyed by canonical host + canonical path + query, so
//! one host's answer is never served for another; different spellings of one canonical
//! request share an entry; a `Vary`-ing answer is not served to a request with another value
//! of that header. Steps run in order.

use super::{Authz, Case, Expect, H2Request, HeaderWant, Options, Report, Want, Wire, h1, run_tables};

fn fetch(target: &str, host: &str) -> Wire {
    Wire::Raw(h1("GET", target, Some(host), &[], b""))
}

fn fetch_lang(target: &str, host: &str, language: Option<&str>) -> Wire {
    let headers: Vec<(&str, &str)> = language.map(|l| ("Accept-Language", l)).into_iter().collect();
    Wire::Raw(h1("GET", target, Some(host), &headers, b""))
}

/// Fetched from the upstream with this Host (not from the cache).
fn miss(target: &str, host: &str) -> Expect {
    Expect::status(200).response_header("x-portcullis-cache", HeaderWant::Absent).forwarded(Want::new(
        "tomcat",
        "GET",
        target,
        host,
        Authz::Absent,
    ))
}

fn hit() -> Expect {
    Expect::status(200).response_header("x-portcullis-cache", HeaderWant::Exactly("hit".into()))
}

pub fn cases() -> Vec<Case> {
    let asset = "/desktop/assets/k1.js";
    let vary = "/desktop/assets/vary/v1.js";
    vec![
        Case::new("host-key/a-first", fetch(asset, "a.example"), miss(asset, "a.example")),
        Case::new("host-key/b-not-served-a", fetch(asset, "b.example"), miss(asset, "b.example")),
        Case::new("host-key/a-again", fetch(asset, "a.example"), hit()),
        Case::new("host-key/b-again", fetch(asset, "b.example"), hit()),
        Case::new("host-key/a-canonical-spelling", fetch(asset, "A.EXAMPLE."), hit()),
        // The canonical host keeps the port, so the port is part of the key.
        Case::new("host-key/a-with-port", fetch(asset, "a.example:8080"), miss(asset, "a.example:8080")).tagged("ambiguous"),
        Case::new("host-key/desktop-host-route", fetch(asset, "desktop.example.com"), miss(asset, "desktop.example.com")),
        Case::new("path-key/decoded-spelling", fetch("/desktop/assets/%6b1.js", "a.example"), hit()),
        Case::new("path-key/double-slash", fetch("/desktop//assets/k1.js", "a.example"), hit()),
        Case::new("path-key/dot-segment", fetch("/desktop/assets/x/../k1.js", "a.example"), hit()),
        Case::new("query-key/new-query", fetch("/desktop/assets/k1.js?v=2", "a.example"), miss("/desktop/assets/k1.js?v=2", "a.example")),
        Case::new("query-key/same-query", fetch("/desktop/assets/k1.js?v=2", "a.example"), hit()),
        Case::new(
            "query-key/reordered-query",
            fetch("/desktop/assets/k1.js?b=1&a=2", "a.example"),
            miss("/desktop/assets/k1.js?b=1&a=2", "a.example"),
        ),
        Case::new(
            "absolute-form/target-authority",
            fetch("http://c.example/desktop/assets/k12.js", "a.example"),
            miss("/desktop/assets/k12.js", "c.example"),
        ),
        Case::new("absolute-form/same-authority-via-host", fetch("/desktop/assets/k12.js", "c.example"), hit()),
        Case::new(
            "absolute-form/host-not-poisoned",
            fetch("/desktop/assets/k12.js", "a.example"),
            miss("/desktop/assets/k12.js", "a.example"),
        ),
        Case::new(
            "h2/authority-key",
            Wire::H2(H2Request { method: "GET".into(), uri: format!("http://d.example{asset}"), headers: Vec::new(), body: Vec::new() }),
            miss(asset, "d.example"),
        ),
        Case::new("h2/authority-key-then-h1", fetch(asset, "d.example"), hit()),
        Case::new(
            "vary/en-first",
            fetch_lang(vary, "a.example", Some("en")),
            Expect::status(200).body_contains("0 en").forwarded(Want::new("tomcat", "GET", vary, "a.example", Authz::Absent)),
        ),
        Case::new(
            "vary/fr-not-served-en",
            fetch_lang(vary, "a.example", Some("fr")),
            Expect::status(200).body_contains("0 fr").body_lacks("0 en").forwarded(Want::new(
                "tomcat",
                "GET",
                vary,
                "a.example",
                Authz::Absent,
            )),
        ),
        Case::new(
            "vary/en-again",
            fetch_lang(vary, "a.example", Some("en")),
            Expect::status(200).body_contains("0 en").body_lacks("0 fr").forwarded(Want::new(
                "tomcat",
                "GET",
                vary,
                "a.example",
                Authz::Absent,
            )),
        )
        .or(Expect::status(200).body_contains("0 en").body_lacks("0 fr")),
        Case::new(
            "vary/absent-not-served-a-variant",
            fetch_lang(vary, "a.example", None),
            Expect::status(200).body_lacks("0 en").body_lacks("0 fr").forwarded(Want::new(
                "tomcat",
                "GET",
                vary,
                "a.example",
                Authz::Absent,
            )),
        ),
        Case::new(
            "vary/en-us-not-served-en",
            fetch_lang(vary, "a.example", Some("en-US")),
            Expect::status(200).body_contains("0 en-US").forwarded(Want::new("tomcat", "GET", vary, "a.example", Authz::Absent)),
        ),
        Case::new(
            "vary/other-host-same-value",
            fetch_lang(vary, "b.example", Some("en")),
            Expect::status(200).body_contains("0 en").forwarded(Want::new("tomcat", "GET", vary, "b.example", Authz::Absent)),
        ),
    ]
}

#[tokio::test]
async fn hostile_public_cache() {
    let mut report = Report::new("public cache");
    run_tables(&mut report, &Options::default(), &cases()).await;
    report.finish();
}
