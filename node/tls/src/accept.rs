//! Accepting TLS connections for a tonic server: every handshake runs in
//! its own task, bounded in time, so a slow or hostile client holds up
//! neither the listener nor other clients; each uses the server config
//! current when it arrives, so replaced certificates serve new connections
//! at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes finished but not yet taken by the server.
const READY_BACKLOG: usize = 64;

/// TLS connections accepted from `incoming`, each with the config
/// `current` returns at its arrival. A connection whose handshake fails
/// (no or a wrong certificate, not TLS at all, too slow) is closed and
/// passed to `refused` with the peer's address and why; the server never
/// sees it.
pub fn accept<C, F>(
    mut incoming: TcpIncoming,
    current: C,
    refused: F,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>>
where
    C: Fn() -> Arc<rustls::ServerConfig> + Send + 'static,
    F: Fn(Option<SocketAddr>, &std::io::Error) + Clone + Send + Sync + 'static,
{
    let (ready, streams) = mpsc::channel(READY_BACKLOG);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                next = incoming.next() => next,
                () = ready.closed() => return,
            };
            let tcp = match tcp {
                Some(Ok(tcp)) => tcp,
                Some(Err(e)) => {
                    // Out of descriptors or a connection reset before it
                    // was taken: the listener itself is fine.
                    tracing::warn!(error = %e, "failed to accept a connection");
                    continue;
                }
                None => return,
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(current());
            let ready = ready.clone();
            let refused = refused.clone();
            tokio::spawn(async move {
                let peer = tcp.peer_addr().ok();
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => refused(peer, &e),
                    Err(_) => refused(
                        peer,
                        &std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no TLS handshake within 10 s",
                        ),
                    ),
                }
            });
        }
    });
    ReceiverStream::new(streams)
}
