//! Python and JavaScript guests: the project's sources and the SDK (built into this
//! binary) are staged in a temporary folder with the WIT, then compiled by the pinned
//! tools `scripts/setup-guest-langs.sh` installs: componentize-py (`--stub-wasi`) or jco
//! with the QuickJS backend (`--backend-qjs-stub-wasi`). Either way the component
//! imports nothing but the projection world.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use super::Language;

const WIT: &str = include_str!("../../../wit/v0.1/projection.wit");
const PYTHON_SDK: &str = include_str!("../../../projections/sdk-python/projector_sdk.py");
const JS_SDK: &str = include_str!("../../../projections/sdk-js/projector-sdk.js");

/// Where the pinned guest tools live: `$PROJECTOR_TOOLS`, else `~/.cache/projector/tools`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("PROJECTOR_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache/projector/tools"),
    }
}

/// Build a Python or JavaScript project.
pub fn build(lang: Language, dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let dir = std::fs::canonicalize(dir).with_context(|| format!("finding {}", dir.display()))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "projection".into());
    let out = match out {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("target/projections").join(format!("{name}.wasm")),
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let out = std::path::absolute(&out)?;
    let stage = tempfile::tempdir().context("creating a staging folder")?;
    let wit = stage.path().join("wit");
    std::fs::create_dir_all(&wit)?;
    std::fs::write(wit.join("projection.wit"), WIT)?;
    let src = stage.path().join("src");
    std::fs::create_dir_all(&src)?;
    let (exts, sdk_file, sdk): (&[&str], &str, &str) = match lang {
        Language::Python => (&["py"], "projector_sdk.py", PYTHON_SDK),
        _ => (&["js", "mjs"], "projector-sdk.js", JS_SDK),
    };
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let wanted = path
            .extension()
            .is_some_and(|x| exts.iter().any(|e| x == *e));
        if let Some(file) = path.file_name().filter(|_| wanted && path.is_file()) {
            std::fs::copy(&path, src.join(file))
                .with_context(|| format!("staging {}", path.display()))?;
        }
    }
    std::fs::write(src.join(sdk_file), sdk)?;
    let tools = tools_dir();
    let mut cmd = match lang {
        Language::Python => {
            let tool = tools.join("py/bin/componentize-py");
            need(&tool, "componentize-py", "py")?;
            let mut c = Command::new(tool);
            c.arg("-d")
                .arg(&wit)
                .args(["-w", "projection", "componentize", "app", "-p"])
                .arg(&src)
                .arg("--stub-wasi")
                .arg("-o")
                .arg(&out)
                .env_remove("VIRTUAL_ENV")
                .env_remove("PYTHONPATH");
            c
        }
        _ => {
            let tool = tools.join("js/node_modules/.bin/jco");
            need(&tool, "jco", "js")?;
            let mut c = Command::new(tool);
            c.arg("componentize")
                .arg(src.join("app.js"))
                .arg("--wit")
                .arg(&wit)
                .args([
                    "-n",
                    "projection",
                    "--backend",
                    "qjs",
                    "--backend-qjs-disable-async",
                    "--backend-qjs-stub-wasi",
                    "-o",
                ])
                .arg(&out);
            c
        }
    };
    cmd.current_dir(&src);
    tracing::info!(project = %dir.display(), language = ?lang, "building guest");
    let output = cmd.output().context("running the guest compiler")?;
    if !output.status.success() {
        anyhow::bail!(
            "building {} failed: {}{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(out)
}

/// Fail with what to install when a tool is missing.
fn need(tool: &Path, what: &str, which: &str) -> Result<()> {
    if tool.exists() {
        return Ok(());
    }
    anyhow::bail!(
        "{what} is not installed ({} is missing): run `bash scripts/setup-guest-langs.sh {which}` \
         from a Projector checkout, or set PROJECTOR_TOOLS to where it is installed",
        tool.display()
    )
}
