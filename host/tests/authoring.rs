//! `projector new`, `test` and `events`: a new project in each language passes its own
//! case out of the box and fails with a diff naming the column once an expectation
//! changes; the event survey of a shop file; Rust projects join the projections workspace.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use projector::authoring::{cases, scaffold, survey};
use projector::toolchain::Language;

fn projector(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.success(),
        format!("{stdout}\n--- stderr:\n{stderr}"),
    )
}

/// New project outside the repository → `test` passes (and a second run does not
/// rebuild) → a changed expectation fails, naming the column.
fn round_trip(lang: Language, name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    let created = scaffold::create(&dir, lang).unwrap();
    assert!(created.workspace.is_none());
    assert!(dir.join("README.md").exists() && dir.join("tests/order_lifecycle.toml").exists());

    let t0 = Instant::now();
    let (ok, out) = projector(&["test"], &dir);
    assert!(ok, "{out}");
    assert!(out.contains("PASS  an order is created"), "{out}");
    let first = t0.elapsed();

    let t0 = Instant::now();
    let built = cases::build_cached(&dir, false).unwrap();
    assert!(!built.rebuilt, "a second run must not rebuild");
    let loaded = t0.elapsed();
    let all = cases::load_cases(&dir).unwrap();
    let t0 = Instant::now();
    let outcome = cases::run_case(&built, &all[0]).unwrap();
    assert!(outcome.passed(), "{:?}", outcome.problems);
    eprintln!(
        "{name}: first `projector test` {:.1}s; cached: load {:.3}s, one case {:.3}s",
        first.as_secs_f64(),
        loaded.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    let case = dir.join("tests/order_lifecycle.toml");
    let text = std::fs::read_to_string(&case).unwrap();
    std::fs::write(
        &case,
        text.replace("status = \"shipped\"", "status = \"confirmed\""),
    )
    .unwrap();
    let (ok, out) = projector(&["test"], &dir);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  an order is created"), "{out}");
    assert!(
        out.contains("orders: row order_id = \"O1\": column `status`: expected \"confirmed\", got \"shipped\""),
        "{out}"
    );
    assert!(
        out.contains("up to date"),
        "an edited case must not rebuild: {out}"
    );
    tmp
}

#[test]
fn rust_project_round_trip() {
    let tmp = round_trip(Language::Rust, "authoring-rs");
    let dir = tmp.path().join("authoring-rs");
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(
        cargo.contains("[workspace]") && cargo.contains("projections/sdk"),
        "{cargo}"
    );

    let built = cases::build_cached(&dir, false).unwrap();
    let run = |text: &str| {
        let case = cases::parse_case(Path::new("x.toml"), text).unwrap();
        cases::run_case(&built, &case).unwrap().problems
    };
    let created = r#"
        [[given]]
        stream = "order-1"
        type = "OrderCreated"
        data = { orderId = "O1", customerId = "U1", items = [{ quantity = 2, priceCents = 5 }] }
    "#;
    // Missing and unexpected rows; a column the table lacks.
    let p = run(&format!(
        "{created}\n[[then.orders]]\norder_id = \"O9\"\ncolour = \"red\"\n"
    ));
    assert!(p.iter().any(|p| p.contains("no column `colour`")), "{p:?}");
    assert!(
        p.iter()
            .any(|p| p.contains("missing row { order_id = \"O9\" }")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|p| p.contains("unexpected row { order_id = \"O1\", customer_id = \"U1\", status = \"created\", item_count = 2, total_cents = 10 }")),
        "{p:?}"
    );
    // Expected errors.
    let bad = "error = \"invalid data\"\n[[given]]\nstream = \"order-1\"\ntype = \"OrderCreated\"\ndata = '{\"orderId\": 1}'\n";
    assert_eq!(run(bad), Vec::<String>::new());
    let p = run(&format!("error = \"invalid data\"\n{created}"));
    assert!(p[0].contains("but every event was handled"), "{p:?}");
    // No events at all: an empty table.
    assert_eq!(run("then.orders = []"), Vec::<String>::new());
}

#[test]
fn python_project_round_trip() {
    round_trip(Language::Python, "authoring-py");
}

#[test]
fn js_project_round_trip() {
    round_trip(Language::JavaScript, "authoring-js");
}

#[test]
fn events_lists_types_streams_and_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.ndjson");
    common::shop_events(&file, 7, 5_000);
    let s = survey::survey(&file.to_string_lossy(), None).unwrap();
    let shipped = s.types.iter().find(|t| t.name == "OrderShipped").unwrap();
    assert!(shipped.fields.contains_key("carrier"));
    assert_eq!(shipped.streams.keys().collect::<Vec<_>>(), ["order-"]);
    let created = s.types.iter().find(|t| t.name == "OrderCreated").unwrap();
    let price = &created.fields["items[].priceCents"];
    assert_eq!(price.count, created.count);
    assert!(price.kinds.contains("integer") && price.sample.is_some());
    assert!(s.types.iter().all(|t| !t.name.starts_with('$')));
    let limited = survey::survey(&file.to_string_lossy(), Some(10)).unwrap();
    assert_eq!(limited.events, 10);

    let (ok, out) = projector(&["events", "--source"], &file);
    assert!(ok, "{out}");
    assert!(
        out.contains("OrderShipped") && out.contains("  carrier "),
        "{out}"
    );

    // The same events from an EventStoreDB server.
    let events = esdb_test_server::read_ndjson(&file).unwrap();
    let server = esdb_test_server::TestServer::start(events).unwrap();
    let from_server = survey::survey(&server.url(), None).unwrap();
    assert_eq!(from_server.events, s.events);
    let shipped = from_server.types.iter().find(|t| t.name == "OrderShipped");
    assert!(shipped.unwrap().fields.contains_key("carrier"));
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap();
        if name == "target" || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            copy_tree(&path, &to.join(name));
        } else {
            std::fs::copy(&path, to.join(name)).unwrap();
        }
    }
}

#[test]
fn rust_project_joins_the_projections_workspace() {
    // A copy of projections/ (and wit/): the repository stays as it is.
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("projections");
    copy_tree(&common::repo().join("projections"), &ws);
    copy_tree(&common::repo().join("wit"), &tmp.path().join("wit")); // the SDK's bindings

    let dir = ws.join("authoring-member");
    let created = scaffold::create(&dir, Language::Rust).unwrap();
    assert!(created.added_member);
    assert_eq!(
        created.workspace.as_deref(),
        Some(ws.join("Cargo.toml").as_path())
    );
    let manifest = std::fs::read_to_string(ws.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("\"authoring-member\"]"), "{manifest}");
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("projector-sdk.workspace = true") && !cargo.contains("[workspace]"));
    let meta = Command::new("cargo")
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        meta.status.success(),
        "{}",
        String::from_utf8_lossy(&meta.stderr)
    );
    let (ok, out) = projector(&["test"], &dir);
    assert!(ok, "{out}");

    // A member glob already covers test-fixtures/*: the manifest stays as it is.
    let fixture = scaffold::create(&ws.join("test-fixtures/authoring-fx"), Language::Rust).unwrap();
    assert!(!fixture.added_member && fixture.workspace.is_some());
    assert_eq!(
        std::fs::read_to_string(ws.join("Cargo.toml")).unwrap(),
        manifest
    );

    // Refusals: a non-empty folder, an invalid name.
    let e = scaffold::create(&dir, Language::Python).unwrap_err();
    assert!(
        matches!(e.downcast_ref(), Some(scaffold::NewError::NotEmpty(_))),
        "{e:#}"
    );
    let e = scaffold::create(&tmp.path().join("Bad Name"), Language::Python).unwrap_err();
    assert!(
        matches!(e.downcast_ref(), Some(scaffold::NewError::InvalidName(_))),
        "{e:#}"
    );
    let e = scaffold::create(&tmp.path().join("1st"), Language::Rust).unwrap_err();
    assert!(
        matches!(e.downcast_ref(), Some(scaffold::NewError::RustName(_))),
        "{e:#}"
    );
}

#[test]
fn members_are_added_as_written() {
    let multi = "[workspace]\nmembers = [\n    \"a\",\n    \"b/*\",\n]\n\n[workspace.dependencies]\nx = 1\n";
    let out = scaffold::add_member(multi, "c").unwrap();
    assert_eq!(
        out,
        "[workspace]\nmembers = [\n    \"a\",\n    \"b/*\", \"c\",\n]\n\n[workspace.dependencies]\nx = 1\n"
    );
    let empty = "[package]\nname = \"members\"\n[workspace]\nmembers = []\n";
    assert!(
        scaffold::add_member(empty, "c")
            .unwrap()
            .ends_with("members = [\"c\"]\n")
    );
    assert_eq!(scaffold::add_member("[workspace]\n", "c"), None);
    assert!(scaffold::glob("test-fixtures/*", "test-fixtures/x"));
    assert!(!scaffold::glob("test-fixtures/*", "x"));
    assert!(scaffold::glob("order-?", "order-1"));
}
