//! WASI probe fixture: a guest built for `wasm32-wasip1`. On `ReadFile` it tries to read
//! a host file, on `Connect` to open a socket, on `Env` to list the environment, on
//! `Sleep` to wait on a timer; each attempt that fails becomes the batch's error. Every
//! other event records what the guest sees of the clock and of randomness, which must
//! not vary between replays.

use std::hash::{BuildHasher, Hasher};

use projector_sdk::prelude::*;

struct WasiProbe;

impl Projection for WasiProbe {
    fn manifest() -> Manifest {
        Manifest::new("wasi-probe", 1).table(
            Table::new("seen")
                .column("id", Kind::Text)
                .column("payload", Kind::Text)
                .primary_key(["id"]),
        )
    }

    fn handle(ctx: &mut Ctx, event: &Event) -> Result<()> {
        let payload = match event.event_type.as_str() {
            "ReadFile" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => text,
                Err(e) => return Err(format!("cannot read /etc/passwd: {e}").into()),
            },
            "Connect" => match std::net::TcpStream::connect("127.0.0.1:22") {
                Ok(_) => "connected".to_string(),
                Err(e) => return Err(format!("cannot connect to 127.0.0.1:22: {e}").into()),
            },
            "Sleep" => {
                // Were the timer allowed, this would hold the runner for 20 s.
                std::thread::sleep(std::time::Duration::from_secs(20));
                "slept".to_string()
            }
            "Env" => match std::env::vars().next() {
                Some((k, v)) => format!("{k}={v}"),
                None => return Err("no environment variables".into()),
            },
            _ => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                // RandomState draws its keys from WASI's random source.
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write(event.event_id.as_bytes());
                format!("clock={now} hash={:016x}", h.finish())
            }
        };
        ctx.upsert("seen", vec![event.event_id.clone().into(), payload.into()])
    }
}

register_projection!(WasiProbe);
