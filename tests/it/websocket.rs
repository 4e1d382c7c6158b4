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
    let metrics = edge.running().edge.metrics.clone();
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
