//! The status API's own accept loop, because `axum::serve` bounds nothing: not the number of
//! connections, not how long a client may take to send its headers, not how long shutdown waits.
//!
//! Each connection costs a file descriptor, and the engine, the ledger and the recorder need
//! theirs: enough idle half-sent requests used to exhaust the process's descriptors, and then
//! commits and appends failed with "too many open files". So: the soft open-file limit is raised
//! to the hard one at start-up, connections are capped well below it (one over the cap is answered
//! 503 and closed at once), headers must arrive within a timeout that also closes idle keep-alive
//! connections, every connection has a lifetime, and shutdown waits a bounded time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Limits of the status API's listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time a client has to send its request headers; also the idle keep-alive timeout.
    pub header_timeout: Duration,
    /// After this, a connection is closed once its current response is written.
    pub max_lifetime: Duration,
}

/// Default cap: a quarter of the open-file limit, so the daemon's own files always fit.
pub fn default_max_connections(open_files: u64) -> usize {
    usize::try_from(open_files / 4).unwrap_or(usize::MAX).clamp(16, 1024)
}

/// Raises the soft open-file limit to the hard one; returns the soft limit in force.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit; keeping the current one");
            rlimit::Resource::NOFILE.get().map_or(1024, |(soft, _)| soft)
        }
    }
}

/// How long a connection has to finish its response once asked to close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The answer to a connection over the cap (written without waiting; the socket is then closed).
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 95\r\n\r\n\
{\"error\":{\"status\":503,\"message\":\"too many connections to the status API; try again shortly\"}}\n";

/// Serves `app` on `listener` until `shutdown` turns true, then gives open connections `grace` to
/// finish before dropping them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let lingering = Arc::new(Semaphore::new(REJECT_LINGER_MAX));
    let (close_tx, close_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut rejected = 0u64;
    let mut last_warning: Option<Instant> = None;
    loop {
        let stream = tokio::select! {
            biased;
            _ = until_true(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a transient network error: pause instead of spinning.
                    tracing::warn!(error = %e, "status API: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            reject(stream, &lingering);
            rejected += 1;
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    rejected,
                    "status API: connection limit reached; answering 503 to new connections"
                );
                last_warning = Some(Instant::now());
            }
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let mut close = close_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = until_true(&mut close) => {}
                _ = tokio::time::sleep(limits.max_lifetime) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        });
    }
    drop(listener);
    let _ = close_tx.send(true);
    let open = connections.len();
    if tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(open, "status API: connections still open at shutdown were dropped");
    }
    connections.abort_all();
}

/// Completes once the flag is true (never if its sender is gone while it is false).
async fn until_true(flag: &mut watch::Receiver<bool>) {
    while !*flag.borrow_and_update() {
        if flag.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Rejected connections kept open at once to deliver their 503.
const REJECT_LINGER_MAX: usize = 32;
/// How long a rejected connection is kept open to deliver its 503.
const REJECT_LINGER: Duration = Duration::from_millis(500);

/// Answers 503 and closes. Closing a socket whose client data is unread makes the kernel send a
/// reset, which can destroy the answer before the client reads it; so a few rejected connections
/// at a time linger briefly, reading and dropping what the client sends, and the rest are closed
/// at once (their clients see a reset).
fn reject(stream: TcpStream, lingering: &Arc<Semaphore>) {
    // A fresh socket's send buffer takes this at once; whatever does not fit is not waited for.
    let _ = stream.try_write(OVER_CAPACITY);
    let Ok(permit) = lingering.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _permit = permit;
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(REJECT_LINGER, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_capacity_answer_has_the_length_it_declares() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head} / {}", body.len());
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }

    #[test]
    fn the_cap_leaves_most_descriptors_to_the_daemon() {
        assert_eq!(default_max_connections(256), 64);
        assert_eq!(default_max_connections(20_000), 1024);
        assert_eq!(default_max_connections(10), 16);
    }
}
