//! Hostile fixture: bypasses the SDK's checks to send the host an op for a table it
//! never declared, after a legitimate one (events of type `Evil`), or ops whose packing
//! is cut short (`Garbled`). The host must reject the whole batch.

use projector_sdk::__private::bindings::projector::projection0_1_0::types::{
    Column, ColumnKind, HandleError, Interests, Manifest, Op, RowOp, Table, Value,
};

struct Undeclared;

impl projector_sdk::__private::Guest for Undeclared {
    fn manifest() -> Manifest {
        Manifest {
            name: "undeclared-table".into(),
            version: 1,
            interests: Interests {
                event_types: vec![],
                stream_prefixes: vec![],
            },
            tables: vec![Table {
                name: "things".into(),
                columns: vec![Column {
                    name: "id".into(),
                    kind: ColumnKind::Text,
                    nullable: false,
                }],
                primary_key: vec!["id".into()],
                indexes: vec![],
            }],
        }
    }

    fn handle(batch: Vec<u8>) -> Result<Vec<u8>, HandleError> {
        let events = projector_sdk::__private::events(&batch)?;
        let mut ops = Vec::new();
        for e in &events {
            ops.push(Op::Upsert(RowOp {
                table: "things".into(),
                row: vec![Value::Text(e.event_id.clone())],
            }));
            // Events whose type is "Evil" also write into a table the module never declared.
            if e.event_type == "Evil" {
                ops.push(Op::Upsert(RowOp {
                    table: "sqlite_master".into(),
                    row: vec![Value::Text("x".into())],
                }));
            }
        }
        let mut packed = projector_sdk::__private::pack_ops(&ops);
        if events.iter().any(|e| e.event_type == "Garbled") {
            // The last op's value ends three bytes early.
            packed.truncate(packed.len() - 3);
        }
        Ok(packed)
    }
}

projector_sdk::__private::bindings::__export_projection!(Undeclared);
