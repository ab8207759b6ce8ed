use recipestore_protocol::pb::Consistency;
use tonic::Code;

use crate::cluster::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_precise_code_and_stores_nothing() {
    let c = TestCluster::start(3, &["--max-content-bytes", "1000"]).await;
    let client = c.client();
    let cases: Vec<(String, Vec<u8>, Code, &str)> = vec![
        (
            String::new(),
            b"x".to_vec(),
            Code::InvalidArgument,
            "must not be empty",
        ),
        (
            "a".repeat(257),
            b"x".to_vec(),
            Code::InvalidArgument,
            "257 bytes",
        ),
        (
            "bad\nname".into(),
            b"x".to_vec(),
            Code::InvalidArgument,
            "control character",
        ),
        (
            "bell\u{7}".into(),
            b"x".to_vec(),
            Code::InvalidArgument,
            "control character",
        ),
        (
            "too-big".into(),
            vec![0; 1001],
            Code::InvalidArgument,
            "limit is 1000 bytes",
        ),
        // Over the transport's own limit too: still the caller's mistake.
        (
            "far-too-big".into(),
            vec![0; 200_000],
            Code::InvalidArgument,
            "recipe content is limited to 1000 bytes",
        ),
    ];
    for (name, content, code, message) in cases {
        let err = client.upload(&name, content, None).await.unwrap_err();
        assert_eq!(err.code(), code, "upload {name:?}: {err}");
        assert!(
            err.message().contains(message),
            "upload {name:?}: {}",
            err.message()
        );
    }
    let err = client
        .download("", Consistency::Local, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client.delete(&"b".repeat(300), None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A version mismatch changes nothing.
    let v = client
        .upload("curry", b"first".to_vec(), None)
        .await
        .unwrap()
        .version;
    let err = client
        .upload("curry", b"second".to_vec(), Some(v + 100))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains(&format!("at version {v}")),
        "{}",
        err.message()
    );
    let read = client
        .download("curry", Consistency::Linearizable, None)
        .await
        .unwrap();
    assert_eq!((read.version, read.content.as_slice()), (v, &b"first"[..]));

    // Content at the limit is fine; nothing rejected was stored.
    client.upload("exactly", vec![7; 1000], None).await.unwrap();
    let names: Vec<String> = client
        .list("", 100, "", Consistency::Linearizable)
        .await
        .unwrap()
        .recipes
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["curry", "exactly"]);

    let err = client
        .list("", 5000, "", Consistency::Local)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
