//! `projector new`: a projection project over the shop events.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use projector::toolchain::Language;

/// A guest language.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Lang {
    /// A cargo crate using projector-sdk.
    Rust,
    /// app.py with the Python SDK (componentize-py).
    #[value(alias = "py")]
    Python,
    /// app.js with the JavaScript SDK (jco, QuickJS).
    #[value(alias = "javascript")]
    Js,
}

/// Flags of `projector new`.
#[derive(clap::Args)]
pub struct Args {
    /// The folder to create; its name is the projection's name.
    dir: PathBuf,
    /// The language.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
}

/// Create the project and say what to do next.
pub fn run(a: Args) -> Result<ExitCode> {
    let lang = match a.lang {
        Lang::Rust => Language::Rust,
        Lang::Python => Language::Python,
        Lang::Js => Language::JavaScript,
    };
    let created = projector::authoring::scaffold::create(&a.dir, lang)?;
    println!(
        "created {} ({lang:?}) in {}",
        created.name,
        created.dir.display()
    );
    for f in &created.files {
        println!("  {}", f.display());
    }
    if let Some(ws) = &created.workspace {
        let how = if created.added_member {
            "added to the members of"
        } else {
            "a member of"
        };
        println!("  {how} the workspace {}", ws.display());
    }
    let dir = a.dir.display();
    println!("next: projector test {dir}    (then see {dir}/README.md)");
    Ok(ExitCode::SUCCESS)
}
