//! Benchmark fixture: the same interests as order-summary, no work at all. Its Wasm
//! time is the cost of the boundary (lowering events, a fresh instance per batch).

use projector_sdk::prelude::*;

struct Noop;

impl Projection for Noop {
    fn manifest() -> Manifest {
        Manifest::new("noop", 1)
            .event_types([
                "OrderCreated",
                "ItemAdded",
                "OrderConfirmed",
                "OrderCancelled",
                "OrderShipped",
            ])
            .stream_prefixes(["order-"])
            .table(
                Table::new("nothing")
                    .column("id", Kind::Text)
                    .primary_key(["id"]),
            )
    }

    fn handle(_ctx: &mut Ctx, _event: &Event) -> Result<()> {
        Ok(())
    }
}

register_projection!(Noop);
