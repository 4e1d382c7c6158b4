//! Public paths served from the edge cache, remembered 404s, and CORS preflights answered
//! at the edge — unauthenticated traffic that reaches the upstream at most once.

use bytes::Bytes;

use crate::support::client::h1;
use crate::support::{TestEdge, Upstream};

async fn protected_edge(up: &Upstream) -> crate::support::RunningEdge {
    TestEdge::new()
        .proxy(
            "desk",
            "/",
            &[(up.addr, 1, 0)],
            "auth = \"basic\"\npublic_paths = [\"/assets/\", \"/status/\"]\n[service.health_check]\nenabled = false",
        )
        .raw("[auth.basic]\nvalidate_url = \"http://127.0.0.1:9/auth\"\n")
        .start()
        .await
}

#[tokio::test]
async fn public_paths_are_fetched_once_and_served_with_the_upstream_stopped() {
    let up = Upstream::start("desk").await;
    let edge = protected_edge(&up).await;
    let first = h1(edge.http, "GET", "/assets/app.js", &[], Bytes::new()).await;
    assert_eq!((first.status, first.body.as_str()), (200, "desk 0"));
    assert_eq!(up.hits(), 1);
    up.stop();
    for _ in 0..3 {
        let again = h1(edge.http, "GET", "/assets/app.js", &[], Bytes::new()).await;
        assert_eq!((again.status, again.body.as_str()), (200, "desk 0"));
        assert_eq!(again.headers["x-portcullis-cache"], "hit");
    }
    let head = h1(edge.http, "HEAD", "/assets/app.js", &[], Bytes::new()).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(up.hits(), 1, "served from the edge");
    // A path that was never fetched cannot be served while the upstream is down.
    assert_eq!(h1(edge.http, "GET", "/assets/other.js", &[], Bytes::new()).await.status, 502);
    edge.stop().await;
}

#[tokio::test]
async fn an_upstream_404_on_a_public_prefix_is_answered_at_the_edge_afterwards() {
    let up = Upstream::start("desk").await;
    let edge = protected_edge(&up).await;
    assert_eq!(h1(edge.http, "GET", "/status/404", &[], Bytes::new()).await.status, 404);
    assert_eq!(h1(edge.http, "GET", "/status/404", &[], Bytes::new()).await.status, 404);
    assert_eq!(up.hits(), 1, "the second probe never reached the upstream");
    // Errors are not cached.
    assert_eq!(h1(edge.http, "GET", "/status/503", &[], Bytes::new()).await.status, 503);
    assert_eq!(h1(edge.http, "GET", "/status/503", &[], Bytes::new()).await.status, 503);
    assert_eq!(up.hits(), 3);
    // An unauthenticated request off the public paths never reaches the upstream.
    assert_eq!(h1(edge.http, "GET", "/desktop/private", &[], Bytes::new()).await.status, 401);
    assert_eq!(up.hits(), 3);
    edge.stop().await;
}

#[tokio::test]
async fn cors_preflights_are_answered_from_the_edge_cache() {
    let up = Upstream::start("desk").await;
    let edge = protected_edge(&up).await;
    let preflight = [
        ("origin", "https://desk.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "authorization"),
    ];
    let first = h1(edge.http, "OPTIONS", "/finesse/api/User", &preflight, Bytes::new()).await;
    assert_eq!(first.status, 204);
    assert_eq!(first.headers["access-control-allow-origin"], "https://desk.example");
    assert_eq!(up.hits(), 1);
    let second = h1(edge.http, "OPTIONS", "/finesse/api/Other", &preflight, Bytes::new()).await;
    assert_eq!(second.status, 204);
    assert_eq!(second.headers["x-portcullis-cache"], "hit");
    for name in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-allow-credentials",
        "access-control-max-age",
    ] {
        assert_eq!(second.headers[name], first.headers[name], "{name}");
    }
    assert_eq!(up.hits(), 1, "answered at the edge");
    // A plain OPTIONS (not a preflight) is authenticated like any request.
    assert_eq!(h1(edge.http, "OPTIONS", "/finesse/api/User", &[], Bytes::new()).await.status, 401);
    edge.stop().await;
}
