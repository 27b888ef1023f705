//! `projector test`: given/when/then cases stored beside a projection, in
//! `<project>/tests/*.toml`, one case per file:
//!
//! ```toml
//! name = "an order ships"          # optional: defaults to the file's name
//! # error = "substring"            # instead of `then`: the run must fail with this in the error
//!
//! [[given]]                        # events, in order; [[when]] events follow the given ones
//! stream = "order-1"
//! type = "OrderCreated"
//! data = { orderId = "O1", customerId = "U1", items = [] }   # or a JSON string
//! # optional: id = "…", revision = 0, metadata = { … }, created = 1700000000000
//!
//! [[when]]
//! stream = "order-1"
//! type = "OrderShipped"
//! data = '{"orderId": "O1", "carrier": "DHL"}'
//!
//! [[then.orders]]                  # all rows of `orders`, any order, matched by primary key
//! order_id = "O1"                  # the key columns are required
//! status = "shipped"               # other columns left out are not compared
//! ```
//!
//! Tables not named under `then` are not checked (`then.orders = []` expects none).
//! Integers and reals compare by value, booleans as 1/0, a `json` column against an
//! inline table, array or JSON text (compared as JSON), a blob against its hex.
//!
//! The project is built once per change of its sources (the module is cached in the
//! machine's compile cache folder under `builds/`, keyed by a hash of the sources), then
//! each case runs through the real host ([`crate::verify::run_into`]) with the host's
//! default limits, over a temporary NDJSON file, into a temporary data folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::config::{BatchSettings, Config};
use crate::runtime::{Limits, Runtime};
use crate::schema::{Schema, TableSchema};
use crate::toolchain::Language;
use crate::wit::ColumnKind;

const PYTHON_SDK: &str = include_str!("../../../projections/sdk-python/projector_sdk.py");
const JS_SDK: &str = include_str!("../../../projections/sdk-js/projector-sdk.js");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    name: Option<String>,
    error: Option<String>,
    #[serde(default)]
    given: Vec<EventSpec>,
    #[serde(default)]
    when: Vec<EventSpec>,
    then: Option<BTreeMap<String, Vec<toml::Table>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    data: toml::Value,
    id: Option<String>,
    revision: Option<u64>,
    metadata: Option<toml::Value>,
    created: Option<toml::Value>,
}

/// What a case expects.
#[derive(Debug, Clone)]
pub enum Expect {
    /// These rows, per table (each row: column → value).
    Tables(BTreeMap<String, Vec<toml::Table>>),
    /// A failed run whose error contains this.
    Error(String),
}

/// One case, read from its file.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Its events as NDJSON lines (given, then when).
    pub events: Vec<String>,
    /// What it expects.
    pub expect: Expect,
}

/// Every case of the project in `dir` (`tests/*.toml`, by file name).
pub fn load_cases(dir: &Path) -> Result<Vec<Case>> {
    let tests = dir.join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests)
        .with_context(|| format!("reading {} (where the cases are)", tests.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            parse_case(f, &text).with_context(|| format!("invalid case {}", f.display()))
        })
        .collect()
}

/// Parse one case file's text.
pub fn parse_case(file: &Path, text: &str) -> Result<Case> {
    let c: CaseFile = toml::from_str(text)?;
    let expect = match (c.error, c.then) {
        (Some(_), Some(_)) => anyhow::bail!("a case expects either `then` tables or an `error`"),
        (Some(e), None) => Expect::Error(e),
        (None, then) => Expect::Tables(then.unwrap_or_default()),
    };
    let events = c
        .given
        .iter()
        .chain(&c.when)
        .enumerate()
        .map(|(i, e)| event_line(e).with_context(|| format!("event {}", i + 1)))
        .collect::<Result<_>>()?;
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
    Ok(Case {
        name: c.name.or(stem).unwrap_or_default(),
        file: file.to_path_buf(),
        events,
        expect,
    })
}

/// One event as a line of the NDJSON event file format.
fn event_line(e: &EventSpec) -> Result<String> {
    let mut line = serde_json::Map::new();
    line.insert("stream".into(), e.stream.clone().into());
    line.insert("type".into(), e.event_type.clone().into());
    line.insert("data".into(), json_field(&e.data, "data")?);
    if let Some(id) = &e.id {
        line.insert("id".into(), id.clone().into());
    }
    if let Some(r) = e.revision {
        line.insert("revision".into(), r.into());
    }
    if let Some(m) = &e.metadata {
        line.insert("metadata".into(), json_field(m, "metadata")?);
    }
    if let Some(c) = &e.created {
        line.insert("created".into(), to_json(c));
    }
    Ok(Json::Object(line).to_string())
}

/// A table or array as JSON; a string is JSON text.
fn json_field(v: &toml::Value, what: &str) -> Result<Json> {
    match v {
        toml::Value::String(s) => serde_json::from_str(s)
            .with_context(|| format!("`{what}` is a string but not JSON text")),
        other => Ok(to_json(other)),
    }
}

/// A TOML value as JSON (dates as their text).
pub fn to_json(v: &toml::Value) -> Json {
    match v {
        toml::Value::String(s) => Json::String(s.clone()),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => (*f).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            Json::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// A project's module, built (or found in the cache) and loaded.
pub struct Built {
    /// The component file.
    pub module: PathBuf,
    /// True when this call built it; false when the cached build was current.
    pub rebuilt: bool,
    /// Time spent building (or finding) and loading it.
    pub elapsed: Duration,
    wasm: Vec<u8>,
    schema: Arc<Schema>,
}

impl Built {
    /// The module's validated manifest.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

/// The machine's compile cache folder (`$PROJECTOR_CACHE`, XDG, `~/.cache/projector/modules`).
pub fn machine_cache() -> PathBuf {
    // Parsed rather than built field by field: the defaults of every other setting.
    let config: Option<Config> = toml::from_str("source = \"\"\ndata = \"\"\nmodules = \"\"").ok();
    config
        .map(|c| c.cache_dir())
        .unwrap_or_else(|| std::env::temp_dir().join("projector-cache"))
}

/// Build the project in `dir` unless a build of the same sources is cached (or `rebuild`),
/// then load it as the host would.
pub fn build_cached(dir: &Path, rebuild: bool) -> Result<Built> {
    let t0 = Instant::now();
    let dir = std::fs::canonicalize(dir).with_context(|| format!("finding {}", dir.display()))?;
    let lang = crate::toolchain::detect(&dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cache = machine_cache();
    let builds = cache.join("builds");
    let module_of = |key: String| builds.join(format!("{name}-{}.wasm", &key[..16]));
    let mut module = module_of(source_hash(&dir, lang)?);
    let rebuilt = rebuild || !module.is_file();
    if rebuilt {
        std::fs::create_dir_all(&builds)
            .with_context(|| format!("creating {}", builds.display()))?;
        let stage = tempfile::tempdir_in(&builds).context("creating a build folder")?;
        let out = stage.path().join("module.wasm");
        crate::toolchain::build(&dir, Some(&out))?;
        // Keyed by the sources after the build: cargo may have rewritten Cargo.lock.
        module = module_of(source_hash(&dir, lang)?);
        std::fs::rename(&out, &module)
            .with_context(|| format!("moving the build to {}", module.display()))?;
        prune(&builds, &name, &module);
    }
    let wasm = std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
    let runtime = Runtime::new(Limits::default(), Some(cache))?;
    let schema = runtime
        .load(&wasm)
        .with_context(|| format!("loading {}", module.display()))?
        .schema()
        .clone();
    Ok(Built {
        module,
        rebuilt,
        elapsed: t0.elapsed(),
        wasm,
        schema,
    })
}

/// Remove older builds of the same project name (best effort).
fn prune(builds: &Path, name: &str, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(builds) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        let old = file
            .as_deref()
            .and_then(|f| f.strip_prefix(name))
            .is_some_and(|rest| {
                rest.len() == 22
                    && rest.starts_with('-')
                    && rest.ends_with(".wasm")
                    && rest[1..17].bytes().all(|b| b.is_ascii_hexdigit())
            });
        if old && path != keep {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// SHA-256 over what the build reads: the project's sources, this projector's version,
/// and the SDK (built in for Python and JavaScript; the repository's for Rust).
fn source_hash(dir: &Path, lang: Language) -> Result<String> {
    let mut files = Vec::new();
    let mut h = Sha256::new();
    h.update(format!("{} {lang:?}\n", env!("CARGO_PKG_VERSION")));
    match lang {
        Language::Rust => {
            for f in ["Cargo.toml", "Cargo.lock", "build.rs"] {
                files.push(dir.join(f));
            }
            walk(&dir.join("src"), &mut files);
            if let Some(repo) = crate::authoring::repo_dir() {
                walk(&repo.join("projections/sdk/src"), &mut files);
                walk(&repo.join("wit"), &mut files);
            }
        }
        Language::Python | Language::JavaScript => {
            let exts: &[&str] = if lang == Language::Python {
                h.update(PYTHON_SDK);
                &["py"]
            } else {
                h.update(JS_SDK);
                &["js", "mjs"]
            };
            for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
                let p = e?.path();
                if p.extension().is_some_and(|x| exts.iter().any(|e| x == *e)) {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    for f in files.iter().filter(|f| f.is_file()) {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        h.update(
            f.strip_prefix(dir)
                .unwrap_or(f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex::encode(h.finalize()))
}

/// Every file under `dir`, recursively (nothing when it does not exist).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// How one case went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The case's name.
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// What differs from the expectation; empty when the case passed.
    pub problems: Vec<String>,
    /// Time the case took.
    pub elapsed: Duration,
}

impl Outcome {
    /// True when the case passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Run one case through the host and compare. Errs only when the case could not run at
/// all (no temporary folder, an unreadable database); a failing module is a problem.
pub fn run_case(built: &Built, case: &Case) -> Result<Outcome> {
    let t0 = Instant::now();
    let work = tempfile::tempdir().context("creating a temporary folder")?;
    let source = work.path().join("events.ndjson");
    let mut text = case.events.join("\n");
    text.push('\n');
    std::fs::write(&source, text).with_context(|| format!("writing {}", source.display()))?;
    let data = work.path().join("data");
    let run = crate::verify::run_into(
        &built.wasm,
        &source.to_string_lossy(),
        &Limits::default(),
        BatchSettings::default().max_events,
        &data,
    );
    let problems = match (&case.expect, run) {
        (Expect::Error(want), Err(e)) => {
            let got = format!("{e:#}");
            if got.contains(want.as_str()) {
                Vec::new()
            } else {
                vec![format!("expected an error containing {want:?}, got: {got}")]
            }
        }
        (Expect::Error(want), Ok(())) => vec![format!(
            "expected an error containing {want:?}, but every event was handled"
        )],
        (Expect::Tables(_), Err(e)) => vec![format!("the run failed: {e:#}")],
        (Expect::Tables(then), Ok(())) => compare(&data, &built.schema, then)?,
    };
    Ok(Outcome {
        name: case.name.clone(),
        file: case.file.clone(),
        problems,
        elapsed: t0.elapsed(),
    })
}

/// The differences between the tables under `data` and `then`, one line each.
pub fn compare(
    data: &Path,
    schema: &Schema,
    then: &BTreeMap<String, Vec<toml::Table>>,
) -> Result<Vec<String>> {
    let path = crate::store::version_path(data, &schema.name, schema.version);
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut problems = Vec::new();
    for (table, expected) in then {
        let Some((_, t)) = schema.table(table) else {
            let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
            problems.push(format!(
                "{table}: no such table (the projection declares: {})",
                names.join(", ")
            ));
            continue;
        };
        let actual = read_rows(&conn, t)?;
        let mut seen = BTreeSet::new();
        for (i, row) in expected.iter().enumerate() {
            let mut want: Vec<Option<Json>> = vec![None; t.columns.len()];
            for (col, v) in row {
                match t.by_name.get(col) {
                    Some(&c) => want[c] = Some(to_json(v)),
                    None => problems.push(format!(
                        "{table}: expected row {} names no column `{col}` (columns: {})",
                        i + 1,
                        t.columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
            let key: Option<Vec<Json>> = t.primary_key.iter().map(|&c| want[c].clone()).collect();
            let Some(key) = key else {
                problems.push(format!(
                    "{table}: expected row {} lacks a primary key column ({})",
                    i + 1,
                    t.primary_key
                        .iter()
                        .map(|&c| t.columns[c].name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            };
            let k = key_of(&key);
            if !seen.insert(k.clone()) {
                problems.push(format!(
                    "{table}: row {} is expected twice",
                    show_key(t, &key)
                ));
                continue;
            }
            let Some(got) = actual.get(&k) else {
                problems.push(format!("{table}: missing row {}", show_row(t, &want)));
                continue;
            };
            for (c, w) in want.iter().enumerate() {
                if let Some(w) = w.as_ref().filter(|w| !same(w, &got[c], t.columns[c].kind)) {
                    problems.push(format!(
                        "{table}: row {}: column `{}`: expected {w}, got {}",
                        show_key(t, &key),
                        t.columns[c].name,
                        got[c]
                    ));
                }
            }
        }
        for (k, row) in &actual {
            if !seen.contains(k) {
                let row: Vec<Option<Json>> = row.iter().cloned().map(Some).collect();
                problems.push(format!("{table}: unexpected row {}", show_row(t, &row)));
            }
        }
    }
    Ok(problems)
}

/// Rows of a table by primary key (canonical JSON), values in column order.
fn read_rows(conn: &Connection, t: &TableSchema) -> Result<BTreeMap<String, Vec<Json>>> {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    let mut stmt = conn.prepare(&format!("SELECT {} FROM \"{}\"", cols.join(", "), t.name))?;
    let mut rows = stmt.query([])?;
    let mut out = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let values = (0..cols.len())
            .map(|i| row.get_ref(i).map(sql_json))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let key: Vec<Json> = t.primary_key.iter().map(|&c| values[c].clone()).collect();
        out.insert(key_of(&key), values);
    }
    Ok(out)
}

fn sql_json(v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => f.into(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => hex::encode(b).into(),
    }
}

/// A key's canonical text: whole reals as integers, booleans as 1/0.
fn key_of(key: &[Json]) -> String {
    let norm: Vec<Json> = key
        .iter()
        .map(|v| match v {
            Json::Bool(b) => i64::from(*b).into(),
            Json::Number(n) => match n.as_f64() {
                Some(f) if n.as_i64().is_none() && f.fract() == 0.0 && f.abs() < 9e15 => {
                    (f as i64).into()
                }
                _ => v.clone(),
            },
            other => other.clone(),
        })
        .collect();
    Json::Array(norm).to_string()
}

/// Does an expected value match the stored one?
fn same(want: &Json, got: &Json, kind: ColumnKind) -> bool {
    match (want, got) {
        (Json::Number(w), Json::Number(g)) => match (w.as_i64(), g.as_i64()) {
            (Some(w), Some(g)) => w == g,
            _ => w.as_f64() == g.as_f64(),
        },
        (Json::Bool(b), Json::Number(_)) => same(&i64::from(*b).into(), got, kind),
        (_, Json::String(text)) if matches!(kind, ColumnKind::Json) => {
            let parsed = serde_json::from_str::<Json>(text).ok();
            let want_parsed = match want {
                Json::String(s) => serde_json::from_str::<Json>(s).ok(),
                other => Some(other.clone()),
            };
            want == got || (parsed.is_some() && parsed == want_parsed)
        }
        _ => want == got,
    }
}

fn show_key(t: &TableSchema, key: &[Json]) -> String {
    t.primary_key
        .iter()
        .zip(key)
        .map(|(&c, v)| format!("{} = {v}", t.columns[c].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row as a TOML inline table (columns without a value left out).
fn show_row(t: &TableSchema, row: &[Option<Json>]) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .zip(row)
        .filter_map(|(c, v)| v.as_ref().map(|v| format!("{} = {v}", c.name)))
        .collect();
    format!("{{ {} }}", cols.join(", "))
}
