//! The admin API against its OpenAPI document (`GET /openapi.json`): every documented
//! operation exists and needs the token, every path's `405` names exactly the documented
//! methods, and schemathesis (from PyPI) fuzzes every operation of a live edge checking
//! statuses, content types, response schemas, rejection of invalid input, unsupported methods
//! and auth. Schemathesis is found through `PORTCULLIS_SCHEMATHESIS` or `PATH`; without it the
//! fuzzing part is skipped with a message (`PORTCULLIS_REQUIRE_SCHEMATHESIS=1`, set by
//! `.ci/run`, fails instead).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;

use crate::support::client::h1;
use crate::support::{ADMIN_TOKEN, RunningEdge, TestEdge, Upstream, argon2_hash};

async fn edge() -> (RunningEdge, Upstream) {
    let up = Upstream::start("app").await;
    let builder = TestEdge::new().https();
    let users = builder.dir.path().join("users.toml");
    std::fs::write(&users, format!("[users]\nalice = \"{}\"\n", argon2_hash("pw"))).unwrap();
    let edge = builder
        .proxy("app", "/", &[(up.addr, 1, 0)], "auth = \"basic\"")
        .raw(&format!("[auth.basic]\nusers_file = \"{}\"\n", users.display()))
        .start()
        .await;
    (edge, up)
}

fn documented() -> Vec<(String, BTreeSet<String>, bool)> {
    let doc: serde_json::Value = serde_json::from_str(portcullis::admin::OPENAPI).unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, ops)| {
            let ops = ops.as_object().unwrap();
            let public = ops.values().all(|op| op.get("security").is_some_and(|s| s.as_array().is_some_and(|a| a.is_empty())));
            (path.clone(), ops.keys().map(|m| m.to_uppercase()).collect(), public)
        })
        .collect()
}

#[tokio::test]
async fn the_document_and_the_router_agree_on_every_route() {
    let (edge, _up) = edge().await;
    let served = h1(edge.admin, "GET", "/openapi.json", &[], Bytes::new()).await;
    assert_eq!(served.status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&served.body).unwrap()["openapi"], "3.0.3");
    let routes = documented();
    assert!(routes.len() >= 15, "{routes:?}");
    for (path, methods, public) in &routes {
        for method in methods {
            let reply = h1(edge.admin, method, path, &[], Bytes::new()).await;
            if *public {
                assert_eq!(reply.status, 200, "{method} {path} is public");
            } else {
                assert_eq!(reply.status, 401, "{method} {path} exists and needs the token");
            }
        }
        let wrong = h1(edge.admin, "PATCH", path, &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))], Bytes::new()).await;
        assert_eq!(wrong.status, 405, "PATCH {path}");
        let allow: BTreeSet<String> = wrong.headers["allow"].to_str().unwrap().split(',').map(|m| m.trim().to_string()).collect();
        assert_eq!(&allow, methods, "{path}: Allow header vs document");
    }
    let unknown = h1(edge.admin, "GET", "/api/v1/nope", &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))], Bytes::new()).await;
    assert_eq!(unknown.status, 404);
    edge.stop().await;
}

fn schemathesis() -> Option<String> {
    if let Some(path) = std::env::var_os("PORTCULLIS_SCHEMATHESIS") {
        return Some(path.to_string_lossy().into_owned());
    }
    let on_path = std::process::Command::new("schemathesis").arg("--version").output().is_ok_and(|o| o.status.success());
    if on_path {
        return Some("schemathesis".into());
    }
    crate::support::external::missing("SCHEMATHESIS", "schemathesis not found (pip install schemathesis, or set PORTCULLIS_SCHEMATHESIS)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_any_operation() {
    let Some(tool) = schemathesis() else { return };
    let (edge, _up) = edge().await;
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/schemathesis.toml");
    let url = format!("http://{}/openapi.json", edge.admin);
    // More examples for a deeper run by hand (`PORTCULLIS_SCHEMATHESIS_EXAMPLES=500`).
    let examples = std::env::var("PORTCULLIS_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(tool)
            .args(["--no-color", "--config-file", config, "run", &url])
            .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args(["--max-examples", &examples, "--phases", "examples,coverage,fuzzing", "-w", "1"])
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(900), run).await.expect("schemathesis finished in time").unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "schemathesis found problems:\n{report}");
    assert!(report.contains("passed"), "{report}");
    assert!(!report.contains("Selected: 0"), "{report}");
    edge.stop().await;
}
