//! Hostile modules next to a healthy one: each misbehaviour stops only its own
//! projection, with a message naming the cause; the healthy projection comes out exact
//! and nothing of the failed batch is written.

mod common;

use common::*;
use shop_events::Fold;

/// Run `hostile` + `order-summary` over shop events with one bad event at line 301.
fn run_with(
    bad_type: &str,
    tune: impl FnOnce(&mut projector::Config),
) -> (String, tempfile::TempDir) {
    run_module_with("hostile", bad_type, tune)
}

/// Run the guest `module` (whose table `seen` gets a row per event) + `order-summary`
/// over shop events with one bad event at line 301; return the module's fault.
fn run_module_with(
    module: &str,
    bad_type: &str,
    tune: impl FnOnce(&mut projector::Config),
) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let bad = format!(r#"{{"stream":"evil-1","type":"{bad_type}","data":{{}}}}"#);
    let lines = shop_events_with(&events, 8, 600, &[(300, &bad)]);

    let m = modules(dir.path(), &[module, "order-summary"]);
    let mut cfg = config(dir.path(), &events, &m, 100);
    tune(&mut cfg);
    let summary = run_once(&cfg);

    let good = summary
        .projections
        .iter()
        .find(|p| p.name == "order-summary")
        .unwrap();
    assert!(good.error.is_none(), "{good:?}");
    let data = dir.path().join("data");
    assert_same(
        "orders",
        &orders(&data),
        &Fold::of_file(&events, None).unwrap().orders,
    );

    let bad = summary
        .projections
        .iter()
        .find(|p| p.name == module)
        .unwrap();
    let err = bad.error.clone().expect("the hostile projection faults");
    // The fault names the event (line 301) and the batch holding it, of which nothing
    // was written.
    assert!(
        err.contains("at position 301 (stream evil-1 revision 0, type "),
        "{err}"
    );
    let after: u64 = err
        .split("after position ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after < 301, "{err}");
    let seen: Vec<serde_json::Value> = query(&data, module, "SELECT count(*) AS n FROM seen");
    let want = lines[..after as usize]
        .iter()
        .filter(|l| !l.contains("\"$"))
        .count();
    assert_eq!(
        seen[0]["n"], want as u64,
        "only the batches before the bad one: {err}"
    );
    let catalog = projector::store::Catalog::open_read_only(&data).unwrap();
    assert_eq!(
        catalog.entry(module).unwrap().unwrap().state,
        projector::store::ProjectionState::Faulted
    );
    (err, dir)
}

// A module built for WASI (as Python and JavaScript guests are) runs with an empty
// WASI context: what it tries to reach is not there, and the attempt faults only it.

#[test]
fn a_wasi_module_cannot_read_host_files() {
    let (err, _d) = run_module_with("wasi-probe", "ReadFile", |_| {});
    assert!(err.contains("cannot read /etc/passwd"), "{err}");
}

#[test]
fn a_wasi_module_cannot_open_sockets() {
    let (err, _d) = run_module_with("wasi-probe", "Connect", |_| {});
    assert!(err.contains("cannot connect to 127.0.0.1:22"), "{err}");
}

#[test]
fn a_wasi_module_cannot_wait_on_a_timer() {
    let t0 = std::time::Instant::now();
    let (err, _d) = run_module_with("wasi-probe", "Sleep", |_| {});
    assert!(err.contains("may not wait on a timer"), "{err}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(20),
        "it did not sleep"
    );
}

#[test]
fn a_wasi_module_sees_no_environment() {
    // Even with variables set in the host process.
    let (err, _d) = run_module_with("wasi-probe", "Env", |_| {});
    assert!(err.contains("no environment variables"), "{err}");
}

/// The clock a WASI module reads is fixed and its randomness seeded: two runs give
/// byte-identical tables. (Same batch size both times: the probe draws randomness per
/// event, so its values depend on the event's place in the batch, as any state would.)
#[test]
fn a_wasi_module_sees_a_fixed_clock_and_seeded_randomness() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    shop_events(&events, 5, 400);
    let report = projector::verify::verify(
        &guest("wasi-probe"),
        events.to_str().unwrap(),
        Default::default(),
        [50, 50],
    )
    .unwrap();
    assert!(report.deterministic(), "{:?}", report.runs);
    assert!(report.runs[0][0].rows > 300, "{:?}", report.runs);

    let m = modules(dir.path(), &["wasi-probe"]);
    assert!(run_once(&config(dir.path(), &events, &m, 50)).ok());
    let rows: Vec<serde_json::Value> = query(
        &dir.path().join("data"),
        "wasi-probe",
        "SELECT payload FROM seen",
    );
    let clock = format!("clock={}", projector::runtime::FIXED_WALL_CLOCK_SECS);
    assert!(
        rows.iter()
            .all(|r| r["payload"].as_str().unwrap().starts_with(&clock)),
        "{:?}",
        &rows[..3]
    );
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let (err, _d) = run_with("Loop", |c| c.limits.fuel_per_event = 1_000_000);
    assert!(err.contains("ran out of its CPU budget (fuel)"), "{err}");
}

#[test]
fn an_infinite_loop_without_fuel_hits_the_deadline() {
    let (err, _d) = run_with("Loop", |c| {
        c.limits.fuel_per_event = 0;
        c.limits.timeout_ms = 300;
    });
    assert!(err.contains("ran past its 300 ms deadline"), "{err}");
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let (err, _d) = run_with("Bomb", |c| c.limits.memory_mib = 32);
    assert!(err.contains("over its 32 MiB memory limit"), "{err}");
}

#[test]
fn a_panic_is_reported_with_its_message() {
    let (err, _d) = run_with("Panic", |_| {});
    assert!(err.contains("trapped") && err.contains("boom at"), "{err}");
}

#[test]
fn an_oversized_value_is_refused() {
    let (err, _d) = run_with("Huge", |_| {});
    assert!(
        err.contains("column `payload`: value of 2097152 bytes is over the 1048576 byte limit"),
        "{err}"
    );
}

/// SQLite would convert the key and find a row the commit window would miss, so the
/// answer would depend on where commits fall: the read is refused, naming the column.
#[test]
fn a_read_by_a_key_of_the_wrong_kind_is_refused() {
    let (err, _d) = run_with("WrongKey", |_| {});
    assert!(
        err.contains("get on `seen`: key column `id` (text) cannot be matched by an integer"),
        "{err}"
    );
}

#[test]
fn a_flood_of_ops_is_refused() {
    let (err, _d) = run_with("Flood", |c| c.limits.max_ops_per_batch = 10_000);
    assert!(err.contains("over the limit of 10000"), "{err}");
}

/// Under `dead-letter`, the batch is retried event by event: only the bad event is
/// left out (and recorded); every other event applies, in order.
#[test]
fn dead_letter_isolates_the_bad_event_and_records_it() {
    for policy in [
        projector::config::ErrorPolicy::DeadLetter,
        projector::config::ErrorPolicy::Skip,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.ndjson");
        // Line 301 panics in the module; line 451 is malformed (no `type`): both go
        // through the same policy.
        let lines = shop_events_with(
            &events,
            8,
            600,
            &[
                (
                    300,
                    r#"{"stream":"evil-1","type":"Panic","id":"bad-1","data":{}}"#,
                ),
                (450, r#"{"stream":"order-1","data":{}}"#),
            ],
        );

        let m = modules(dir.path(), &["hostile", "order-summary"]);
        let mut cfg = config(dir.path(), &events, &m, 100);
        for name in ["hostile", "order-summary"] {
            cfg.projections.insert(
                name.into(),
                projector::config::ProjectionSettings {
                    error_policy: policy,
                    ..Default::default()
                },
            );
        }
        let summary = run_once(&cfg);
        assert!(summary.ok(), "{summary:?}");
        let hostile = summary
            .projections
            .iter()
            .find(|p| p.name == "hostile")
            .unwrap();
        assert_eq!(
            hostile.events_failed, 2,
            "{policy:?}: the panic and the malformed line"
        );

        let data = dir.path().join("data");
        assert_same(
            "orders",
            &orders(&data),
            &Fold::of_file(&events, None).unwrap().orders,
        );
        #[derive(serde::Deserialize)]
        struct Seen {
            id: String,
        }
        let seen: Vec<Seen> = query(&data, "hostile", "SELECT id FROM seen");
        let want = lines
            .iter()
            .filter(|l| !l.contains("\"$") && !l.contains("bad-1") && l.contains("\"type\""))
            .count();
        assert_eq!(
            seen.len(),
            want,
            "{policy:?}: every event but the two bad ones"
        );
        assert!(!seen.iter().any(|s| s.id == "bad-1"));

        let dead: Vec<serde_json::Value> = query(
            &data,
            "hostile",
            "SELECT commit_position, event_id, event_type, error FROM _projector_dead_letters ORDER BY 1",
        );
        if policy == projector::config::ErrorPolicy::DeadLetter {
            assert_eq!(dead.len(), 2, "{dead:?}");
            assert_eq!(dead[0]["commit_position"], 301);
            assert_eq!(dead[0]["event_id"], "bad-1");
            assert_eq!(dead[0]["event_type"], "Panic");
            assert!(
                dead[0]["error"].as_str().unwrap().contains("boom at bad-1"),
                "{dead:?}"
            );
            assert_eq!(dead[1]["commit_position"], 451);
            assert!(
                dead[1]["error"]
                    .as_str()
                    .unwrap()
                    .contains("missing field `type`"),
                "{dead:?}"
            );
        } else {
            assert!(dead.is_empty(), "skip records nothing: {dead:?}");
        }
    }
}

/// A fault is sticky across restarts (the same module would fail on the same event
/// again) until `resume`; then the projection continues from its checkpoint.
#[test]
fn a_fault_stays_until_resumed() {
    let (err, dir) = run_with("Panic", |_| {});
    assert!(err.contains("boom"), "{err}");
    let events = dir.path().join("events.ndjson");
    let m = dir.path().join("modules");
    let data = dir.path().join("data");
    let cfg = config(dir.path(), &events, &m, 100);
    let count = || {
        query::<serde_json::Value>(&data, "hostile", "SELECT count(*) AS n FROM seen")[0]["n"]
            .clone()
    };
    let before = count();

    // Restart: not run again, and says why.
    let again = run_once(&cfg);
    let e = again
        .projections
        .iter()
        .find(|p| p.name == "hostile")
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert!(
        e.contains("is faulted") && e.contains("projector resume hostile"),
        "{e}"
    );
    assert_eq!(count(), before);

    // The bad event is fixed in the source; resume, and it runs to the end.
    let text = std::fs::read_to_string(&events)
        .unwrap()
        .replace("\"type\":\"Panic\"", "\"type\":\"Fine\"");
    std::fs::write(&events, text).unwrap();
    let catalog = projector::store::Catalog::open(&data).unwrap();
    assert!(catalog.resume("hostile").unwrap());
    assert!(
        !catalog.resume("hostile").unwrap(),
        "only a faulted projection can be resumed"
    );
    let last = run_once(&cfg);
    assert!(last.ok(), "{last:?}");
    let lines = std::fs::read_to_string(&events).unwrap();
    let want = lines.lines().filter(|l| !l.contains("\"$")).count();
    assert_eq!(count(), want as u64);
}

#[test]
fn an_oversized_row_is_refused() {
    let (err, _d) = run_with("Huge", |c| {
        c.limits.max_value_bytes = 8 << 20;
        c.limits.max_row_bytes = 1 << 20;
    });
    assert!(
        err.contains("row of 2097188 bytes is over the 1048576 byte limit"),
        "{err}"
    );
}

/// Dead-lettered events can be run again once the cause is fixed; those that still fail
/// keep their letter, with the new reason.
#[test]
fn dead_letters_can_be_retried_after_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let mut lines = shop_events_with(
        &events,
        8,
        600,
        &[
            (
                300,
                r#"{"stream":"evil-1","type":"Panic","id":"bad-1","data":{}}"#,
            ),
            (
                400,
                r#"{"stream":"evil-2","type":"Panic","id":"bad-2","data":{}}"#,
            ),
        ],
    );
    let m = modules(dir.path(), &["hostile"]);
    let mut cfg = config(dir.path(), &events, &m, 100);
    cfg.projections.insert(
        "hostile".into(),
        projector::config::ProjectionSettings {
            error_policy: projector::config::ErrorPolicy::DeadLetter,
            ..Default::default()
        },
    );
    assert!(run_once(&cfg).ok());
    let data = dir.path().join("data");
    let count = |sql: &str| {
        query::<serde_json::Value>(&data, "hostile", sql)[0]["n"]
            .as_u64()
            .unwrap()
    };
    let all = lines.iter().filter(|l| !l.contains("\"$")).count() as u64;
    assert_eq!(count("SELECT count(*) AS n FROM seen"), all - 2);
    assert_eq!(
        count("SELECT count(*) AS n FROM _projector_dead_letters"),
        2
    );

    // Nothing fixed yet: both still fail, and say so.
    let r = projector::dead_letters::retry(&cfg, "hostile").unwrap();
    assert_eq!((r.applied, r.still_failing), (0, 2));

    // Fix the first one only.
    lines[300] = lines[300].replace("Panic", "Fine");
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let r = projector::dead_letters::retry(&cfg, "hostile").unwrap();
    assert_eq!((r.applied, r.still_failing), (1, 1));
    assert_eq!(count("SELECT count(*) AS n FROM seen"), all - 1);
    let left: Vec<serde_json::Value> = query(
        &data,
        "hostile",
        "SELECT event_id, error FROM _projector_dead_letters",
    );
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["event_id"], "bad-2");
    assert!(
        left[0]["error"].as_str().unwrap().contains("boom at bad-2"),
        "{left:?}"
    );
    let cp: Vec<serde_json::Value> = query(
        &data,
        "hostile",
        "SELECT commit_position FROM _projector_checkpoint",
    );
    assert_eq!(
        cp[0]["commit_position"],
        lines.len() as u64,
        "the checkpoint does not move back"
    );
}
