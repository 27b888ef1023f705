//! `projector status`: every projection's state, position, lag and counters, from the
//! running host's API, or offline from the catalog.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use projector::Config;
use projector::api::status;
use projector::client;

/// Flags of `projector status`.
#[derive(clap::Args)]
pub struct Args {
    /// The data folder.
    #[arg(long, conflicts_with = "config")]
    data: Option<PathBuf>,
    /// The config file (its data folder).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Print the statuses.
pub fn run(a: Args) -> Result<ExitCode> {
    let data = match (a.data, a.config) {
        (Some(d), _) => d,
        (None, Some(c)) => Config::load(&c)?.data,
        (None, None) => anyhow::bail!("give --data DIR or --config FILE"),
    };
    let live = projector::store::HostLock::acquire(&data).is_err();
    let list: Vec<status::ProjectionStatus> = match client::address(&data).filter(|_| live) {
        Some(base) => {
            let r = client::request(
                &base,
                "GET",
                "/api/projections",
                client::token(&data).as_deref(),
                None,
            )?;
            anyhow::ensure!(r.status == 200, "{base} answered {}: {}", r.status, r.body);
            serde_json::from_str(&r.body).context("reading the host's answer")?
        }
        None => status::statuses(&data, &[], &mut Default::default())?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", status::table(&list));
        // Refused module files, from the catalog (the host records them as it runs).
        let refused = projector::store::Catalog::open_read_only(&data)
            .and_then(|c| c.refused())
            .context("reading the refused modules from the catalog")?;
        for r in refused {
            println!("REFUSED {}: {}", r.file, r.reason);
        }
        if !live {
            println!("(no host running on {}: from the catalog)", data.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
