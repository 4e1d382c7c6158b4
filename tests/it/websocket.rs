//! WebSocket upgrades proxied as byte tunnels to a real WebSocket upstream.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestEdge, eventually, websocket_echo_upstream};

#[tokio::test]
async fn websocket_echo_through_the_edge() {
    let ws_upstream = websocket_echo_upstream().await;
    let edge = TestEdge::new().proxy("chat", "/ws/", &[(ws_upstream, 1, 0)], "").start().await;
    let tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://localhost:{}/ws/chat", edge.http.port()), tcp)
        .await
        .expect("upgrade through the edge");
    assert_eq!(response.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(3), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("hello {i}")));
    }
    let big = vec![7u8; 200_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(3), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_data().len(), big.len());
    let metrics = edge.running().runtime.metrics.clone();
    assert!(metrics.encode().contains("portcullis_open_websockets{service=\"chat\"} 1"), "{}", metrics.encode());
    ws.close(None).await.unwrap();
    drop(ws);
    assert!(
        eventually(Duration::from_secs(3), || metrics.encode().contains("portcullis_open_websockets{service=\"chat\"} 0")).await,
        "tunnel closed"
    );
    edge.stop().await;
}

#[tokio::test]
async fn a_refused_upgrade_is_answered_and_the_connection_closed() {
    // A plain HTTP upstream answers the upgrade with 200: the edge relays it and closes.
    let up = crate::support::Upstream::start("plain").await;
    let edge = TestEdge::new().proxy("app", "/", &[(up.addr, 1, 0)], "").start().await;
    let reply = crate::support::raw_exchange(
        edge.http,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
    assert_eq!(up.last_seen().headers["upgrade"], "websocket", "upgrade headers are forwarded");
    edge.stop().await;
}

/// An edge whose WebSocket service needs the credential in `Sec-WebSocket-Protocol`.
async fn protected_ws_edge(ws_upstream: std::net::SocketAddr) -> crate::support::RunningEdge {
    TestEdge::new()
        .proxy("chat", "/ws/", &[(ws_upstream, 1, 0)], "auth = \"jwt\"\nwebsocket_auth = true")
        .raw("[auth.jwt]\nsecret = \"an-hs256-secret-of-at-least-32-bytes!!\"\n")
        .start()
        .await
}

fn hs_token() -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "agent1", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(b"an-hs256-secret-of-at-least-32-bytes!!"),
    )
    .unwrap()
}

async fn upgrade_with(edge: std::net::SocketAddr, protocol: Option<&str>) -> Result<(u16, Option<String>), String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://localhost:{}/ws/chat", edge.port()).into_client_request().unwrap();
    if let Some(p) = protocol {
        request.headers_mut().insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((_ws, response)) => {
            Ok((response.status().as_u16(), response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_string())))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Ok((response.status().as_u16(), None)),
        Err(other) => Err(other.to_string()),
    }
}

#[tokio::test]
async fn websocket_credentials_travel_in_the_protocol_header_and_are_stripped() {
    let ws_upstream = websocket_echo_upstream().await;
    let edge = protected_ws_edge(ws_upstream).await;
    let credential = format!("Authorization%3A%20Bearer%20{}", hs_token());
    // Valid: upgraded, and the client only ever sees a real subprotocol (or none).
    let (status, echoed) = upgrade_with(edge.http, Some(&format!("xmpp, {credential}"))).await.unwrap();
    assert_eq!(status, 101);
    assert_eq!(echoed.as_deref(), Some("xmpp"), "only the real subprotocol comes back");
    // Invalid token, missing credential, malformed element: 401 at the edge.
    let (status, _) = upgrade_with(edge.http, Some("xmpp, Authorization%3A%20Bearer%20not.a.token")).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = upgrade_with(edge.http, Some("xmpp")).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = upgrade_with(edge.http, None).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = upgrade_with(edge.http, Some("xmpp, Authorization%ZZgarbage")).await.unwrap();
    assert_eq!(status, 401);
    let metrics = edge.running().runtime.metrics.encode();
    assert!(metrics.contains("portcullis_auth_failures_total{reason=\"malformed WebSocket protocol credential\"} 1"), "{metrics}");
    edge.stop().await;
}

#[tokio::test]
async fn the_upstream_never_sees_the_protocol_credential() {
    // A plain upstream records what it receives (it answers 200, so no tunnel opens).
    let up = crate::support::Upstream::start("plain").await;
    let edge = protected_ws_edge(up.addr).await;
    let credential = format!("Authorization%3A%20Bearer%20{}", hs_token());
    let request = format!(
        "GET /ws/chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: xmpp, {credential}\r\n\r\n"
    );
    let reply = crate::support::raw_exchange(edge.http, request.as_bytes(), Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = up.last_seen();
    assert_eq!(seen.headers["sec-websocket-protocol"], "xmpp");
    assert!(!seen.headers.values().any(|v| v.contains("Bearer")), "credential stripped: {:?}", seen.headers);
    edge.stop().await;
}

#[tokio::test]
async fn a_credential_less_upgrade_is_allowed_only_after_a_recent_login_from_that_ip() {
    let ws_upstream = websocket_echo_upstream().await;
    let up = crate::support::Upstream::start("desk").await;
    let edge = TestEdge::new()
        .proxy("chat", "/ws/", &[(ws_upstream, 1, 0)], "auth = \"jwt\"\nwebsocket_ip_window = \"5m\"")
        .proxy("desk", "/desk/", &[(up.addr, 1, 0)], "auth = \"jwt\"")
        .raw("[auth.jwt]\nsecret = \"an-hs256-secret-of-at-least-32-bytes!!\"\n")
        .start()
        .await;
    let (status, _) = upgrade_with(edge.http, None).await.unwrap();
    assert_eq!(status, 401, "no login from this IP yet");
    let login = crate::support::client::h1(
        edge.http,
        "GET",
        "/desk/x",
        &[("authorization", &format!("Bearer {}", hs_token()))],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(login.status, 200);
    let (status, _) = upgrade_with(edge.http, None).await.unwrap();
    assert_eq!(status, 101, "the same IP logged in within the window");
    edge.stop().await;
}

/// An upgrade to `/ws/chat` with the given extra request headers: the status.
async fn upgrade_with_headers(edge: std::net::SocketAddr, headers: &[(&'static str, String)]) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://localhost:{}/ws/chat", edge.port()).into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((_ws, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("upgrade failed: {other}"),
    }
}

#[tokio::test]
async fn websocket_auth_is_on_by_default_and_off_only_when_configured() {
    let ws_upstream = websocket_echo_upstream().await;
    let secret = "[auth.jwt]\nsecret = \"an-hs256-secret-of-at-least-32-bytes!!\"\n";
    let header = vec![("authorization", format!("Bearer {}", hs_token()))];
    let protocol = vec![("sec-websocket-protocol", format!("xmpp, Authorization%3A%20Bearer%20{}", hs_token()))];
    // No `websocket_auth` key: the credential must travel in Sec-WebSocket-Protocol.
    let default = TestEdge::new().proxy("chat", "/ws/", &[(ws_upstream, 1, 0)], "auth = \"jwt\"").raw(secret).start().await;
    assert_eq!(upgrade_with_headers(default.http, &header).await, 401, "an Authorization header is not enough by default");
    assert_eq!(upgrade_with_headers(default.http, &protocol).await, 101);
    default.stop().await;
    // `websocket_auth = false`: the upgrade is authenticated like any request.
    let off =
        TestEdge::new().proxy("chat", "/ws/", &[(ws_upstream, 1, 0)], "auth = \"jwt\"\nwebsocket_auth = false").raw(secret).start().await;
    assert_eq!(upgrade_with_headers(off.http, &header).await, 101);
    assert_eq!(upgrade_with_headers(off.http, &[]).await, 401);
    off.stop().await;
}
