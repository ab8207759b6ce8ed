//! TLS on real node processes: a cluster on mutual TLS serves its clients,
//! refuses strangers on every peer service, checks who a certificate names
//! (not only who signed it), requires client certificates when told, and
//! takes rotated certificates under load without losing a write.

use std::time::Duration;

use recipestore_client::admin::AdminClient;
use recipestore_client::admin::Timeouts;
use recipestore_protocol::pb;
use recipestore_protocol::pb::raft_transport_client::RaftTransportClient;
use recipestore_tls::Authority;
use recipestore_tls::PemFiles;
use tonic::Code;
use tonic::transport::ClientTlsConfig;

use crate::cluster::TestCluster;
use crate::cluster::Writer;
use crate::cluster::assert_all_readable;
use crate::cluster::eventually;
use crate::cluster::metric;
use crate::cluster::tls_client_for;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A TLS cluster of three and where its CA and administrator's files are.
async fn tls_cluster(extra_args: &[&str]) -> (TestCluster, PemFiles) {
    let mut c = TestCluster::layout(3, extra_args);
    let files = c.cluster.use_tls().expect("certificates").client_files();
    (c.launch().await, files)
}

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

/// A client config trusting `files`' CA, presenting `identity` when given.
fn trusting(files: &PemFiles, identity: Option<&recipestore_tls::Issued>) -> ClientTlsConfig {
    recipestore_tls::client_config(
        &read(&files.ca),
        identity.map(|i| (i.cert.as_bytes(), i.key.as_bytes())),
    )
}

/// A client that tries each call once.
fn once(endpoints: &[String], tls: Option<ClientTlsConfig>) -> recipestore_client::Client {
    let policy = recipestore_client::RetryPolicy {
        max_attempts: 1,
        ..recipestore_client::RetryPolicy::default()
    };
    recipestore_client::Client::with_tls(endpoints, policy, Duration::from_secs(3), tls)
        .expect("client")
}

/// The cluster's own CA, read back from its files.
fn cluster_ca(files: &PemFiles) -> Authority {
    let dir = files.ca.parent().expect("tls dir");
    let key = std::fs::read_to_string(dir.join("ca.key")).expect("ca.key");
    let cert = std::fs::read_to_string(&files.ca).expect("ca.crt");
    Authority::from_pem(&cert, &key).expect("CA")
}

fn admin_at(addr: &str, tls: &ClientTlsConfig) -> AdminClient {
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(3),
    };
    AdminClient::with_tls(addr, timeouts, Some(tls)).expect("admin client")
}

/// A Vote and an AppendEntries as a member would send them, over `tls`,
/// and how each was answered; the payloads are never decoded when the
/// caller is refused first.
async fn raft_calls(addr: &str, tls: &ClientTlsConfig) -> [Code; 2] {
    let channel = recipestore_tls::endpoint(addr, Some(tls))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy();
    let message = || pb::RaftMessage {
        cluster_id: String::new(),
        payload: Vec::new(),
    };
    let mut raft = RaftTransportClient::new(channel);
    let code = |answer: Result<_, tonic::Status>| answer.map_or_else(|s| s.code(), |_| Code::Ok);
    [
        code(raft.vote(message()).await),
        code(raft.append_entries(message()).await),
    ]
}

#[tokio::test]
async fn a_cluster_on_mutual_tls_serves_clients_and_refuses_strangers() {
    let (c, files) = tls_cluster(&[]).await;
    let endpoints = c.cluster.client_endpoints();
    let peer = c.cluster.nodes[1].peer_addr();

    // Clients with the CA alone are served, through every node.
    let writer = Writer::start(
        tls_client_for(&endpoints, Some(trusting(&files, None))),
        "tls",
    );
    writer.await_progress(50, Duration::from_secs(30)).await;
    let acked = writer.finish().await;
    assert_all_readable(
        &tls_client_for(&endpoints, Some(trusting(&files, None))),
        &acked,
    )
    .await;

    // Plaintext is not spoken on either port.
    let plain = once(&endpoints[..1], None);
    assert!(
        plain
            .download("tls-000000", pb::Consistency::Linearizable, None)
            .await
            .is_err()
    );
    let plain_admin = AdminClient::new(&peer, Timeouts::default()).expect("admin client");
    assert!(plain_admin.status().await.is_err());

    // A stranger's CA, with certificates named like members and
    // administrators: refused in the handshake on every peer service.
    let stranger = Authority::generate("stranger", DAY).expect("CA");
    let fake_member = stranger
        .issue(recipestore_tls::MEMBER_NAME, &["127.0.0.1".into()], DAY)
        .expect("issue");
    let stranger_tls = recipestore_tls::client_config(
        stranger.cert_pem().as_bytes(),
        Some((fake_member.cert.as_bytes(), fake_member.key.as_bytes())),
    );
    // It does not trust the cluster's certificate, nor the cluster its own:
    // dialled with the cluster's CA trusted, it is still refused.
    let stranger_trusting_cluster = trusting(&files, Some(&fake_member));
    for tls in [&stranger_tls, &stranger_trusting_cluster] {
        for code in raft_calls(&peer, tls).await {
            assert_ne!(code, Code::Ok);
            assert_ne!(code, Code::PermissionDenied, "refused before any service");
        }
        let joined = admin_at(&peer, tls)
            .add_learner(
                pb::Member {
                    id: 7,
                    peer_addr: "127.0.0.1:1".into(),
                    client_addr: "127.0.0.1:2".into(),
                },
                false,
            )
            .await;
        assert!(joined.is_err(), "a stranger added a learner");
    }

    // The cluster's CA, but the wrong identity: an administrator may not
    // speak Raft, and a certificate for anyone else may not administer.
    let ca = cluster_ca(&files);
    let admin = ca
        .issue(recipestore_tls::ADMIN_NAME, &[], DAY)
        .expect("issue");
    assert_eq!(
        raft_calls(&peer, &trusting(&files, Some(&admin))).await,
        [Code::PermissionDenied; 2]
    );
    let someone = ca.issue("someone-else", &[], DAY).expect("issue");
    let refused = admin_at(&peer, &trusting(&files, Some(&someone)))
        .status()
        .await
        .expect_err("someone else administered");
    let status = refused.status().expect("a node's answer");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("recipestore-admin"), "{status:?}");
    assert!(
        admin_at(&peer, &trusting(&files, Some(&admin)))
            .status()
            .await
            .is_ok(),
        "the administrator is admitted"
    );
    assert!(
        metric(
            &c,
            1,
            "recipestore_tls_handshake_failures_total{port=\"peer\"}"
        )
        .await
            >= 4.0
    );

    // The membership never changed.
    let status = c.cluster.nodes[0].status().await.expect("status");
    assert_eq!(status.voters.len(), 3, "{status:?}");
    assert!(status.learners.is_empty(), "{status:?}");
}

#[tokio::test]
async fn client_certificates_are_required_when_the_node_says_so() {
    let (c, files) = tls_cluster(&["--client-cert-auth"]).await;
    let endpoints = c.cluster.client_endpoints();
    let anonymous = once(&endpoints[..1], Some(trusting(&files, None)));
    let refused = anonymous
        .upload("anonymous", b"x".to_vec(), None)
        .await
        .expect_err("a client without a certificate was served");
    assert_ne!(refused.code(), Code::Ok);

    let someone = cluster_ca(&files)
        .issue("a-client", &[], DAY)
        .expect("issue");
    let known = tls_client_for(&endpoints, Some(trusting(&files, Some(&someone))));
    let reply = known
        .upload("known", b"x".to_vec(), None)
        .await
        .expect("upload");
    let got = known
        .download("known", pb::Consistency::Linearizable, None)
        .await
        .expect("download");
    assert_eq!(got.version, reply.version);
}

#[tokio::test]
async fn rotated_certificates_serve_new_connections_and_lose_no_write() {
    let (c, files) = tls_cluster(&[]).await;
    let endpoints = c.cluster.client_endpoints();
    let dir = files.ca.parent().expect("tls dir").to_path_buf();

    // A new CA; for the rotation both are trusted (a bundle), as a
    // Secret's ca.crt is during a CA change.
    let next = Authority::generate("next CA", DAY).expect("CA");
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(&files.ca).expect("ca"),
        next.cert_pem()
    );
    let bundle_path = dir.join("bundle.crt");
    std::fs::write(&bundle_path, &bundle).expect("bundle");
    let both = PemFiles {
        ca: bundle_path,
        ..files.clone()
    };
    let writer = Writer::start(
        tls_client_for(&endpoints, Some(trusting(&both, None))),
        "rot",
    );
    writer.await_progress(50, Duration::from_secs(30)).await;

    // Members' certificates from the new CA, every file replaced by a
    // rename, the way a mounted Secret changes.
    let member = next
        .issue(
            recipestore_tls::MEMBER_NAME,
            &["127.0.0.1".into(), "localhost".into()],
            DAY,
        )
        .expect("issue");
    for (name, contents) in [
        ("ca.crt", bundle.as_str()),
        ("node.crt", member.cert.as_str()),
        ("node.key", member.key.as_str()),
    ] {
        let staged = dir.join(format!(".{name}.new"));
        std::fs::write(&staged, contents).expect("stage");
        std::fs::rename(&staged, dir.join(name)).expect("rename");
    }
    for node in 0..3 {
        eventually(
            Duration::from_secs(30),
            "every node to load the new files",
            || async {
                let loaded = metric(
                    &c,
                    node,
                    "recipestore_tls_reloads_total{outcome=\"loaded\"}",
                )
                .await;
                (loaded >= 1.0).then_some(())
            },
        )
        .await;
    }

    // New connections see the new certificate: a client trusting only the
    // new CA is served, by every node.
    let new_only = PemFiles {
        ca: dir.join("next-ca.crt"),
        ..files.clone()
    };
    std::fs::write(&new_only.ca, next.cert_pem()).expect("next CA");
    for endpoint in &endpoints {
        let client = tls_client_for(
            std::slice::from_ref(endpoint),
            Some(trusting(&new_only, None)),
        );
        client
            .download("rot-000000", pb::Consistency::Linearizable, None)
            .await
            .unwrap_or_else(|s| panic!("{endpoint} still presents the old certificate: {s}"));
    }

    // Raft kept going over the new certificates, and nothing was lost.
    writer.await_progress(50, Duration::from_secs(30)).await;
    let acked = writer.finish().await;
    assert_all_readable(
        &tls_client_for(&endpoints, Some(trusting(&both, None))),
        &acked,
    )
    .await;
    let expiry = metric(
        &c,
        0,
        "recipestore_tls_certificate_expiry_timestamp_seconds",
    )
    .await;
    let in_a_day = (std::time::SystemTime::now() + DAY)
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (expiry - in_a_day).abs() < 120.0,
        "expiry metric {expiry} is not the new certificate's"
    );
}
