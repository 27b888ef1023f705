//! The WASI a sandboxed module gets when its toolchain needs WASI: nothing to reach and
//! nothing that varies (no files, sockets, env or stdin; a fixed clock; seeded
//! randomness; timers that trap).

use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtx;

/// Seconds since the Unix epoch every WASI guest sees as "now": 2000-01-01T00:00:00Z.
pub const FIXED_WALL_CLOCK_SECS: u64 = 946_684_800;
/// The seed of every WASI guest's random numbers.
const RANDOM_SEED: u64 = 0x5eed;

/// A clock that never moves: replays see the same time.
struct FixedClock;

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(FIXED_WALL_CLOCK_SECS)
    }
}

impl wasmtime_wasi::HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Replace WASI's timers with a trap: a wait would block the runner thread inside a host
/// call, where neither fuel nor the epoch deadline reaches, and a projection has nothing
/// to wait for.
pub fn forbid_timers<T: 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    linker.allow_shadowing(true);
    // The WASI version wasmtime-wasi 48 defines (guests' 0.2.x imports resolve to it);
    // `a_wasi_module_cannot_wait_on_a_timer` fails if a new version stops shadowing it.
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    for name in ["subscribe-duration", "subscribe-instant"] {
        clock.func_wrap(
            name,
            move |_, _: (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
                Err(wasmtime::Error::msg(format!(
                    "a projection may not wait on a timer (wasi:clocks/monotonic-clock {name})"
                )))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The WASI context of a sandboxed module: nothing to reach, nothing that varies.
pub fn empty_wasi() -> WasiCtx {
    use rand::SeedableRng as _;
    let rng = || rand::rngs::StdRng::seed_from_u64(RANDOM_SEED);
    // The builder's defaults already give no preopens, no env, no args, a closed stdin
    // and discarded stdout/stderr; sockets and name lookup are switched off on top.
    WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(FixedClock)
        .monotonic_clock(FixedClock)
        .secure_random(rng())
        .insecure_random(rng())
        .insecure_random_seed(u128::from(RANDOM_SEED))
        .build()
}
