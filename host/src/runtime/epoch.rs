//! The epoch ticker: advances the engine's epoch so call deadlines fire. It holds the
//! engine weakly and ends when the last user of the engine (a runtime or any module
//! that outlived it) is gone, so a module keeps its deadline as long as it exists.

use std::time::Duration;

use anyhow::{Context as _, Result};
use wasmtime::Engine;

/// Epoch ticks per second: the deadline's resolution.
pub const TICKS_PER_SEC: u64 = 100;

/// Start the ticker thread of `engine`.
pub fn start(engine: &Engine) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(1000 / TICKS_PER_SEC));
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .context("starting the epoch ticker")?;
    Ok(())
}

/// Epoch ticks in a deadline of `ms` milliseconds (at least one).
pub fn ticks(ms: u64) -> u64 {
    (ms * TICKS_PER_SEC / 1000).max(1)
}
