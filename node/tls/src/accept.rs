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

/// Handshakes in progress at once. Beyond this, a flood of connections that
/// never finish theirs (each may take the whole timeout) would hold memory
/// and tasks without bound: new connections are closed at once instead.
const MAX_HANDSHAKES: usize = 1024;

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
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
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
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                refused(
                    tcp.peer_addr().ok(),
                    &std::io::Error::other(format!(
                        "{MAX_HANDSHAKES} TLS handshakes already in progress"
                    )),
                );
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(current());
            let ready = ready.clone();
            let refused = refused.clone();
            tokio::spawn(async move {
                let _permit = permit;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::Authority;
    use crate::ClientAuth;

    #[tokio::test]
    async fn a_handshake_that_is_not_tls_is_refused_and_never_reaches_the_server() {
        let ca = Authority::generate("test CA", Duration::from_secs(3600)).unwrap();
        let member = ca
            .issue(
                crate::MEMBER_NAME,
                &["127.0.0.1".into()],
                Duration::from_secs(3600),
            )
            .unwrap();
        let pem = member.pem(&ca).unwrap();
        let config = crate::server_config(&pem, ClientAuth::Required).unwrap();
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let seen = refusals.clone();
        let mut streams = accept(
            incoming,
            move || config.clone(),
            move |_, e| {
                seen.lock().unwrap().push(e.to_string());
            },
        );

        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while refusals.lock().unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never refused");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let nothing = tokio::time::timeout(Duration::from_millis(100), streams.next()).await;
        assert!(nothing.is_err(), "a refused connection reached the server");
    }
}
