//! Batch append through the real `kurrentdb` client: many requests in flight on one
//! session, idempotent retries, a wrong expected revision answered as the server does
//! (which ends the client's session), and a server that does not offer it.

mod common;

use common::{client_runtime, event};
use esdb_test_server::TestServer;
use kurrentdb::{Client, StreamState};

#[test]
fn batch_append_pipelines_retries_idempotently_and_refuses_a_wrong_revision() {
    let server = TestServer::start(Vec::new()).unwrap();
    client_runtime().block_on(appends(&server));
}

async fn appends(server: &TestServer) {
    let client = Client::new(server.url().parse().unwrap()).unwrap();
    let batch = std::sync::Arc::new(client.batch_append(&Default::default()).await.unwrap());

    // 300 requests in flight at once, three streams, each stream's in order.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..300u64 {
        let batch = batch.clone();
        set.spawn(async move {
            let stream = format!("s-{}", i % 3);
            batch
                .append_to_stream(stream, StreamState::Any, vec![event(i)])
                .await
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(server.len(), 300);
    assert_eq!(server.appends_served(), 300);

    // The same events at the same revisions again: accepted, nothing written.
    let first = vec![event(1000), event(1001)];
    let r = batch
        .append_to_stream("t", StreamState::NoStream, first.clone())
        .await
        .unwrap();
    assert_eq!(r.current_revision(), Some(1));
    let again = batch
        .append_to_stream("t", StreamState::NoStream, first)
        .await
        .unwrap();
    assert_eq!(again.current_revision(), Some(1));
    assert_eq!(server.len(), 302);

    // Part of it already there: refused like any wrong expected revision.
    let err = batch
        .append_to_stream("t", StreamState::NoStream, vec![event(1000), event(1002)])
        .await
        .unwrap_err();
    match err {
        kurrentdb::Error::Grpc { code, message } => {
            assert_eq!(code, tonic::Code::AlreadyExists);
            assert_eq!(message, "WrongExpectedVersion");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.len(), 302);
    assert_eq!(server.batch_sessions_served(), 1);
}

#[test]
fn a_server_without_batch_append_says_so() {
    let server = TestServer::start(Vec::new()).unwrap();
    server.set_batch_append(false);
    let err = client_runtime().block_on(async {
        let client = Client::new(server.url().parse().unwrap()).unwrap();
        client.batch_append(&Default::default()).await.err()
    });
    assert!(
        matches!(err, Some(kurrentdb::Error::UnsupportedFeature)),
        "{err:?}"
    );
}
