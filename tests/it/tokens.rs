//! Edge-issued tokens over real sockets: issue, use, refresh, revoke, rate control.

use bytes::Bytes;

use crate::support::client::h1;
use crate::support::{ADMIN_TOKEN, Upstream, basic};

async fn edge_with_users(up: &Upstream, extra: &str) -> crate::support::RunningEdge {
    crate::support::users_file_edge(up, extra).await
}

async fn post(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> crate::support::client::Reply {
    h1(addr, "POST", path, headers, Bytes::from(body.to_string())).await
}

#[tokio::test]
async fn tokens_are_issued_used_refreshed_and_revoked() {
    let up = Upstream::start("desk").await;
    let edge = edge_with_users(&up, "").await;
    let reply = post(edge.http, "/portcullis/token", &[("authorization", &basic("alice", "pw"))], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers["cache-control"], "no-store");
    let issued: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["expires_in"], 480 * 60);
    let access = issued["access_token"].as_str().unwrap().to_string();
    let refresh = issued["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(up.hits(), 0, "the token endpoint is the edge's own");

    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(h1(edge.http, "GET", "/desk", &[("authorization", &bearer(&access))], Bytes::new()).await.status, 200);
    assert_eq!(h1(edge.http, "GET", "/desk", &[("authorization", "Bearer pca_forged")], Bytes::new()).await.status, 401);
    assert_eq!(up.hits(), 1);

    // Refresh: a new pair; the old access token stops working; the refresh token is single-use.
    let reply = post(
        edge.http,
        "/portcullis/token/refresh",
        &[("content-type", "application/json")],
        &format!("{{\"refresh_token\":\"{refresh}\"}}"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let renewed: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let new_access = renewed["access_token"].as_str().unwrap().to_string();
    assert_eq!(h1(edge.http, "GET", "/desk", &[("authorization", &bearer(&access))], Bytes::new()).await.status, 401);
    assert_eq!(h1(edge.http, "GET", "/desk", &[("authorization", &bearer(&new_access))], Bytes::new()).await.status, 200);
    let again = post(edge.http, "/portcullis/token/refresh", &[("authorization", &bearer(&refresh))], "").await;
    assert_eq!(again.status, 401, "refresh tokens work once");

    // Revocation through the admin API ends every token of the user.
    let admin_auth = format!("Bearer {ADMIN_TOKEN}");
    let reply = h1(edge.admin, "DELETE", "/api/v1/tokens?user=alice", &[("authorization", &admin_auth)], Bytes::new()).await;
    assert_eq!(reply.status, 200);
    let revoked: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(revoked["revoked"], 1);
    assert_eq!(h1(edge.http, "GET", "/desk", &[("authorization", &bearer(&new_access))], Bytes::new()).await.status, 401);
    edge.stop().await;
}

#[tokio::test]
async fn token_requests_need_real_credentials() {
    let up = Upstream::start("desk").await;
    let edge = edge_with_users(&up, "").await;
    assert_eq!(post(edge.http, "/portcullis/token", &[], "").await.status, 401);
    assert_eq!(post(edge.http, "/portcullis/token", &[("authorization", &basic("alice", "nope"))], "").await.status, 401);
    assert_eq!(h1(edge.http, "GET", "/portcullis/token", &[("authorization", &basic("alice", "pw"))], Bytes::new()).await.status, 405);
    let reply = post(edge.http, "/portcullis/token", &[("authorization", &basic("alice", "pw"))], "").await;
    let access = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["access_token"].as_str().unwrap().to_string();
    let reply = post(edge.http, "/portcullis/token", &[("authorization", &format!("Bearer {access}"))], "").await;
    assert_eq!(reply.status, 401, "an edge token cannot mint more tokens");
    assert_eq!(post(edge.http, "/portcullis/token/refresh", &[], "{not json").await.status, 400);
    assert_eq!(up.hits(), 0);
    edge.stop().await;
}

#[tokio::test]
async fn token_issues_count_as_authorizations() {
    let up = Upstream::start("desk").await;
    let edge = edge_with_users(&up, "[rate_control]\nmax_authorizations = 2\nperiod = \"300s\"\n").await;
    // Validation (1) + issue (2): allowed. A cached credential's next issue (3): limited.
    assert_eq!(post(edge.http, "/portcullis/token", &[("authorization", &basic("alice", "pw"))], "").await.status, 200);
    let reply = post(edge.http, "/portcullis/token", &[("authorization", &basic("alice", "pw"))], "").await;
    assert_eq!(reply.status, 429);
    assert!(reply.headers.contains_key("retry-after"));
    edge.stop().await;
}
