//! The tally fixture: counts events per type in `counts(event_type, n, code)`, where
//! `code` names the code that last wrote the row, so tests can tell which module version
//! and which build produced a table. The hot-reload tests ship its variants one after
//! another: same version with new code, a changed table without a bump, a new version.

pub use projector_sdk;

/// Define and register the tally projection: `tally!(version, "code")`, optionally
/// `wide` for an extra column (a table change).
#[macro_export]
macro_rules! tally {
    ($version:expr, $code:expr $(, $wide:ident)?) => {
        use $crate::projector_sdk::prelude::*;

        struct Tally;

        impl Projection for Tally {
            fn manifest() -> Manifest {
                let table = Table::new("counts")
                    .column("event_type", Kind::Text)
                    .column("n", Kind::Integer)
                    .column("code", Kind::Text);
                $( let table = table.column(stringify!($wide), Kind::Text); )?
                Manifest::new("tally", $version)
                    .stream_prefixes(["t-"])
                    .table(table.primary_key(["event_type"]))
            }

            fn handle(ctx: &mut Ctx, event: &Event) -> Result<()> {
                let mut row = match ctx.get("counts", event.event_type.as_str())? {
                    Some(row) => row,
                    None => {
                        let mut row = ctx.new_row("counts", event.event_type.as_str())?;
                        row.set("n", 0i64);
                        $( row.set(stringify!($wide), ""); )?
                        row
                    }
                };
                row.add("n", 1).set("code", $code);
                ctx.save(row)
            }
        }

        $crate::projector_sdk::register_projection!(Tally);
    };
}
