//! `recipectl snapshot save`, `status` and `restore` against real node
//! processes: a backup of a running cluster becomes a new cluster with
//! every recipe at its version.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use recipectl::local_cluster::LocalCluster;
use recipestore_client::Client;
use recipestore_client::RetryPolicy;
use recipestore_protocol::pb;
use recipestore_testkit::FAST_RAFT;
use recipestore_testkit::binary;
use recipestore_testkit::free_node_ports;

fn recipectl(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_recipectl"))
        .args(args)
        .output()
        .expect("run recipectl")
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "recipectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn started(root: &Path, base_port: u16) -> (LocalCluster, pb::InitializeResponse) {
    let mut cluster =
        LocalCluster::new(&binary("recipestore-node"), root, base_port, 3, FAST_RAFT).unwrap();
    cluster.start_all().unwrap();
    let init = cluster
        .initialize(Duration::from_secs(30))
        .await
        .expect("initialize");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("a leader");
    (cluster, init)
}

/// Every recipe a cluster lists, with its version and content.
async fn contents(client: &Client) -> BTreeMap<String, (u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .list("", 100, &token, pb::Consistency::Linearizable)
            .await
            .expect("list");
        for row in page.recipes {
            let got = client
                .download(&row.name, pb::Consistency::Linearizable, None)
                .await
                .expect("download");
            assert_eq!(got.version, row.version, "{}", row.name);
            out.insert(row.name, (got.version, got.content));
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// `snapshot restore-member` arguments making pod `cookbook-<id>` a member
/// of a new 3-node local cluster on `port`, its data in `root`, from
/// `backup` (a file or an s3:// location).
fn restore_member_args(
    backup: &str,
    root: &Path,
    port: u16,
    id: u64,
    cluster_id: &str,
) -> Vec<String> {
    let data = recipectl::local_cluster::node_data_dir(root, id);
    let mut args = vec![
        "snapshot".to_owned(),
        "restore-member".to_owned(),
        backup.to_owned(),
        "--data-dir".to_owned(),
        data.to_str().unwrap().to_owned(),
        "--pod-name".to_owned(),
        format!("cookbook-{id}"),
        "--cluster-id".to_owned(),
        cluster_id.to_owned(),
    ];
    for m in recipectl::local_cluster::loopback_members(port, 3).unwrap() {
        args.push("--member".to_owned());
        args.push(format!("{}={},{}", m.id, m.peer_addr, m.client_addr));
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_cluster_with_every_recipe_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let (mut old, old_init) = started(&dir.path().join("old"), free_node_ports()).await;
    let client = Client::with_policy(
        &old.client_endpoints(),
        RetryPolicy::default(),
        Duration::from_secs(10),
    )
    .unwrap();
    let mut expected = BTreeMap::new();
    // Every recipe, then a second edition of every seventh.
    let editions = (0..300u32)
        .map(|i| (i, format!("{i} ").repeat(200 + i as usize)))
        .chain(
            (0..300u32)
                .step_by(7)
                .map(|i| (i, format!("second edition of {i}"))),
        );
    for (i, content) in editions {
        let name = format!("recipe-{i:03}");
        let content = content.into_bytes();
        let version = client
            .upload(&name, content.clone(), None)
            .await
            .unwrap()
            .version;
        expected.insert(name, (version, content));
    }
    for i in (0..300u32).step_by(11) {
        let name = format!("recipe-{i:03}");
        client.delete(&name, None).await.unwrap();
        expected.remove(&name);
    }
    let last_write = expected.values().map(|(v, _)| *v).max().unwrap();

    // Saved through one member, whichever leads: the backup holds every
    // write acknowledged before the command.
    let file = dir.path().join("cookbook.rsb");
    let file_arg = file.to_str().unwrap();
    let peer = old.nodes[2].peer_addr();
    let saved = succeeded(&recipectl(&[
        "--peers", &peer, "--output", "json", "snapshot", "save", file_arg,
    ]));
    let header: serde_json::Value = serde_json::from_str(&saved).expect("json");
    assert_eq!(header["recipes"], expected.len() as u64, "{header}");
    assert_eq!(header["cluster_id"], old_init.cluster_id.as_str());
    assert!(
        header["last_index"].as_u64().unwrap() >= last_write,
        "{header}"
    );
    old.stop_all(Duration::from_secs(5));
    let status = succeeded(&recipectl(&["snapshot", "status", file_arg]));
    assert!(
        status.contains(&format!("recipes:     {}", expected.len())),
        "{status}"
    );

    // A cut or damaged backup is refused before any directory is made.
    let bytes = std::fs::read(&file).unwrap();
    let new_root = dir.path().join("new");
    let new_root_arg = new_root.to_str().unwrap();
    let port = free_node_ports();
    let port_arg = port.to_string();
    let restore = |file: &str| {
        recipectl(&[
            "snapshot",
            "restore",
            file,
            "--data-dir",
            new_root_arg,
            "--base-port",
            &port_arg,
        ])
    };
    let cut = dir.path().join("cut.rsb");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    let damaged_file = dir.path().join("damaged.rsb");
    std::fs::write(&damaged_file, &damaged).unwrap();
    for (bad, says) in [(&cut, "cut short"), (&damaged_file, "damaged")] {
        let out = restore(bad.to_str().unwrap());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} restored", bad.display());
        assert!(stderr.contains("not a usable backup"), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!new_root.join("node-0").exists(), "{stderr}");
    }

    let restored = succeeded(&restore(file_arg));
    assert!(restored.contains("recipectl local up"), "{restored}");
    let again = restore(file_arg);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let (new, new_init) = started(&new_root, port).await;
    assert!(new_init.already_initialized, "{new_init:?}");
    assert_ne!(new_init.cluster_id, old_init.cluster_id);
    let client = Client::with_policy(
        &new.client_endpoints(),
        RetryPolicy::default(),
        Duration::from_secs(10),
    )
    .unwrap();
    let found = contents(&client).await;
    assert_eq!(found.len(), expected.len());
    assert!(found == expected, "the restored recipes differ");
    // Versions keep rising past the backup's.
    let next = client
        .upload("recipe-000", b"third edition".to_vec(), None)
        .await
        .unwrap();
    assert!(next.version > last_write, "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_saves_into_a_directory_keep_the_newest_backups() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _) = started(&dir.path().join("cluster"), free_node_ports()).await;
    let peers = cluster.peer_endpoints().join(",");
    let client = Client::new(&cluster.client_endpoints()).unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    // A file that is not a backup is never pruned.
    std::fs::write(backups.join("notes.txt"), "keep me").unwrap();
    let mut saved = Vec::new();
    for i in 0..3u32 {
        client
            .upload(&format!("dish-{i}"), b"salt".to_vec(), None)
            .await
            .unwrap();
        let into = backups.to_str().unwrap();
        let out = succeeded(&recipectl(&[
            "--peers", &peers, "snapshot", "save", "--into", into, "--keep", "2",
        ]));
        saved.push(out);
    }
    let mut names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "two backups and the notes: {names:?}");
    assert_eq!(names[2], "notes.txt");
    assert!(
        saved[2].contains("deleted") && saved[2].contains("backup-"),
        "the third save deleted the first: {}",
        saved[2]
    );
    // The newest holds all three recipes; both kept ones are sound.
    let newest = backups.join(&names[1]);
    let status = succeeded(&recipectl(&[
        "--output",
        "json",
        "snapshot",
        "status",
        newest.to_str().unwrap(),
    ]));
    let header: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(header["recipes"], 3, "{header}");
    succeeded(&recipectl(&[
        "snapshot",
        "status",
        backups.join(&names[0]).to_str().unwrap(),
    ]));

    // The nodes that served them count them, with the size of the last.
    let mut sent = 0.0;
    let mut last_bytes = 0.0;
    for node in &cluster.nodes {
        let text = reqwest::get(format!("http://{}/metrics", node.http_addr()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = |series: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        sent += value("recipestore_backup_streams_total{outcome=\"sent\"}");
        last_bytes = f64::max(last_bytes, value("recipestore_backup_last_bytes"));
    }
    assert_eq!(sent, 3.0, "three backups sent whole");
    assert!(last_bytes > 0.0);

    // --keep needs --into, and FILE and --into exclude each other.
    let out = recipectl(&["snapshot", "save", "x.rsback", "--keep", "2"]);
    assert!(!out.status.success());
    let out = recipectl(&["snapshot", "save", "x.rsback", "--into", "d"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_restore_their_own_member_in_place_and_a_later_pod_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = started(&dir.path().join("old"), free_node_ports()).await;
    let client = Client::new(&old.client_endpoints()).unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..40u32 {
        let name = format!("stew-{i:02}");
        let content = format!("{i} carrots").into_bytes();
        let version = client
            .upload(&name, content.clone(), None)
            .await
            .unwrap()
            .version;
        expected.insert(name, (version, content));
    }
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let peers = old.peer_endpoints().join(",");
    succeeded(&recipectl(&[
        "--peers",
        &peers,
        "snapshot",
        "save",
        "--into",
        backups.to_str().unwrap(),
    ]));
    let file = std::fs::read_dir(&backups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    // Each "pod" restores its own volume, a mount point that exists.
    let root = dir.path().join("new");
    let port = free_node_ports();
    let cluster_id = "4bd7f3c2-7a0e-4c38-9d52-2a8a1c1e5f10";
    let restore_member = |id: u64| {
        let data = recipectl::local_cluster::node_data_dir(&root, id);
        std::fs::create_dir_all(data.join("lost+found")).unwrap();
        let args = restore_member_args(file.to_str().unwrap(), &root, port, id, cluster_id);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        succeeded(&recipectl(&args))
    };
    for id in 0..3 {
        let out = restore_member(id);
        assert!(
            out.contains(&format!("as node {id} of cluster {cluster_id}")),
            "{out}"
        );
    }
    // A pod restarted later, or one added by a scale-out, restores nothing.
    assert!(restore_member(1).contains("nothing restored"));
    let out = restore_member(3);
    assert!(out.contains("not one of the restored members"), "{out}");
    std::fs::remove_dir_all(recipectl::local_cluster::node_data_dir(&root, 3)).unwrap();

    let (new, init) = started(&root, port).await;
    assert!(init.already_initialized, "{init:?}");
    assert_eq!(init.cluster_id, cluster_id);
    let client = Client::new(&new.client_endpoints()).unwrap();
    assert!(
        contents(&client).await == expected,
        "the restored recipes differ"
    );
}

/// A real S3-compatible server: moto's, from PyPI (`pip install
/// 'moto[server]'`, which `scripts/test.sh` does), on a free port; killed
/// on drop.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    async fn start() -> Self {
        let port = recipestore_testkit::free_port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server runs: pip install 'moto[server]' (scripts/test.sh does)");
        let endpoint = format!("http://127.0.0.1:{port}");
        recipestore_testkit::eventually(Duration::from_secs(30), "moto_server to listen", || {
            let addr = format!("127.0.0.1:{port}");
            async move { tokio::net::TcpStream::connect(addr).await.ok().map(drop) }
        })
        .await;
        Self { child, endpoint }
    }

    /// recipectl with credentials for this server.
    fn recipectl(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_recipectl"))
            .args(args)
            .env("RECIPESTORE_S3_ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "cook")
            .env("AWS_SECRET_ACCESS_KEY", "secret-sauce")
            .output()
            .expect("run recipectl")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_go_to_an_s3_bucket_and_pods_restore_from_it() {
    let s3 = S3Server::start().await;
    let http = reqwest::Client::new();
    let bucket = format!("{}/kitchen", s3.endpoint);
    assert!(
        http.put(&bucket)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    let dir = tempfile::tempdir().unwrap();
    let (old, _) = started(&dir.path().join("old"), free_node_ports()).await;
    let client = Client::new(&old.client_endpoints()).unwrap();
    let peers = old.peer_endpoints().join(",");
    let mut expected = BTreeMap::new();
    for round in 0..3u32 {
        let name = format!("soup-{round}");
        let version = client
            .upload(&name, b"broth".to_vec(), None)
            .await
            .unwrap()
            .version;
        expected.insert(name, (version, b"broth".to_vec()));
        let out = succeeded(&s3.recipectl(&[
            "--peers",
            &peers,
            "snapshot",
            "save",
            "--into",
            "s3://kitchen/cookbook",
            "--keep",
            "2",
        ]));
        assert!(
            out.contains("uploaded to s3://kitchen/cookbook/backup-"),
            "{out}"
        );
    }
    let listing = http
        .get(&bucket)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let keys: Vec<&str> = listing
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .collect();
    assert_eq!(keys.len(), 2, "the oldest of three was deleted: {keys:?}");
    let newest = keys.iter().max().unwrap();

    // Without credentials, a precise refusal before any request.
    let out = recipectl(&["snapshot", "save", "--into", "s3://kitchen/x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--s3-endpoint"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let root = dir.path().join("new");
    let port = free_node_ports();
    let location = format!("s3://kitchen/{newest}");
    for id in 0..3u64 {
        let data = recipectl::local_cluster::node_data_dir(&root, id);
        std::fs::create_dir_all(&data).unwrap();
        let cluster_id = "9c0e3a44-8f0b-4d1e-a0b7-5d8f2c6e1a37";
        let args = restore_member_args(&location, &root, port, id, cluster_id);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        succeeded(&s3.recipectl(&args));
        assert!(!data.join(".restore-download.rsback").exists());
    }
    let (new, _) = started(&root, port).await;
    let client = Client::new(&new.client_endpoints()).unwrap();
    assert!(
        contents(&client).await == expected,
        "the restored recipes differ"
    );
}
