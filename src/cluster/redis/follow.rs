//! Following the Redis store: other peers' changes over pub/sub (reconnecting, with a resync
//! after a gap), and the master Sentinel names after a failover.

use super::*;

pub(super) fn decode_change(kind: &str, data: &str) -> Option<Change> {
    Some(match kind {
        "banned" => Change::Banned(data.to_string()),
        "unbanned" => Change::Unbanned(data.to_string()),
        "key" => Change::KeyChanged(data.to_string()),
        "set" => Change::SetChanged(data.to_string()),
        _ => return None,
    })
}

/// Subscribes to [`CHANGES_CHANNEL`] (reconnecting while the store lives) and forwards other
/// peers' changes to `changes`; ends when `stop` is dropped with the store.
pub(super) async fn listen(
    client: Arc<ArcSwapOption<redis::Client>>,
    peer: String,
    changes: broadcast::Sender<Change>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut first = true;
    loop {
        let current = client.load_full();
        let subscribed = async {
            let client = current?;
            let mut pubsub = tokio::time::timeout(OPERATION_TIMEOUT, client.get_async_pubsub()).await.ok()?.ok()?;
            pubsub.subscribe(CHANGES_CHANNEL).await.ok()?;
            Some(pubsub)
        };
        let pubsub = tokio::select! {
            pubsub = subscribed => pubsub,
            _ = &mut stop => return,
        };
        if let Some(pubsub) = pubsub {
            if !first {
                // Messages published while we were away are gone: everyone re-reads.
                let _ = changes.send(Change::Resync);
            }
            first = false;
            let mut messages = pubsub.into_on_message();
            loop {
                let message = tokio::select! {
                    message = messages.next() => message,
                    _ = &mut stop => return,
                };
                let Some(message) = message else { break };
                let Ok(payload) = message.get_payload::<String>() else { continue };
                let mut parts = payload.splitn(3, '\t');
                let (Some(from), Some(kind), Some(data)) = (parts.next(), parts.next(), parts.next()) else { continue };
                if from == peer {
                    continue;
                }
                if let Some(change) = decode_change(kind, data) {
                    let _ = changes.send(change);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = &mut stop => return,
        }
    }
}

pub(super) fn manager(client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(OPERATION_TIMEOUT))
        .set_response_timeout(Some(OPERATION_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// Asks Sentinel for the master every [`SENTINEL_POLL`] and points the store (and its
/// subscriber) at a new one after a failover; ends when `stop` is dropped with the store.
pub(super) async fn follow_sentinel(
    target: SentinelTarget,
    connection: Arc<ArcSwapOption<ConnectionManager>>,
    client: Arc<ArcSwapOption<redis::Client>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut current: Option<(String, u16)> = None;
    let Ok(mut sentinel) = redis::sentinel::Sentinel::build(target.sentinels.clone()) else { return };
    loop {
        let asked = tokio::time::timeout(OPERATION_TIMEOUT * 2, sentinel.async_master_for(&target.master, None)).await;
        if let Ok(Ok(found)) = asked
            && let redis::ConnectionAddr::Tcp(host, port) = found.get_connection_info().addr().clone()
            && current.as_ref() != Some(&(host.clone(), port))
            && let Ok(master) = redis::Client::open(format!("redis://{host}:{port}/{}", target.db))
            && let Ok(managed) = manager(master.clone())
        {
            tracing::warn!("redis master for {} is {}:{port}", target.master, crate::telemetry::logging::quoted(&host));
            connection.store(Some(Arc::new(managed)));
            client.store(Some(Arc::new(master)));
            current = Some((host, port));
        }
        tokio::select! {
            () = tokio::time::sleep(SENTINEL_POLL) => {}
            _ = &mut stop => return,
        }
    }
}
