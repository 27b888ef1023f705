//! Builders for the manifest a projection exports.

use crate::Kind;
use crate::bindings::projector::projection0_1_0::types as wit;

/// What a projection is: name, version, interests and the tables it owns.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) event_types: Vec<String>,
    pub(crate) stream_prefixes: Vec<String>,
    pub(crate) tables: Vec<Table>,
}

impl Manifest {
    /// A manifest with no interests (sees everything) and no tables yet.
    pub fn new(name: &str, version: u32) -> Self {
        Manifest {
            name: name.to_string(),
            version,
            event_types: Vec::new(),
            stream_prefixes: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// Only these event types reach the projection.
    pub fn event_types<S: AsRef<str>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.event_types = types.into_iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    /// Only events on streams starting with one of these prefixes reach the projection.
    pub fn stream_prefixes<S: AsRef<str>>(mut self, prefixes: impl IntoIterator<Item = S>) -> Self {
        self.stream_prefixes = prefixes
            .into_iter()
            .map(|s| s.as_ref().to_string())
            .collect();
        self
    }

    /// Declare a table the projection owns.
    pub fn table(mut self, table: Table) -> Self {
        self.tables.push(table);
        self
    }

    pub(crate) fn into_wit(self) -> wit::Manifest {
        wit::Manifest {
            name: self.name,
            version: self.version,
            interests: wit::Interests {
                event_types: self.event_types,
                stream_prefixes: self.stream_prefixes,
            },
            tables: self.tables.into_iter().map(Table::into_wit).collect(),
        }
    }
}

/// A typed table: columns, primary key, indexes.
#[derive(Debug, Clone)]
pub struct Table {
    pub(crate) name: String,
    pub(crate) columns: Vec<(String, Kind, bool)>,
    pub(crate) primary_key: Vec<String>,
    pub(crate) indexes: Vec<Vec<String>>,
}

impl Table {
    /// An empty table named `name`.
    pub fn new(name: &str) -> Self {
        Table {
            name: name.to_string(),
            columns: Vec::new(),
            primary_key: Vec::new(),
            indexes: Vec::new(),
        }
    }

    /// A NOT NULL column (defaults: 0, 0.0, '', empty blob, JSON null).
    pub fn column(mut self, name: &str, kind: Kind) -> Self {
        self.columns.push((name.to_string(), kind, false));
        self
    }

    /// A column that may hold NULL (its default).
    pub fn nullable(mut self, name: &str, kind: Kind) -> Self {
        self.columns.push((name.to_string(), kind, true));
        self
    }

    /// The primary key, by column names.
    pub fn primary_key<S: AsRef<str>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.primary_key = columns
            .into_iter()
            .map(|s| s.as_ref().to_string())
            .collect();
        self
    }

    /// A secondary index, by column names.
    pub fn index<S: AsRef<str>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.indexes.push(
            columns
                .into_iter()
                .map(|s| s.as_ref().to_string())
                .collect(),
        );
        self
    }

    fn into_wit(self) -> wit::Table {
        wit::Table {
            name: self.name,
            columns: self
                .columns
                .into_iter()
                .map(|(name, kind, nullable)| wit::Column {
                    name,
                    kind,
                    nullable,
                })
                .collect(),
            primary_key: self.primary_key,
            indexes: self.indexes,
        }
    }
}
