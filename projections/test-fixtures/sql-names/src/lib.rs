//! Hostile fixture: declares a table whose name carries SQL. The host must refuse the
//! module at load, before any SQL is built from the name.

use projector_sdk::prelude::*;

struct SqlNames;

impl Projection for SqlNames {
    fn manifest() -> Manifest {
        Manifest::new("sql-names", 1).table(
            Table::new("t\" (x); DROP TABLE orders; --")
                .column("id", Kind::Text)
                .primary_key(["id"]),
        )
    }

    fn handle(_ctx: &mut Ctx, _event: &Event) -> Result<()> {
        Ok(())
    }
}

register_projection!(SqlNames);
