//! The gRPC servers: the client API on the client port; on the peer port,
//! the Raft transport, the calls members forward to the leader, and the
//! admin API.

mod admin;
mod forward;
mod recipes;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use recipestore_protocol::pb::admin_server::AdminServer;
use recipestore_protocol::pb::forward_server::ForwardServer;
use recipestore_protocol::pb::raft_transport_server::RaftTransportServer;
use recipestore_protocol::pb::recipes_server::RecipesServer;
use tokio::sync::watch;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::Request;
use tonic::codegen::http::Response;
use tonic::metadata::MetadataMap;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;
use tonic::transport::server::TcpIncoming;
use tower::Layer;
use tower::Service;

use crate::node::DEFAULT_WAIT;
use crate::node::Node;
use crate::raft::network::MAX_PEER_MESSAGE_BYTES;
use crate::tls::Callers;
use crate::tls::NodeTls;

/// Refuses peer traffic (Raft or forwarded calls) from another cluster.
fn admit_peer(node: &Node, cluster_id: &str) -> Result<(), Status> {
    node.identity.admit(cluster_id).map_err(|e| {
        tracing::warn!(error = %e, "refused peer traffic");
        Status::failed_precondition(e.to_string())
    })
}

/// Binds `addr` with Nagle's algorithm off: small Raft and client messages
/// must not wait for delayed ACKs.
fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpIncoming> {
    Ok(TcpIncoming::bind(addr)
        .with_context(|| format!("failed to bind the {what} address {addr}"))?
        .with_nodelay(Some(true)))
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves the Raft transport, forwarding and the admin API; with TLS, to
/// callers with a certificate of the cluster CA only, Raft and forwarding
/// to members only.
pub async fn serve_peer(
    node: Arc<Node>,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let incoming = bind(addr, "peer")?;
    let tls = node.tls.clone();
    let members = crate::tls::admit(tls.is_some(), Callers::Members);
    let members_and_admins = crate::tls::admit(tls.is_some(), Callers::MembersAndAdmins);
    let router = tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            RaftTransportServer::new(transport::Transport::new(node.clone(), stop.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
            members.clone(),
        ))
        .add_service(InterceptedService::new(
            ForwardServer::new(forward::Forward::new(node.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
            members,
        ))
        .add_service(InterceptedService::new(
            AdminServer::new(admin::Admin::new(node)),
            members_and_admins,
        ));
    serve(router, incoming, tls.map(|tls| (tls, Port::Peer)), stop)
        .await
        .context("peer server failed")
}

/// Serves the client API, over TLS when the node has it.
pub async fn serve_client(
    node: Arc<Node>,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let incoming = bind(addr, "client")?;
    let tls = node.tls.clone();
    // Room for the largest content plus the request's other fields.
    let max_content = node.config.max_content_bytes;
    let max_message = max_content + 64 * 1024;
    let router = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(move |response| {
            oversized_is_invalid(response, max_content)
        }))
        .add_service(
            RecipesServer::new(recipes::RecipesService::new(node))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        );
    serve(router, incoming, tls.map(|tls| (tls, Port::Client)), stop)
        .await
        .context("client server failed")
}

/// The gRPC ports, each with its own TLS config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Client,
    Peer,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Client => "client",
            Port::Peer => "peer",
        }
    }
}

/// Serves `router` on `incoming` until `stop`; over TLS, with the config
/// the node holds for the port at each connection's arrival, when given.
async fn serve<L>(
    router: Router<L>,
    incoming: TcpIncoming,
    tls: Option<(Arc<NodeTls>, Port)>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error>
where
    L: Layer<Routes>,
    L::Service: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send,
    <L::Service as Service<Request<Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let Some((tls, port)) = tls else {
        return router
            .serve_with_incoming_shutdown(incoming, stopped(stop))
            .await;
    };
    let current = move || {
        let loaded = tls.current();
        match port {
            Port::Client => loaded.client.clone(),
            Port::Peer => loaded.peer.clone(),
        }
    };
    let incoming = recipestore_tls::accept(incoming, current, refused(port));
    router
        .serve_with_incoming_shutdown(incoming, stopped(stop))
        .await
}

/// Logs and counts a connection refused during its TLS handshake on `port`.
/// On the peer port it is a warning: only members and administrators dial
/// it, so a refusal is a wrong certificate or an intruder. On the client
/// port, load balancers' TCP checks and port scans would flood the log: the
/// counter shows them, the log only at debug level.
fn refused(
    port: Port,
) -> impl Fn(Option<SocketAddr>, &std::io::Error) + Clone + Send + Sync + 'static {
    move |peer, error| {
        if port == Port::Peer {
            tracing::warn!(peer = ?peer, %error, "TLS handshake on the peer port refused");
        } else {
            tracing::debug!(port = port.name(), peer = ?peer, %error, "TLS handshake refused");
        }
        crate::metrics::observe_tls_refused(port.name());
    }
}

/// A request over the decoding limit is refused by tonic before any
/// handler sees it, with OUT_OF_RANGE and the transport's words; a recipe
/// that large is the caller's mistake, answered as one: INVALID_ARGUMENT
/// with the content limit, as for content over the limit that fits the
/// decoding limit.
fn oversized_is_invalid(
    mut response: tonic::codegen::http::Response<tonic::body::Body>,
    max_content: usize,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    const TONIC_SAYS: &str = "decoded message length too large: found ";
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != tonic::Code::OutOfRange {
        return response;
    }
    let Some(found) = status
        .message()
        .split_once(TONIC_SAYS)
        .map(|(_, rest)| rest)
    else {
        return response;
    };
    let bytes = found
        .split_once(' ')
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0);
    let invalid = Status::from(crate::name::InvalidRecipe::RequestTooLarge {
        bytes,
        limit: max_content,
    });
    // The message is ours and plain: writing it cannot fail.
    let _ = invalid.add_header(response.headers_mut());
    response
}

/// How long a call may wait for replication or a leader: the caller's
/// deadline (`grpc-timeout`) less a margin so the reply arrives in time, or
/// the default wait when the call has none.
pub fn time_left(metadata: &MetadataMap) -> Duration {
    let deadline = caller_deadline(metadata).unwrap_or(DEFAULT_WAIT);
    deadline.saturating_sub(deadline / 20 + Duration::from_millis(5))
}

/// The caller's deadline (`grpc-timeout`), if it set one.
pub fn caller_deadline(metadata: &MetadataMap) -> Option<Duration> {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// Parses a `grpc-timeout` header value: digits followed by a unit.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
    }
}
