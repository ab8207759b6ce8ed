//! The Raft network over tonic: one reused HTTP/2 channel per peer, bounded
//! message sizes, AppendEntries pipelined on a stream per follower (call by
//! call to a peer of an older release), snapshots streamed in chunks, and
//! connection failures reported to openraft as `Unreachable` so it backs
//! off.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use futures::Stream;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use openraft::OptionalSend;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::network::stream_append_sequential;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use recipestore_protocol::pb;
use recipestore_protocol::pb::raft_transport_client::RaftTransportClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Code;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;

use super::Member;
use super::TypeConfig;
use super::typ::LogId;
use super::typ::Snapshot;
use super::typ::SnapshotMeta;
use super::typ::Vote;
use crate::codec;
use crate::identity::Identity;
use crate::tls::NodeTls;

/// Largest gRPC message a peer sends or accepts: a full append batch of
/// maximum-size recipes fits, a runaway message does not.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Size of each chunk of a streamed snapshot.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// The first chunk of a streamed snapshot.
#[derive(Serialize, serde::Deserialize)]
pub struct SnapshotHeader {
    pub vote: Vote,
    pub meta: SnapshotMeta,
}

/// Opens a lazily connected channel to a peer, over TLS when `tls` is
/// given; tonic reconnects on demand.
pub fn peer_channel(
    addr: &str,
    connect_timeout: Duration,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    Ok(recipestore_tls::endpoint(addr, tls.as_ref())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_lazy())
}

/// A transport client to a peer with the message limits set.
pub fn transport_client(channel: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
}

/// Channels to other nodes' peer ports, one per address, shared by the Raft
/// RPCs and by application forwarding (writes, read index), so a node keeps
/// one HTTP/2 connection per peer. With TLS, reloaded certificates retire
/// the channels made with the old ones: calls still on them finish, new
/// calls dial again.
#[derive(Clone, Default)]
pub struct PeerChannels {
    tls: Option<Arc<NodeTls>>,
    /// The TLS generation the channels were made with, and the channels.
    channels: Arc<Mutex<(u64, HashMap<String, Channel>)>>,
}

impl PeerChannels {
    pub fn new(tls: Option<Arc<NodeTls>>) -> Self {
        Self {
            tls,
            channels: Arc::default(),
        }
    }

    /// The channel to `addr`, opened lazily on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let tls = self.tls.as_ref().map(|tls| tls.current());
        let mut guard = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let (generation, channels) = &mut *guard;
        if let Some(tls) = &tls
            && tls.generation != *generation
        {
            channels.clear();
            *generation = tls.generation;
        }
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = peer_channel(
            addr,
            Duration::from_secs(1),
            tls.map(|tls| tls.towards_peers.clone()),
        )?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Creates one Raft client per peer over the shared [`PeerChannels`].
#[derive(Clone)]
pub struct Network {
    identity: Arc<Identity>,
    channels: PeerChannels,
    append_timeout: Duration,
}

impl Network {
    /// `append_timeout` bounds an AppendEntries call. Openraft offers the
    /// heartbeat interval, which a follower busy with a loaded disk misses:
    /// the leader then marks it unreachable and backs off, and commits wait
    /// on the remaining followers. A follower is given as long as an
    /// election timeout instead, the time after which it would itself call
    /// an election.
    pub fn new(identity: Arc<Identity>, channels: PeerChannels, append_timeout: Duration) -> Self {
        Self {
            identity,
            channels,
            append_timeout,
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        self.channels.get(addr)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: node.peer_addr.clone(),
            client: self
                .channel(&node.peer_addr)
                .map(transport_client)
                .map_err(|e| e.to_string()),
            identity: self.identity.clone(),
            append_timeout: self.append_timeout,
            stream_unsupported: false,
            open_failed_at: None,
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct PeerClient {
    target: u64,
    addr: String,
    client: Result<RaftTransportClient<Channel>, String>,
    identity: Arc<Identity>,
    append_timeout: Duration,
    /// The peer answered AppendStream with UNIMPLEMENTED: it runs a release
    /// from before the stream (a rolling upgrade), so replication to it goes
    /// one AppendEntries call at a time.
    stream_unsupported: bool,
    /// When opening an append stream last failed, if the last attempt did.
    open_failed_at: Option<Instant>,
}

/// How long after a failed attempt the next append stream to the same peer
/// is opened. Openraft retries at once and paces only requests within an
/// open stream, so without this a leader spins on a stopped follower (about
/// a thousand refused connections a second, each logged). A restarted
/// follower is back in replication within this time.
const REOPEN_AFTER_FAILURE: Duration = Duration::from_millis(200);

/// A transport failure, classified the way openraft wants it.
enum Failure {
    Unreachable(String),
    Network(String),
}

impl Failure {
    fn from_status(status: tonic::Status) -> Self {
        match status.code() {
            // Not listening, connection refused or reset, node shutting down,
            // or a fenced node that refuses our cluster: back off.
            Code::Unavailable | Code::FailedPrecondition | Code::Cancelled => {
                Failure::Unreachable(status.message().to_string())
            }
            _ => Failure::Network(format!("{}: {}", status.code(), status.message())),
        }
    }

    fn into_rpc(self, target: u64, addr: &str) -> RPCError<TypeConfig> {
        match self {
            Failure::Unreachable(m) => RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(format!("node {target} at {addr} unreachable: {m}")),
            )),
            Failure::Network(m) => RPCError::Network(NetworkError::new(&std::io::Error::other(
                format!("node {target} at {addr}: {m}"),
            ))),
        }
    }
}

impl PeerClient {
    fn client(&self) -> Result<RaftTransportClient<Channel>, Failure> {
        self.client
            .clone()
            .map_err(|e| Failure::Unreachable(format!("invalid address: {e}")))
    }

    fn message<T: Serialize>(&self, value: &T) -> Result<pb::RaftMessage, Failure> {
        Ok(pb::RaftMessage {
            cluster_id: self.identity.cluster_id().unwrap_or_default(),
            payload: codec::encode(value).map_err(|e| Failure::Network(e.to_string()))?,
        })
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        timeout: Duration,
        send: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftTransportClient<Channel>, tonic::Request<pb::RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::RaftMessage>, tonic::Status>>,
    {
        let result = async {
            let mut request = tonic::Request::new(self.message(req)?);
            request.set_timeout(timeout);
            let reply = send(self.client()?, request)
                .await
                .map_err(Failure::from_status)?;
            codec::decode(&reply.into_inner().payload)
                .map_err(|e| Failure::Network(format!("bad reply: {e}")))
        }
        .await;
        result.map_err(|f| f.into_rpc(self.target, &self.addr))
    }
}

/// How many AppendEntries one follower's stream carries unanswered: the
/// leader sends the next batch while the follower syncs the previous one.
const APPENDS_IN_FLIGHT: usize = 16;

/// The unanswered requests of one append stream, and which answers openraft
/// may see.
///
/// Openraft stamps a request with the time it takes it from the stream and
/// credits an answer to every queued request whose last log id the answer's
/// matching log id covers, as a quorum's confirmation of its leadership
/// since the newest such request was taken (leases, read indexes). An
/// answer the follower gave long ago, which a leader paused by SIGSTOP
/// finds in its socket when it resumes, would then also confirm a request
/// taken after the pause with the same last log id (a heartbeat-like
/// append): the deposed leader counted itself confirmed and served a
/// linearizable read from its old state (the fault suite, pause-leader).
/// So an answer is withheld from openraft while a later request whose last
/// log id it covers is unanswered: that request's own answer, which the
/// follower can give only after receiving it, confirms both.
struct InFlight {
    /// The last log ids of the unanswered requests, oldest first; the
    /// follower answers in order.
    last_log_ids: Mutex<std::collections::VecDeque<Option<LogId>>>,
    window: tokio::sync::Semaphore,
}

impl InFlight {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            last_log_ids: Mutex::default(),
            window: tokio::sync::Semaphore::new(APPENDS_IN_FLIGHT),
        })
    }

    /// The requests of `input`, each taken from openraft only once the
    /// window has room for it.
    fn requests<S>(
        self: Arc<Self>,
        input: S,
    ) -> impl Stream<Item = AppendEntriesRequest<TypeConfig>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
    {
        futures::stream::unfold((input, self), |(mut input, this)| async move {
            this.window.acquire().await.ok()?.forget();
            let request = input.next().await?;
            let last = request
                .entries
                .last()
                .map(|e| e.log_id)
                .or(request.prev_log_id);
            this.last_log_ids.lock().unwrap().push_back(last);
            Some((request, (input, this)))
        })
    }

    /// Records the answer to the oldest unanswered request; false when
    /// openraft must not see it (see [`InFlight`]). The last log ids of one
    /// stream's requests never decrease (a conflict ends the session), so
    /// the next unanswered request is the only one to compare with.
    fn answered(&self, result: &StreamAppendResult<TypeConfig>) -> bool {
        let mut last_log_ids = self.last_log_ids.lock().unwrap();
        last_log_ids.pop_front();
        self.window.add_permits(1);
        match (result, last_log_ids.front()) {
            (Ok(matching), Some(later)) => later > matching,
            _ => true,
        }
    }

    /// Ends the requests: no more are taken from openraft.
    fn close(&self) {
        self.window.close();
    }
}

/// Ends an append stream's requests when dropped.
struct EndRequestsOnDrop(Arc<InFlight>);

impl Drop for EndRequestsOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = File;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = option.soft_ttl().max(self.append_timeout);
        self.call(&rpc, timeout, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    /// AppendEntries pipelined on one gRPC stream per follower: the
    /// follower answers each in order, so the leader need not wait for a
    /// round trip and the follower's fdatasync before sending the next
    /// batch (see [`InFlight`] for the answers openraft does not see). The
    /// stream has no deadline (a session lasts as long as replication has
    /// work); HTTP/2 keep-alive ends it when the follower stops answering.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if self.stream_unsupported {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            if let Some(failed_at) = self.open_failed_at {
                tokio::time::sleep_until((failed_at + REOPEN_AFTER_FAILURE).into()).await;
            }
            let (target, addr) = (self.target, self.addr.clone());
            let mut client = self.client().map_err(|f| f.into_rpc(target, &addr))?;
            let cluster_id = self.identity.cluster_id().unwrap_or_default();
            let in_flight = InFlight::new();
            // An entry that cannot be encoded ends the stream; the leader
            // then starts a new session.
            let requests = in_flight
                .clone()
                .requests(input)
                .map(move |request| {
                    codec::encode(&request).map(|payload| pb::RaftMessage {
                        cluster_id: cluster_id.clone(),
                        payload,
                    })
                })
                .take_while(|message| std::future::ready(message.is_ok()))
                .filter_map(|message| std::future::ready(message.ok()));
            let opened = client.append_stream(requests).await;
            self.open_failed_at = opened.is_err().then(Instant::now);
            let responses = match opened {
                Ok(responses) => responses.into_inner(),
                Err(status) => {
                    if status.code() == Code::Unimplemented {
                        tracing::info!(
                            target,
                            "the peer has no AppendStream; replicating call by call"
                        );
                        self.stream_unsupported = true;
                    }
                    return Err(Failure::from_status(status).into_rpc(target, &addr));
                }
            };
            // When openraft ends the session (it drops the results), the
            // requests end too: otherwise they wait for an answer that
            // never comes and keep the call, and the follower's graceful
            // shutdown with it, open.
            let session = EndRequestsOnDrop(in_flight.clone());
            let results = responses.filter_map(move |message| {
                let _session = &session;
                let failure = match message {
                    Ok(message) => match codec::decode(&message.payload) {
                        Ok(result) => {
                            let shown = in_flight.answered(&result);
                            return std::future::ready(shown.then_some(Ok(result)));
                        }
                        Err(e) => Failure::Network(format!("bad append result: {e}")),
                    },
                    Err(status) => Failure::from_status(status),
                };
                std::future::ready(Some(Err(failure.into_rpc(target, &addr))))
            });
            Ok(results.boxed())
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, option.soft_ttl(), |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, option.soft_ttl(), |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&req, option.soft_ttl(), |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let unreachable =
            |m: String| StreamingError::Unreachable(Unreachable::new(&std::io::Error::other(m)));
        let mut client = self
            .client()
            .map_err(|_| unreachable(format!("invalid peer address {}", self.addr)))?;
        let cluster_id = self.identity.cluster_id().unwrap_or_default();
        let header = codec::encode(&SnapshotHeader {
            vote,
            meta: snapshot.meta.clone(),
        })
        .map_err(|e| unreachable(e.to_string()))?;
        let chunks = snapshot_chunks(snapshot.snapshot, cluster_id, header);
        let send = client.install_snapshot(chunks);
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = send => reply,
        };
        let reply = reply.map_err(|s| {
            unreachable(format!("snapshot to {} failed: {}", self.addr, s.message()))
        })?;
        codec::decode(&reply.into_inner().payload)
            .map_err(|e| unreachable(format!("bad snapshot reply: {e}")))
    }
}

/// Streams a snapshot file as chunks, reading one chunk ahead at a time.
fn snapshot_chunks(
    mut file: File,
    cluster_id: String,
    header: Vec<u8>,
) -> impl futures::Stream<Item = pb::SnapshotChunk> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut header = Some(header);
        loop {
            let mut data = vec![0; SNAPSHOT_CHUNK_BYTES];
            // On a read error the stream ends without `done`, and the
            // receiver discards it.
            let Ok(n) = file.read(&mut data) else { return };
            data.truncate(n);
            let chunk = pb::SnapshotChunk {
                cluster_id: cluster_id.clone(),
                header: header.take().unwrap_or_default(),
                data,
                done: n == 0,
            };
            if tx.blocking_send(chunk).is_err() || n == 0 {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::raft::AppendEntriesResponse;
    use openraft::vote::RaftLeaderId;
    use recipestore_protocol::pb::raft_transport_server::RaftTransport;
    use recipestore_protocol::pb::raft_transport_server::RaftTransportServer;
    use tonic::Request;
    use tonic::Response;
    use tonic::Status;
    use tonic::Streaming;

    use super::*;
    use crate::raft::typ::Entry;

    /// A peer of a release before AppendStream: it answers AppendEntries
    /// only.
    struct OlderPeer;

    fn unsupported<T>() -> Result<T, Status> {
        Err(Status::unimplemented("not in this release"))
    }

    #[tonic::async_trait]
    impl RaftTransport for OlderPeer {
        type AppendStreamStream = BoxStream<'static, Result<pb::RaftMessage, Status>>;

        async fn append_entries(
            &self,
            _request: Request<pb::RaftMessage>,
        ) -> Result<Response<pb::RaftMessage>, Status> {
            let reply = AppendEntriesResponse::<TypeConfig>::Success;
            Ok(Response::new(pb::RaftMessage {
                cluster_id: String::new(),
                payload: codec::encode(&reply).unwrap(),
            }))
        }

        async fn append_stream(
            &self,
            _request: Request<Streaming<pb::RaftMessage>>,
        ) -> Result<Response<Self::AppendStreamStream>, Status> {
            unsupported()
        }

        async fn vote(
            &self,
            _request: Request<pb::RaftMessage>,
        ) -> Result<Response<pb::RaftMessage>, Status> {
            unsupported()
        }

        async fn pre_vote(
            &self,
            _request: Request<pb::RaftMessage>,
        ) -> Result<Response<pb::RaftMessage>, Status> {
            unsupported()
        }

        async fn transfer_leader(
            &self,
            _request: Request<pb::RaftMessage>,
        ) -> Result<Response<pb::RaftMessage>, Status> {
            unsupported()
        }

        async fn install_snapshot(
            &self,
            _request: Request<Streaming<pb::SnapshotChunk>>,
        ) -> Result<Response<pb::RaftMessage>, Status> {
            unsupported()
        }
    }

    fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 0),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }
    }

    fn log_id(index: u64) -> LogId {
        LogId::new(crate::raft::typ::CommittedLeaderId::new(1, 0), index)
    }

    /// An append of the entries after `prev` up to `last`: a heartbeat-like
    /// append when they are equal.
    fn append(prev: u64, last: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 0),
            prev_log_id: Some(log_id(prev)),
            entries: (prev + 1..=last)
                .map(|index| Entry::new_blank(log_id(index)))
                .collect(),
            leader_commit: None,
        }
    }

    #[tokio::test]
    async fn requests_are_taken_from_openraft_while_the_window_has_room() {
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = taken.clone();
        let input = futures::stream::iter((0..).map(|i| append(i, i + 1))).inspect(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let in_flight = InFlight::new();
        let mut requests = Box::pin(in_flight.clone().requests(input));
        let taken_now = || taken.load(std::sync::atomic::Ordering::SeqCst);

        for _ in 0..APPENDS_IN_FLIGHT {
            assert!(requests.next().await.is_some());
        }
        // The window is full: the stream waits without taking another.
        assert!(futures::poll!(requests.next()).is_pending());
        assert_eq!(taken_now(), APPENDS_IN_FLIGHT);
        assert!(in_flight.answered(&Ok(Some(log_id(1)))));
        assert!(requests.next().await.is_some());
        assert_eq!(taken_now(), APPENDS_IN_FLIGHT + 1);
        in_flight.close();
        assert!(
            requests.next().await.is_none(),
            "a closed window ends the requests"
        );
    }

    /// The pause-leader fault: an answer from before the pause must not
    /// reach openraft while a request taken after it, with the same last
    /// log id, is unanswered; the later request's own answer does.
    #[tokio::test]
    async fn an_answer_is_withheld_while_a_later_request_it_covers_is_unanswered() {
        let in_flight = InFlight::new();
        let input = futures::stream::iter([append(4, 5), append(5, 5), append(5, 7), append(7, 7)]);
        let sent: Vec<_> = in_flight.clone().requests(input).collect().await;
        assert_eq!(sent.len(), 4);

        assert!(
            !in_flight.answered(&Ok(Some(log_id(5)))),
            "covers the heartbeat after it"
        );
        assert!(
            in_flight.answered(&Ok(Some(log_id(5)))),
            "the heartbeat's own answer"
        );
        assert!(
            !in_flight.answered(&Ok(Some(log_id(7)))),
            "covers the heartbeat after it"
        );
        assert!(
            in_flight.answered(&Ok(Some(log_id(7)))),
            "nothing unanswered after it"
        );

        let in_flight = InFlight::new();
        let input = futures::stream::iter([append(4, 5), append(5, 5)]);
        let _sent: Vec<_> = in_flight.clone().requests(input).collect().await;
        let conflict = Err(openraft::raft::StreamAppendError::Conflict(log_id(4)));
        assert!(
            in_flight.answered(&conflict),
            "a refusal always reaches openraft"
        );
    }

    #[tokio::test]
    async fn a_peer_without_append_stream_is_replicated_call_by_call() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftTransportServer::new(OlderPeer))
                .serve_with_incoming(incoming),
        );
        let identity =
            Arc::new(Identity::open(tempfile::tempdir().unwrap().path(), 0, None).unwrap());
        let mut network = Network::new(identity, PeerChannels::new(None), Duration::from_secs(1));
        let member = Member {
            peer_addr: addr,
            client_addr: String::new(),
        };
        let mut peer = network.new_client(1, &member).await;
        let option = RPCOption::new(Duration::from_secs(1));

        let refused = peer
            .stream_append(futures::stream::iter([heartbeat()]), option.clone())
            .await
            .is_err();
        assert!(refused, "the older peer refuses the stream");
        let results: Vec<_> = peer
            .stream_append(futures::stream::iter([heartbeat()]), option)
            .await
            .expect("falls back to AppendEntries")
            .collect()
            .await;
        assert!(matches!(results.as_slice(), [Ok(Ok(None))]), "{results:?}");
    }

    #[tokio::test]
    async fn a_stream_to_a_stopped_peer_is_reopened_only_after_a_pause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let identity =
            Arc::new(Identity::open(tempfile::tempdir().unwrap().path(), 0, None).unwrap());
        let mut network = Network::new(identity, PeerChannels::new(None), Duration::from_secs(1));
        let member = Member {
            peer_addr: addr,
            client_addr: String::new(),
        };
        let mut peer = network.new_client(1, &member).await;
        let option = RPCOption::new(Duration::from_secs(1));
        let mut attempt = async || {
            let started = Instant::now();
            let refused = peer
                .stream_append(futures::stream::iter([heartbeat()]), option.clone())
                .await
                .is_err();
            assert!(refused, "nothing listens at the peer's address");
            started.elapsed()
        };

        assert!(attempt().await < REOPEN_AFTER_FAILURE);
        assert!(attempt().await >= REOPEN_AFTER_FAILURE * 9 / 10);
    }
}
