//! Tally, version 3, with its event types misspelt: it matches no event, so its table
//! would go from rows to none. The release rules must hold it.
use projector_sdk::prelude::*;

struct Tally;

impl Projection for Tally {
    fn manifest() -> Manifest {
        Manifest::new("tally", 3)
            .event_types(["Aa", "Bb", "Cc"])
            .stream_prefixes(["t-"])
            .table(
                Table::new("counts")
                    .column("event_type", Kind::Text)
                    .column("n", Kind::Integer)
                    .column("code", Kind::Text)
                    .primary_key(["event_type"]),
            )
    }

    fn handle(ctx: &mut Ctx, event: &Event) -> Result<()> {
        ctx.increment("counts", event.event_type.as_str(), &[("n", 1i64.into())])
    }
}

register_projection!(Tally);
