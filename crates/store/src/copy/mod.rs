//! `orgplane copy`: a SQLite database onto a new PostgreSQL one.
//!
//! Guarantees:
//! - both schemas are this build's: the source must be at this build's
//!   newest migration (checked, never changed), the target is migrated by
//!   its own migration run; the bookkeeping tables are never copied;
//! - every table is copied: the tables of both sides must be the same set,
//!   and the same columns, or nothing is copied (a table added by a future
//!   migration can't be skipped silently);
//! - parents before children: the order comes from the target's foreign
//!   keys, so a new table needs no list to be kept up to date;
//! - all or nothing: every row goes in within ONE PostgreSQL transaction,
//!   read from one SQLite snapshot; the target must hold no rows but those
//!   its migrations seed ([`MIGRATION_SEEDED`]), which the source's replace;
//! - the same values: user triggers are off while rows go in (the events
//!   log keeps its `seq` numbers instead of being renumbered at commit),
//!   serial sequences continue after the highest number the source handed
//!   out, and before commit every table's row count and checksum read back
//!   from PostgreSQL must equal the source's, or the transaction rolls back.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::TryStreamExt;
use sqlx::{PgPool, Row, SqlitePool};

use crate::{Backend, Result, Store, StoreError};

mod canonical;

use canonical::{Kind, Tally, Value, dependency_order};

/// The migration bookkeeping: each database's own migration run writes it.
const BOOKKEEPING: &[&str] = &["orgplane_migrations", "orgplane_migration_checksums"];

/// Tables whose rows a migration inserts (so a freshly migrated database
/// holds them): replaced by the source's rows. A test proves no other
/// table holds a row after migrating a new database.
pub const MIGRATION_SEEDED: &[&str] = &["webhook_fanout", "workos_mirror_position"];

/// Rows per INSERT (PostgreSQL takes at most 65535 bind parameters).
const BATCH_ROWS: usize = 500;

/// What one table's copy found: the rows and their checksum, the same on
/// both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    pub table: String,
    pub rows: u64,
    pub checksum: String,
}

/// A sequence set after the copy: the next number it hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceSet {
    pub table: String,
    pub column: String,
    pub next: i64,
}

/// The copy's summary.
#[derive(Debug, Clone)]
pub struct CopyReport {
    /// The migration version both databases are at.
    pub version: i64,
    /// In the order copied (parents first).
    pub tables: Vec<TableCopy>,
    pub sequences: Vec<SequenceSet>,
}

struct Column {
    name: String,
    kind: Kind,
}

impl Store {
    /// Copies this SQLite store into `target`, a new PostgreSQL database
    /// (see the module's guarantees). Nothing is written to the target
    /// unless every table copied and verified.
    pub async fn copy_into(&self, target: &Store) -> Result<CopyReport> {
        let (Backend::Sqlite(source), Backend::Postgres(pg)) = (&self.backend, &target.backend) else {
            return Err(StoreError::Config(
                "copy reads a SQLite database (--from sqlite://…) and writes a PostgreSQL one (--to postgres://…)"
                    .into(),
            ));
        };
        let newest = crate::migrate::MIGRATIONS.last().map_or(0, |m| m.version);
        let at = sqlite_version(source).await?;
        if at != newest {
            return Err(StoreError::Config(if at < newest {
                format!(
                    "the SQLite database is at migration {at} and this build's schema is {newest}; run `orgplane migrate --database-url <the sqlite:// URL>` first, then copy"
                )
            } else {
                format!(
                    "the SQLite database is at migration {at}, newer than this build ({newest}); copy with the orgplane build that wrote it"
                )
            }));
        }
        target.migrate().await?;
        let (target_at,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM orgplane_migrations").fetch_one(pg).await?;
        if target_at != Some(newest) {
            return Err(StoreError::Config(format!(
                "the PostgreSQL database is at migration {} and the SQLite one at {newest}; copy only into a new database",
                target_at.unwrap_or(0)
            )));
        }
        copy(source, pg, newest).await
    }
}

async fn sqlite_version(source: &SqlitePool) -> Result<i64> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'orgplane_migrations'")
            .fetch_optional(source)
            .await?;
    if found.is_none() {
        return Err(StoreError::Config(
            "the SQLite database has no orgplane schema (no orgplane_migrations table); is --from the right file?"
                .into(),
        ));
    }
    let (version,): (Option<i64>,) =
        sqlx::query_as("SELECT MAX(version) FROM orgplane_migrations").fetch_one(source).await?;
    Ok(version.unwrap_or(0))
}

/// `"name"`; table and column names come from the catalogs, and one with a
/// quote in it is refused rather than escaped.
fn quoted(name: &str) -> Result<String> {
    if name.contains('"') {
        return Err(StoreError::Corrupt(format!("unexpected name {name:?} in the schema")));
    }
    Ok(format!("\"{name}\""))
}

async fn copy(source: &SqlitePool, pg: &PgPool, version: i64) -> Result<CopyReport> {
    let mut tx = pg.begin().await?;
    // A large database may take longer than the statement timeout that guards requests.
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    let tables = pg_tables(&mut tx).await?;
    // One read transaction: one snapshot of the source for every table
    // (WAL: writers may go on meanwhile; they are not part of the copy).
    let mut src = source.begin().await?;
    let report = copy_in(&mut src, &mut tx, tables, version).await?;
    src.rollback().await?;
    tx.commit().await?;
    Ok(report)
}

async fn copy_in(
    src: &mut sqlx::SqliteConnection,
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tables: BTreeMap<String, Vec<Column>>,
    version: i64,
) -> Result<CopyReport> {
    let source_tables: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut *src)
    .await?
    .into_iter()
    .filter(|t| !BOOKKEEPING.contains(&t.as_str()))
    .collect();
    let target_tables: BTreeSet<String> = tables.keys().cloned().collect();
    if source_tables != target_tables {
        let only_source: Vec<_> = source_tables.difference(&target_tables).cloned().collect();
        let only_target: Vec<_> = target_tables.difference(&source_tables).cloned().collect();
        return Err(StoreError::Config(format!(
            "the two schemas differ, nothing was copied: tables only in the SQLite database [{}], only in the PostgreSQL database [{}]",
            only_source.join(", "),
            only_target.join(", ")
        )));
    }
    let order = dependency_order(&target_tables, &pg_foreign_keys(tx).await?).map_err(StoreError::Config)?;

    let quoted_all = order.iter().map(|t| quoted(t)).collect::<Result<Vec<_>>>()?.join(", ");
    sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {quoted_all} IN EXCLUSIVE MODE"))).execute(&mut **tx).await?;
    let mut occupied = Vec::new();
    for table in &order {
        let (rows,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", quoted(table)?)))
            .fetch_one(&mut **tx)
            .await?;
        if rows > 0 && !MIGRATION_SEEDED.contains(&table.as_str()) {
            occupied.push(format!("{table} ({rows} row{})", if rows == 1 { "" } else { "s" }));
        }
    }
    if !occupied.is_empty() {
        return Err(StoreError::Config(format!(
            "the PostgreSQL database is not empty, nothing was copied: {}; copy only into a new database (createdb NAME)",
            occupied.join(", ")
        )));
    }

    let mut report = CopyReport { version, tables: Vec::new(), sequences: Vec::new() };
    for table in &order {
        let columns = &tables[table];
        let source_columns: BTreeSet<String> =
            sqlx::query_scalar::<_, String>("SELECT name FROM pragma_table_info($1)")
                .bind(table)
                .fetch_all(&mut *src)
                .await?
                .into_iter()
                .collect();
        let target_columns: BTreeSet<String> = columns.iter().map(|c| c.name.clone()).collect();
        if source_columns != target_columns {
            return Err(StoreError::Config(format!(
                "table {table} has columns [{}] in the SQLite database and [{}] in the PostgreSQL one; nothing was copied",
                source_columns.into_iter().collect::<Vec<_>>().join(", "),
                target_columns.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        let copied = copy_table(src, tx, table, columns).await?;
        let verified = read_back(tx, table, columns).await?;
        if copied.rows != verified.rows || copied.sum != verified.sum {
            return Err(StoreError::Corrupt(format!(
                "table {table}: the SQLite database has {} rows (checksum {}) and PostgreSQL read back {} rows (checksum {}); nothing was copied",
                copied.rows,
                copied.checksum(),
                verified.rows,
                verified.checksum()
            )));
        }
        report.tables.push(TableCopy { table: table.clone(), rows: copied.rows, checksum: copied.checksum() });
    }
    report.sequences = set_sequences(src, tx).await?;
    Ok(report)
}

/// The tables of the target's schema, bookkeeping left out, with their columns.
async fn pg_tables(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>) -> Result<BTreeMap<String, Vec<Column>>> {
    let rows = sqlx::query(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text FROM information_schema.columns c
         JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
         ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut tables: BTreeMap<String, Vec<Column>> = BTreeMap::new();
    for row in rows {
        let (table, name, data_type): (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if BOOKKEEPING.contains(&table.as_str()) {
            continue;
        }
        let kind = match data_type.as_str() {
            "text" | "character varying" => Kind::Text,
            "bigint" | "integer" | "smallint" => Kind::Int,
            "boolean" => Kind::Bool,
            "bytea" => Kind::Bytes,
            other => {
                return Err(StoreError::Config(format!(
                    "column {table}.{name} has type {other}, which copy does not know; nothing was copied"
                )));
            }
        };
        tables.entry(table).or_default().push(Column { name, kind });
    }
    Ok(tables)
}

/// (child, parent) for every foreign key of the target's schema.
async fn pg_foreign_keys(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT child.relname::text, parent.relname::text FROM pg_constraint c
         JOIN pg_class child ON child.oid = c.conrelid
         JOIN pg_class parent ON parent.oid = c.confrelid
         JOIN pg_namespace n ON n.oid = child.relnamespace
         WHERE c.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&mut **tx)
    .await?)
}

fn select_list(columns: &[Column]) -> Result<String> {
    Ok(columns.iter().map(|c| quoted(&c.name)).collect::<Result<Vec<_>>>()?.join(", "))
}

fn sqlite_value(row: &sqlx::sqlite::SqliteRow, i: usize, table: &str, column: &Column) -> Result<Value> {
    let bad = |e: sqlx::Error| StoreError::Corrupt(format!("{table}.{}: {e}", column.name));
    Ok(match column.kind {
        Kind::Text => row.try_get::<Option<String>, _>(i).map_err(bad)?.map_or(Value::Null, Value::Text),
        Kind::Int => row.try_get::<Option<i64>, _>(i).map_err(bad)?.map_or(Value::Null, Value::Int),
        Kind::Bool => row.try_get::<Option<bool>, _>(i).map_err(bad)?.map_or(Value::Null, Value::Bool),
        Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i).map_err(bad)?.map_or(Value::Null, Value::Bytes),
    })
}

fn pg_value(row: &sqlx::postgres::PgRow, i: usize, table: &str, column: &Column) -> Result<Value> {
    use sqlx::TypeInfo;
    let bad = |e: sqlx::Error| StoreError::Corrupt(format!("{table}.{}: {e}", column.name));
    Ok(match column.kind {
        Kind::Text => row.try_get::<Option<String>, _>(i).map_err(bad)?.map_or(Value::Null, Value::Text),
        Kind::Int => match sqlx::Column::type_info(&row.columns()[i]).name() {
            "INT4" => row.try_get::<Option<i32>, _>(i).map_err(bad)?.map_or(Value::Null, |n| Value::Int(n.into())),
            "INT2" => row.try_get::<Option<i16>, _>(i).map_err(bad)?.map_or(Value::Null, |n| Value::Int(n.into())),
            _ => row.try_get::<Option<i64>, _>(i).map_err(bad)?.map_or(Value::Null, Value::Int),
        },
        Kind::Bool => row.try_get::<Option<bool>, _>(i).map_err(bad)?.map_or(Value::Null, Value::Bool),
        Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i).map_err(bad)?.map_or(Value::Null, Value::Bytes),
    })
}

/// Streams `table` from SQLite into PostgreSQL in batches; the source's tally.
async fn copy_table(
    src: &mut sqlx::SqliteConnection,
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    table: &str,
    columns: &[Column],
) -> Result<Tally> {
    let name = quoted(table)?;
    let list = select_list(columns)?;
    // The source's rows replace what the target's migrations seeded.
    if MIGRATION_SEEDED.contains(&table) {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {name}"))).execute(&mut **tx).await?;
    }
    // Triggers are the application's, not data: the events log's renumbers
    // `seq` at commit, which would break every reference to it.
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE {name} DISABLE TRIGGER USER"))).execute(&mut **tx).await?;
    let mut tally = Tally::default();
    let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH_ROWS);
    let select = format!("SELECT {list} FROM {name}");
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut *src);
    while let Some(row) = rows.try_next().await? {
        let values =
            columns.iter().enumerate().map(|(i, c)| sqlite_value(&row, i, table, c)).collect::<Result<Vec<_>>>()?;
        tally.add(&values);
        batch.push(values);
        if batch.len() == BATCH_ROWS {
            insert(tx, &name, &list, &batch).await?;
            batch.clear();
        }
    }
    drop(rows);
    if !batch.is_empty() {
        insert(tx, &name, &list, &batch).await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE {name} ENABLE TRIGGER USER"))).execute(&mut **tx).await?;
    Ok(tally)
}

async fn insert(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    name: &str,
    list: &str,
    batch: &[Vec<Value>],
) -> Result<()> {
    let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("INSERT INTO {name} ({list}) "));
    query.push_values(batch, |mut row, values| {
        for value in values {
            match value {
                Value::Null => row.push("NULL"),
                Value::Text(s) => row.push_bind(s.clone()),
                Value::Int(n) => row.push_bind(*n),
                Value::Bool(b) => row.push_bind(*b),
                Value::Bytes(b) => row.push_bind(b.clone()),
            };
        }
    });
    query.build().execute(&mut **tx).await?;
    Ok(())
}

/// What PostgreSQL holds for `table` now, in the same canonical form.
async fn read_back(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    table: &str,
    columns: &[Column],
) -> Result<Tally> {
    let select = format!("SELECT {} FROM {}", select_list(columns)?, quoted(table)?);
    let mut tally = Tally::default();
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut **tx);
    while let Some(row) = rows.try_next().await? {
        let values =
            columns.iter().enumerate().map(|(i, c)| pg_value(&row, i, table, c)).collect::<Result<Vec<_>>>()?;
        tally.add(&values);
    }
    Ok(tally)
}

/// Every serial column's sequence continues after the highest number the
/// source used: its largest value, or SQLite's AUTOINCREMENT counter when
/// that is higher (rows since deleted keep their numbers unused).
async fn set_sequences(
    src: &mut sqlx::SqliteConnection,
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
) -> Result<Vec<SequenceSet>> {
    let serials: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, pg_get_serial_sequence(quote_ident(table_name), column_name)
         FROM information_schema.columns
         WHERE table_schema = current_schema()
           AND pg_get_serial_sequence(quote_ident(table_name), column_name) IS NOT NULL
         ORDER BY table_name, column_name",
    )
    .fetch_all(&mut **tx)
    .await?;
    let has_counters: Option<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'")
            .fetch_optional(&mut *src)
            .await?;
    let mut set = Vec::new();
    for (table, column, sequence) in serials {
        if BOOKKEEPING.contains(&table.as_str()) {
            continue;
        }
        let (max,): (Option<i64>,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT MAX({}) FROM {}", quoted(&column)?, quoted(&table)?)))
                .fetch_one(&mut **tx)
                .await?;
        let counter: Option<i64> = match has_counters {
            Some(_) => {
                sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
                    .bind(&table)
                    .fetch_optional(&mut *src)
                    .await?
            }
            None => None,
        };
        let next = max.unwrap_or(0).max(counter.unwrap_or(0)) + 1;
        sqlx::query("SELECT setval($1, $2, false)").bind(&sequence).bind(next).execute(&mut **tx).await?;
        set.push(SequenceSet { table, column, next });
    }
    Ok(set)
}
