//! The forwarding convention on the peer port: a member that does not lead
//! refuses a forwarded call, marked as not run, and does not pass it on.

use recipestore_protocol::metadata;
use recipestore_protocol::pb;
use recipestore_protocol::pb::admin_client::AdminClient;
use recipestore_protocol::pb::forward_client::ForwardClient;
use tonic::metadata::MetadataValue;

use crate::cluster::TestCluster;

fn forwarded<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(metadata::FORWARDED, MetadataValue::from_static("1"));
    request
}

fn assert_not_run(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.metadata().contains_key(metadata::NOT_LEADER),
        "{status:?}"
    );
    assert!(status.message().contains("does not lead"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_forwarded_calls_as_not_run_and_changes_nothing() {
    let c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let follower = &c.cluster.nodes[((leader + 1) % 3) as usize];
    let other = (leader + 2) % 3;
    let before = follower.status().await.unwrap();
    // Called as a member would forward them.
    let peer = c.member_channel(&follower.peer_addr());

    let mut admin = AdminClient::new(peer.clone());
    let status = admin
        .remove_member(forwarded(pb::RemoveMemberRequest { id: other }))
        .await
        .unwrap_err();
    assert_not_run(&status);

    let mut forward = ForwardClient::new(peer);
    let status = forward
        .read_index(forwarded(pb::ReadIndexRequest {
            cluster_id: before.cluster_id.clone(),
        }))
        .await
        .unwrap_err();
    assert_not_run(&status);

    // Not forwarded: the same removal, asked of the follower by a client,
    // runs on the leader.
    let after = follower.status().await.unwrap();
    assert_eq!(
        after.voters, before.voters,
        "the refused calls changed nothing"
    );
    let reply = follower.admin().remove_member(other).await.unwrap();
    assert!(reply.changed);
    assert!(reply.voters.iter().all(|m| m.id != other), "{reply:?}");
}
