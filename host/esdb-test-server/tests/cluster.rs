//! Cluster mode through the real `kurrentdb` client: discovery by gossip seeds finds the
//! leader (or a follower when asked), followers refuse appends naming the leader, and a
//! killed leader hands over so a fresh client reads the same log from another node.

mod common;

use common::{client_runtime, event};
use esdb_test_server::TestCluster;
use kurrentdb::{Client, SubscribeToAllOptions, SubscriptionEvent};

/// Subscribe to `$all` from the start until caught up; the events seen.
async fn read_all(client: &Client) -> Vec<u64> {
    let mut sub = client
        .subscribe_to_all(&SubscribeToAllOptions::default())
        .await;
    let mut seen = Vec::new();
    loop {
        match sub.next_subscription_event().await.unwrap() {
            SubscriptionEvent::EventAppeared(e) => {
                let e = e.get_original_event();
                let v: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
                seen.push(v["n"].as_u64().unwrap());
            }
            SubscriptionEvent::CaughtUp(_) => return seen,
            _ => {}
        }
    }
}

#[test]
fn gossip_finds_the_leader_followers_refuse_writes_and_a_dead_leader_hands_over() {
    let cluster = TestCluster::start(3, Vec::new()).unwrap();
    let rt = client_runtime();
    rt.block_on(async {
        // Seeds → gossip → the leader (node 0) takes the appends.
        let client = Client::new(cluster.url("").parse().unwrap()).unwrap();
        for n in 0..10 {
            client
                .append_to_stream("s", &Default::default(), event(n))
                .await
                .unwrap();
        }
        assert_eq!(cluster.len(), 10);
        assert_eq!(cluster.node(0).appends_served(), 10);

        // A client that prefers followers reads from one, and its append is refused
        // with the leader's address.
        let follower =
            Client::new(cluster.url("nodePreference=follower").parse().unwrap()).unwrap();
        let mut sub = follower
            .subscribe_to_all(&SubscribeToAllOptions::default())
            .await;
        let _ = sub.next_subscription_event().await.unwrap();
        assert_eq!(cluster.node(0).live_subscriptions(), 0);
        assert_eq!(
            cluster.node(1).live_subscriptions() + cluster.node(2).live_subscriptions(),
            1
        );
        drop(sub);
        let refused = follower
            .append_to_stream("s", &Default::default(), event(99))
            .await
            .unwrap_err();
        let leader = cluster.node(0).addr();
        match refused {
            kurrentdb::Error::NotLeaderException(at) => {
                assert_eq!(
                    (at.host.as_str(), at.port),
                    ("127.0.0.1", u32::from(leader.port()))
                )
            }
            other => panic!("expected not-leader, got {other:?}"),
        }
        assert_eq!(cluster.len(), 10, "a refused append writes nothing");

        // The leader dies: node 1 takes over; a fresh client finds it and sees the log.
        cluster.kill(0);
        assert_eq!(cluster.leader(), 1);
        let client = Client::new(cluster.url("").parse().unwrap()).unwrap();
        assert_eq!(read_all(&client).await, (0..10).collect::<Vec<_>>());
        client
            .append_to_stream("s", &Default::default(), event(10))
            .await
            .unwrap();
        assert_eq!(
            cluster.node(1).appends_served(),
            11,
            "counted on the shared log"
        );
        assert_eq!(cluster.len(), 11);
    });

    // Back up, node 0 is a follower; the log is the same through it.
    cluster.restart(0).unwrap();
    assert_eq!(cluster.leader(), 1);
    rt.block_on(async {
        let direct = Client::new(cluster.node(0).url().parse().unwrap()).unwrap();
        assert_eq!(read_all(&direct).await, (0..11).collect::<Vec<_>>());
    });
}
