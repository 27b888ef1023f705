//! What the test server's client tests share.
#![allow(dead_code)]

use kurrentdb::EventData;

/// Event number `n` (JSON `{"n": n}`), with an id fixed by `n` so retries are idempotent.
pub fn event(n: u64) -> EventData {
    EventData::json("Noted", &serde_json::json!({ "n": n }))
        .unwrap()
        .id(uuid::Uuid::from_u128(u128::from(n) + 1))
}

/// The servers run on runtimes of their own: start them outside the client's.
pub fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
