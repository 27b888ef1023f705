//! `projector retry-dead-letters`: run dead-lettered events again through the current
//! module (after a fix), reading each event back from the source by its position.
//!
//! A retried event applies after the events that followed it; that is the price of
//! having let them through. Run it while the host is stopped (one writer per file).

use anyhow::Result;

use crate::config::Config;
use crate::runtime::Runtime;
use crate::source::{self, EventBuffer, Filter, SourceError};
use crate::store::{OpLimits, ProjectionDb};
use crate::wit::Position;

/// What a retry did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetryReport {
    /// Events that now applied (their dead letters are gone).
    pub applied: usize,
    /// Events that still fail (their dead letters say why now).
    pub still_failing: usize,
}

/// Retry every dead letter of `projection` (the module in the config's modules folder).
pub fn retry(config: &Config, projection: &str) -> Result<RetryReport> {
    let runtime = Runtime::new(config.limits.clone(), Some(config.cache_dir()))?;
    let module = runtime.find(&config.modules, projection)?;
    let schema = module.schema().clone();
    let generation =
        crate::store::Catalog::open(&config.data)?.generation_of(projection, schema.version)?;
    let mut db = ProjectionDb::open(&config.data, schema.clone(), generation)?;
    let checkpoint = db.checkpoint()?.unwrap_or_default();
    let letters = db.dead_letters()?;
    let mut report = RetryReport::default();
    let Some(&(_, first)) = letters.first() else {
        return Ok(report);
    };

    let from = (first.commit > 1).then(|| Position::at(first.commit - 1));
    let mut src = source::open(
        &config.source,
        from,
        Filter::of(&schema),
        false,
        &config.reconnect,
    )?;
    let limits = OpLimits::from(&config.limits);
    let mut buf = EventBuffer::default();
    let mut db = db;
    db.begin()?;
    for (rowid, at) in letters {
        // Read forward to the event at `at` (positions are in ascending order).
        let found = loop {
            buf.clear();
            match src.read_batch(&mut buf, 1, std::time::Duration::from_secs(1)) {
                Ok(r) if r.last.is_none() => {
                    break Err("the event is no longer in the source".to_string());
                }
                Ok(_) if buf.get(0).is_some_and(|e| e.position == at) => break Ok(()),
                Ok(r) if r.last.is_some_and(|p| p.commit >= at.commit) => {
                    break Err(
                        "the event at this position no longer matches the projection".to_string(),
                    );
                }
                Ok(_) => continue,
                Err(SourceError::BadEvent(bad)) if bad.position == at => {
                    break Err(bad.to_string());
                }
                Err(e) => continue_or(e, at)?,
            }
        };
        let outcome = found.and_then(|()| {
            let (_, result) = module.handle(Box::new(db.reader()), &buf.refs());
            let ops = result.map_err(|e| e.to_string())?;
            // The checkpoint stays where it is: this event was passed long ago.
            db.apply_batch(ops, checkpoint, limits)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        match outcome {
            Ok(()) => {
                db.settle_dead_letter(rowid, None)?;
                report.applied += 1;
            }
            Err(e) => {
                tracing::warn!(projection, position = at.commit, "still failing: {e}");
                db.settle_dead_letter(rowid, Some(&e))?;
                report.still_failing += 1;
            }
        }
    }
    db.commit()?;
    Ok(report)
}

/// A malformed event before the one we want is someone else's problem: read past it.
fn continue_or(e: SourceError, at: Position) -> Result<()> {
    match e {
        SourceError::BadEvent(bad) if bad.position.commit < at.commit => Ok(()),
        e => Err(e.into()),
    }
}
