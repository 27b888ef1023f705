//! Op validation: every op of a batch is checked against the manifest's tables and the
//! output caps before anything is written, so a bad op refuses the whole batch.

use crate::schema::{ColumnSchema, Schema};
use crate::wit::{ColumnKind, Op, Value};

/// Why a batch's ops were refused; nothing of the batch was written.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// An op names a table the manifest does not declare.
    #[error("op {index}: table `{table}` is not declared in the manifest")]
    UndeclaredTable {
        /// The op's index in the batch.
        index: usize,
        /// The table it named.
        table: String,
    },
    /// An op does not fit its table (key, kinds, sizes).
    #[error("op {index} on `{table}`: {reason}")]
    Invalid {
        /// The op's index in the batch.
        index: usize,
        /// Its table.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// More ops than one batch may return.
    #[error("the batch returned {count} ops, over the limit of {limit}")]
    TooManyOps {
        /// Ops returned.
        count: usize,
        /// The cap.
        limit: usize,
    },
    /// SQLite failed (disk full, I/O): not the module's fault.
    #[error("writing the batch failed: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Output caps applied to every batch.
#[derive(Debug, Clone, Copy)]
pub struct OpLimits {
    /// Ops one batch may carry.
    pub max_ops: usize,
    /// Bytes one text or blob value may hold.
    pub max_value_bytes: usize,
    /// Bytes of text and blobs one row may hold.
    pub max_row_bytes: usize,
}

impl From<&crate::runtime::Limits> for OpLimits {
    fn from(l: &crate::runtime::Limits) -> Self {
        OpLimits {
            max_ops: l.max_ops_per_batch,
            max_value_bytes: l.max_value_bytes,
            max_row_bytes: l.max_row_bytes,
        }
    }
}

/// Whether a column of `kind` stores `v` as it is, without SQLite converting it (an
/// integer in a REAL column becomes the real it equals; NULL is no kind).
pub(crate) fn fits(v: &Value, kind: ColumnKind) -> bool {
    match (v, kind) {
        (Value::Integer(_), ColumnKind::Integer | ColumnKind::Real) => true,
        (Value::Real(r), ColumnKind::Real) => r.is_finite(),
        (Value::Text(_), ColumnKind::Text | ColumnKind::Json) => true,
        (Value::Blob(_), ColumnKind::Blob) => true,
        _ => false,
    }
}

/// Check one value against its column: kind, NULL-ability, size, JSON validity.
pub(crate) fn check_value(col: &ColumnSchema, v: &Value, limits: OpLimits) -> Result<(), String> {
    let ok = match v {
        Value::Null => col.nullable,
        _ if !fits(v, col.kind) => false,
        Value::Text(s) if matches!(col.kind, ColumnKind::Json) => {
            s.len() <= limits.max_value_bytes
                && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
        }
        Value::Text(s) => s.len() <= limits.max_value_bytes,
        Value::Blob(b) => b.len() <= limits.max_value_bytes,
        _ => true,
    };
    if ok {
        return Ok(());
    }
    let size = match v {
        Value::Text(s) => s.len(),
        Value::Blob(b) => b.len(),
        _ => 0,
    };
    Err(if size > limits.max_value_bytes {
        format!(
            "column `{}`: value of {size} bytes is over the {} byte limit",
            col.name, limits.max_value_bytes
        )
    } else if matches!(v, Value::Null) {
        format!("column `{}` is NOT NULL", col.name)
    } else {
        format!(
            "column `{}` ({}) cannot hold {}",
            col.name,
            crate::schema::sql_type(col.kind).to_lowercase(),
            match (v, col.kind) {
                // Text fits a JSON column: it failed as JSON.
                (Value::Text(_), ColumnKind::Json) => "text (or invalid JSON)",
                _ => describe(v),
            }
        )
    })
}

/// What kind of value `v` is, for error messages ("an integer", "text", ...).
pub(crate) fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(r) if !r.is_finite() => "a non-finite real",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "a blob",
    }
}

/// Check an op against the declared tables; returns (table index, delta column indexes).
pub(crate) fn validate(
    schema: &Schema,
    index: usize,
    op: &Op,
    limits: OpLimits,
) -> Result<(usize, Vec<usize>), OpError> {
    let name = match op {
        Op::Upsert(r) => &r.table,
        Op::Delete(k) => &k.table,
        Op::Increment(a) => &a.table,
    };
    let Some((ti, t)) = schema.table(name) else {
        return Err(OpError::UndeclaredTable {
            index,
            table: name.clone(),
        });
    };
    let invalid = |reason: String| OpError::Invalid {
        index,
        table: name.clone(),
        reason,
    };
    let check_key = |key: &[Value]| -> Result<(), OpError> {
        if key.len() != t.primary_key.len() {
            return Err(invalid(format!(
                "the key has {} columns, got {} values",
                t.primary_key.len(),
                key.len()
            )));
        }
        for (v, &c) in key.iter().zip(&t.primary_key) {
            check_value(&t.columns[c], v, limits).map_err(invalid)?;
        }
        Ok(())
    };
    match op {
        Op::Upsert(r) => {
            if r.row.len() != t.columns.len() {
                return Err(invalid(format!(
                    "the table has {} columns, the row has {} values",
                    t.columns.len(),
                    r.row.len()
                )));
            }
            for (v, c) in r.row.iter().zip(&t.columns) {
                check_value(c, v, limits).map_err(invalid)?;
            }
            let bytes: usize = r
                .row
                .iter()
                .map(|v| match v {
                    Value::Text(s) => s.len(),
                    Value::Blob(b) => b.len(),
                    _ => 0,
                })
                .sum();
            if bytes > limits.max_row_bytes {
                return Err(invalid(format!(
                    "row of {bytes} bytes is over the {} byte limit",
                    limits.max_row_bytes
                )));
            }
            Ok((ti, Vec::new()))
        }
        Op::Delete(k) => {
            check_key(&k.key)?;
            Ok((ti, Vec::new()))
        }
        Op::Increment(a) => {
            check_key(&a.key)?;
            if a.deltas.is_empty() {
                return Err(invalid("increment with no deltas".into()));
            }
            let mut cols = Vec::with_capacity(a.deltas.len());
            for d in &a.deltas {
                let Some(&c) = t.by_name.get(&d.column) else {
                    return Err(invalid(format!("no column `{}`", d.column)));
                };
                if t.primary_key.contains(&c) || cols.contains(&c) {
                    return Err(invalid(format!(
                        "column `{}` cannot be incremented here",
                        d.column
                    )));
                }
                let numeric = match (t.columns[c].kind, &d.by) {
                    (ColumnKind::Integer, Value::Integer(_)) => true,
                    (ColumnKind::Real, Value::Integer(_)) => true,
                    (ColumnKind::Real, Value::Real(r)) => r.is_finite(),
                    _ => false,
                };
                if !numeric {
                    return Err(invalid(format!(
                        "column `{}` cannot be incremented by {}",
                        d.column,
                        describe(&d.by)
                    )));
                }
                cols.push(c);
            }
            Ok((ti, cols))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::{AddOp, Column, Delta, Interests, KeyOp, Manifest, RowOp, Table};

    fn schema() -> Schema {
        let col = |name: &str, kind, nullable| Column {
            name: name.into(),
            kind,
            nullable,
        };
        Schema::new(&Manifest {
            name: "p".into(),
            version: 1,
            interests: Interests {
                event_types: vec![],
                stream_prefixes: vec![],
            },
            tables: vec![Table {
                name: "t".into(),
                columns: vec![
                    col("k", ColumnKind::Text, false),
                    col("n", ColumnKind::Integer, false),
                    col("doc", ColumnKind::Json, true),
                ],
                primary_key: vec!["k".into()],
                indexes: vec![],
            }],
        })
        .expect("valid manifest")
    }

    const LIMITS: OpLimits = OpLimits {
        max_ops: 10,
        max_value_bytes: 16,
        max_row_bytes: 24,
    };

    fn upsert(row: Vec<Value>) -> Op {
        Op::Upsert(RowOp {
            table: "t".into(),
            row,
        })
    }

    fn reason(op: &Op) -> String {
        validate(&schema(), 3, op, LIMITS)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn good_ops_pass_with_their_table_and_delta_columns() {
        let s = schema();
        let row = vec![Value::Text("a".into()), Value::Integer(1), Value::Null];
        assert_eq!(
            validate(&s, 0, &upsert(row), LIMITS).expect("ok"),
            (0, vec![])
        );
        let inc = Op::Increment(AddOp {
            table: "t".into(),
            key: vec![Value::Text("a".into())],
            deltas: vec![Delta {
                column: "n".into(),
                by: Value::Integer(2),
            }],
        });
        assert_eq!(validate(&s, 0, &inc, LIMITS).expect("ok"), (0, vec![1]));
    }

    #[test]
    fn bad_ops_are_refused_naming_the_op_and_the_problem() {
        let text = |s: &str| Value::Text(s.into());
        let cases = [
            (
                Op::Delete(KeyOp {
                    table: "other".into(),
                    key: vec![text("a")],
                }),
                "op 3: table `other` is not declared",
            ),
            (
                upsert(vec![text("a"), Value::Integer(1)]),
                "the table has 3 columns, the row has 2",
            ),
            (
                upsert(vec![Value::Null, Value::Integer(1), Value::Null]),
                "column `k` is NOT NULL",
            ),
            (
                upsert(vec![text("a"), text("x"), Value::Null]),
                "column `n` (integer) cannot hold text",
            ),
            (
                upsert(vec![text("a"), Value::Integer(1), text("{nope")]),
                "cannot hold text (or invalid JSON)",
            ),
            (
                upsert(vec![text(&"x".repeat(17)), Value::Integer(1), Value::Null]),
                "17 bytes is over the 16 byte limit",
            ),
            (
                upsert(vec![
                    text(&"x".repeat(12)),
                    Value::Integer(1),
                    text(&"1".repeat(13)),
                ]),
                "row of 25 bytes is over the 24 byte limit",
            ),
            (
                Op::Increment(AddOp {
                    table: "t".into(),
                    key: vec![text("a")],
                    deltas: vec![Delta {
                        column: "k".into(),
                        by: Value::Integer(1),
                    }],
                }),
                "column `k` cannot be incremented here",
            ),
            (
                Op::Increment(AddOp {
                    table: "t".into(),
                    key: vec![text("a")],
                    deltas: vec![Delta {
                        column: "n".into(),
                        by: Value::Real(0.5),
                    }],
                }),
                "column `n` cannot be incremented by a real",
            ),
        ];
        for (op, want) in cases {
            let got = reason(&op);
            assert!(got.contains(want), "{op:?}: {got}");
        }
    }
}
