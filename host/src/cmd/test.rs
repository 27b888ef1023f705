//! `projector test`: run a projection's given/when/then cases (`<dir>/tests/*.toml`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use projector::authoring::cases;

/// Flags of `projector test`.
#[derive(clap::Args)]
pub struct Args {
    /// The projection's folder (its cases are in tests/*.toml).
    dir: PathBuf,
    /// Build even when a build of the same sources is cached.
    #[arg(long)]
    rebuild: bool,
}

/// Build if needed, run every case, print PASS/FAIL and the differences; exit 1 on a failure.
pub fn run(a: Args) -> Result<ExitCode> {
    let cases = cases::load_cases(&a.dir)?;
    if cases.is_empty() {
        anyhow::bail!("no cases in {}/tests (*.toml)", a.dir.display());
    }
    let built = cases::build_cached(&a.dir, a.rebuild)?;
    let how = if built.rebuilt { "built" } else { "up to date" };
    println!(
        "{} v{}: {how} ({:.1}s) {}",
        built.schema().name,
        built.schema().version,
        built.elapsed.as_secs_f64(),
        built.module.display()
    );
    let mut failed = 0;
    for case in &cases {
        let o = cases::run_case(&built, case)?;
        let file = o.file.file_name().unwrap_or_default().to_string_lossy();
        let mark = if o.passed() { "PASS" } else { "FAIL" };
        println!(
            "{mark}  {}  ({file}, {:.2}s)",
            o.name,
            o.elapsed.as_secs_f64()
        );
        for p in &o.problems {
            println!("      {p}");
        }
        failed += usize::from(!o.passed());
    }
    println!(
        "{} cases: {} passed, {failed} failed",
        cases.len(),
        cases.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
