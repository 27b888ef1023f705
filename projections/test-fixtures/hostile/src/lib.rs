//! Hostile fixture: records every event it sees, and misbehaves on events whose
//! type asks for it: `Loop` spins forever, `Bomb` allocates until memory runs out,
//! `Panic` panics, `Huge` writes an oversized value, `Flood` sends a flood of ops,
//! `Count` keeps hidden state between events, `WrongKey` reads its table by a key of the
//! wrong kind (an integer for a text key).

use projector_sdk::prelude::*;

struct Hostile;

impl Projection for Hostile {
    fn manifest() -> Manifest {
        Manifest::new("hostile", 1).table(
            Table::new("seen")
                .column("id", Kind::Text)
                .column("payload", Kind::Text)
                .primary_key(["id"]),
        )
    }

    fn handle(ctx: &mut Ctx, event: &Event) -> Result<()> {
        match event.event_type.as_str() {
            "Loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "Bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "Panic" => panic!("boom at {}", event.event_id),
            // Hidden state kept in the instance between events: what `verify` catches.
            "Count" => {
                static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.upsert(
                    "seen",
                    vec![event.event_id.clone().into(), n.to_string().into()],
                )
            }
            "WrongKey" => ctx.get("seen", 42i64).map(|_| ()),
            "Huge" => ctx.upsert(
                "seen",
                vec![event.event_id.clone().into(), "x".repeat(2 << 20).into()],
            ),
            "Flood" => {
                for i in 0..50_000 {
                    ctx.upsert(
                        "seen",
                        vec![format!("{}-{i}", event.event_id).into(), "".into()],
                    )?;
                }
                Ok(())
            }
            _ => ctx.upsert(
                "seen",
                vec![
                    event.event_id.clone().into(),
                    event.event_type.clone().into(),
                ],
            ),
        }
    }
}

register_projection!(Hostile);
