//! `projector new`: a projection project over the shop events (one row per order) in
//! Rust, Python or JavaScript, with a README, a `projector.toml`, a `.gitignore` and one
//! test case. The folder's name is the projection's name.
//!
//! A Rust crate inside a cargo workspace that provides `projector-sdk` (this repository's
//! `projections/`) joins it: it is added to the workspace's `members` unless a member
//! glob already covers it. Anywhere else the crate is a workspace of its own and depends
//! on the SDK by path, in the repository this binary was built from.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::toolchain::Language;

const README: &str = include_str!("../../templates/README.md");
const CASE: &str = include_str!("../../templates/case.toml");
const CONFIG: &str = include_str!("../../templates/projector.toml");
const GITIGNORE: &str = include_str!("../../templates/gitignore");
const RUST_CARGO: &str = include_str!("../../templates/rust/Cargo.toml");
const RUST_STANDALONE: &str = include_str!("../../templates/rust/standalone.toml");
const RUST_LIB: &str = include_str!("../../templates/rust/lib.rs");
const RUST_NOTES: &str = include_str!("../../templates/notes-rust.md");
const PY_APP: &str = include_str!("../../templates/python/app.py");
const PY_PROJECT: &str = include_str!("../../templates/python/pyproject.toml");
const PY_NOTES: &str = include_str!("../../templates/notes-python.md");
const JS_APP: &str = include_str!("../../templates/js/app.js");
const JS_PACKAGE: &str = include_str!("../../templates/js/package.json");
const JS_CONFIG: &str = include_str!("../../templates/js/jsconfig.json");
const JS_TYPES: &str = include_str!("../../../projections/sdk-js/projector-sdk.d.ts");
const JS_NOTES: &str = include_str!("../../templates/notes-js.md");

/// Why `new` refused to create a project.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The folder's name is not a valid projection name.
    #[error(
        "invalid projection name {0:?} (the folder's name): use 1-64 of a-z, 0-9, '-', '_', starting with a letter or digit"
    )]
    InvalidName(String),
    /// Cargo refuses crate names that start with a digit.
    #[error("a Rust crate's name cannot start with a digit: {0:?}")]
    RustName(String),
    /// The folder exists and holds something.
    #[error("{0} exists and is not empty: give a new folder")]
    NotEmpty(PathBuf),
}

/// What `new` made.
#[derive(Debug, Clone)]
pub struct Created {
    /// The projection's name (the folder's name).
    pub name: String,
    /// The project folder (absolute).
    pub dir: PathBuf,
    /// Files written, relative to `dir`.
    pub files: Vec<PathBuf>,
    /// The workspace manifest the Rust crate joined, when it is a member of one.
    pub workspace: Option<PathBuf>,
    /// True when that manifest's `members` was edited to include the crate.
    pub added_member: bool,
}

/// Where a new Rust crate lives in cargo's eyes.
enum Home {
    /// A member of the workspace at this manifest; its new text when members must grow.
    Member(PathBuf, Option<String>),
    /// A workspace of its own.
    Standalone,
}

/// Create the project `dir` in `lang`. Refuses an invalid name or a non-empty folder.
pub fn create(dir: &Path, lang: Language) -> Result<Created> {
    let dir = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if !crate::schema::valid_projection_name(&name) {
        return Err(NewError::InvalidName(name).into());
    }
    if lang == Language::Rust && name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(NewError::RustName(name).into());
    }
    let existed = dir.exists();
    if existed && (!dir.is_dir() || std::fs::read_dir(&dir)?.next().is_some()) {
        return Err(NewError::NotEmpty(dir).into());
    }
    let fill = |t: &str| t.replace("{{name}}", &name);
    let mut files: Vec<(&str, String)> = Vec::new();
    let mut home = Home::Standalone;
    let (language, source, notes) = match lang {
        Language::Rust => {
            home = rust_home(&dir)?;
            let (deps, tail) = match &home {
                Home::Member(..) => (
                    "projector-sdk.workspace = true\nserde = { workspace = true, features = [\"derive\"] }\n".to_string(),
                    "",
                ),
                Home::Standalone => {
                    let sdk = crate::authoring::repo_dir()
                        .map(|r| r.join("projections/sdk"))
                        .context("the Rust SDK is not where this projector was built from: create the project inside a Projector checkout's projections/ folder")?;
                    let sdk = toml::Value::String(sdk.to_string_lossy().into_owned());
                    let deps = format!(
                        "projector-sdk = {{ path = {sdk} }}\nserde = {{ version = \"1\", default-features = false, features = [\"derive\", \"std\"] }}\n"
                    );
                    (deps, RUST_STANDALONE)
                }
            };
            let cargo = fill(RUST_CARGO).replace("{{dependencies}}\n", &deps) + tail;
            files.push(("Cargo.toml", cargo));
            files.push(("src/lib.rs", fill(RUST_LIB)));
            // The repository's lock: the same dependency versions, no registry lookups.
            let lock = crate::authoring::repo_dir()
                .filter(|_| matches!(home, Home::Standalone))
                .and_then(|r| std::fs::read_to_string(r.join("projections/Cargo.lock")).ok());
            if let Some(lock) = lock {
                files.push(("Cargo.lock", lock));
            }
            ("Rust", "src/lib.rs", RUST_NOTES)
        }
        Language::Python => {
            files.push(("app.py", fill(PY_APP)));
            files.push(("pyproject.toml", fill(PY_PROJECT)));
            ("Python", "app.py", PY_NOTES)
        }
        Language::JavaScript => {
            files.push(("app.js", fill(JS_APP)));
            files.push(("package.json", fill(JS_PACKAGE)));
            files.push(("jsconfig.json", JS_CONFIG.to_string()));
            files.push(("projector-sdk.d.ts", JS_TYPES.to_string()));
            ("JavaScript", "app.js", JS_NOTES)
        }
    };
    let readme = fill(README)
        .replace("{{language}}", language)
        .replace("{{source}}", source)
        .replace("{{notes}}", notes);
    files.push(("README.md", readme));
    files.push(("projector.toml", fill(CONFIG)));
    files.push((".gitignore", GITIGNORE.to_string()));
    files.push(("tests/order_lifecycle.toml", CASE.to_string()));

    let written = write_files(&dir, &files);
    if let Err(e) = written {
        if !existed {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(e);
    }
    let (workspace, added_member) = match home {
        Home::Member(manifest, Some(text)) => {
            std::fs::write(&manifest, text)
                .with_context(|| format!("adding {name} to {}", manifest.display()))?;
            (Some(manifest), true)
        }
        Home::Member(manifest, None) => (Some(manifest), false),
        Home::Standalone => (None, false),
    };
    Ok(Created {
        name,
        dir,
        files: files.iter().map(|(p, _)| PathBuf::from(p)).collect(),
        workspace,
        added_member,
    })
}

fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The nearest enclosing workspace decides: one providing `projector-sdk` is joined,
/// any other (or none) leaves the crate a workspace of its own.
fn rust_home(dir: &Path) -> Result<Home> {
    for root in dir.ancestors().skip(1) {
        let manifest = root.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let parsed: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
        let Some(ws) = parsed.get("workspace") else {
            continue;
        };
        let strings = |key: &str| -> Vec<String> {
            ws.get(key)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let rel = dir
            .strip_prefix(root)
            .unwrap_or(dir)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let excluded = strings("exclude")
            .iter()
            .any(|e| rel == *e || rel.starts_with(&format!("{}/", e.trim_end_matches('/'))));
        let has_sdk = ws
            .get("dependencies")
            .and_then(|d| d.get("projector-sdk"))
            .is_some();
        if excluded || !has_sdk {
            return Ok(Home::Standalone);
        }
        if strings("members").iter().any(|m| glob(m, &rel)) {
            return Ok(Home::Member(manifest, None));
        }
        let text = add_member(&text, &rel).with_context(|| {
            format!(
                "could not add \"{rel}\" to the members of {}: add it by hand",
                manifest.display()
            )
        })?;
        return Ok(Home::Member(manifest, Some(text)));
    }
    Ok(Home::Standalone)
}

/// `text` with `member` appended to its `[workspace]` `members` array, kept as written
/// otherwise; None when the array is not found or the result does not parse.
pub fn add_member(text: &str, member: &str) -> Option<String> {
    let (mut offset, mut in_workspace, mut key_at) = (0, false, None);
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') && !t.contains('=') {
            in_workspace = t == "[workspace]";
        } else if in_workspace
            && t.strip_prefix("members")
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            key_at = Some(offset);
            break;
        }
        offset += line.len();
    }
    let key_at = key_at?;
    let open = key_at + text[key_at..].find('[')?;
    let close = open + text[open..].find(']')?;
    let before = text[..close].trim_end();
    let quoted = toml::Value::String(member.to_string()).to_string();
    let insert = if before.ends_with('[') {
        quoted
    } else if before.ends_with(',') {
        format!(" {quoted},")
    } else {
        format!(", {quoted}")
    };
    let out = format!("{before}{insert}{}", &text[before.len()..]);
    let parsed: toml::Table = toml::from_str(&out).ok()?;
    let members = parsed.get("workspace")?.get("members")?.as_array()?;
    members
        .iter()
        .any(|m| m.as_str() == Some(member))
        .then_some(out)
}

/// Does a workspace member pattern (`sdk`, `test-fixtures/*`) match the relative path?
pub fn glob(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    p.len() == s.len()
        && p.iter()
            .zip(&s)
            .all(|(p, s)| wildcard(p.as_bytes(), s.as_bytes()))
}

/// `*` (any run) and `?` (one character) within one path segment.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}
