//! The one place that states what a query needs of a database, so that
//! every generic store function needs only `DB: Sql`.
//!
//! sqlx's generic API asks each function for its own bounds: an executor
//! for `&mut DB::Connection`, `IntoArguments`, `ColumnIndex`, and an
//! `Encode`/`Decode`/`Type` bound for every Rust type bound or read
//! (`String: Encode<'q, DB>`, …). Rust implies none of those from a bound
//! on `DB`, so they were repeated on every function. Here they are stated
//! once, the other way round:
//!
//! - [`Value`] and [`Decoded`] are the types that encode (decode) on
//!   *both* backends; a bound on the type itself is implied wherever it is
//!   used, so `T: Value` can be bound to a query of either database.
//! - [`Sql`] is implemented for `Sqlite` and `Postgres` only: each primitive
//!   (bind, execute, fetch, read a column, begin a write) is a one-line
//!   call of sqlx on the concrete type, where sqlx's bounds hold.
//! - [`query`] and [`query_as`] wrap sqlx's builders with
//!   methods of the same names, so function bodies read as before.
//!
//! Guarantees: the SQL text, the binds and the decoding are sqlx's, unchanged
//! (a column is read with sqlx's `Row::try_get`, tuples positionally as
//! sqlx's `FromRow` does); the wrappers add no boxing, only a `match`
//! between a connection and a pool (`fetch_all` decodes the rows sqlx
//! collected, as sqlx's own `Query::fetch_all` collects them).

use std::future::Future;
use std::marker::PhantomData;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Database, Decode, Encode, Pool, Postgres, Row as _, SqlSafeStr, Sqlite, Transaction, Type};

use crate::write_gate::{self, Lane, WritePermit, WriteTx};

/// A Rust value both backends can bind as a query parameter.
pub(crate) trait Value:
    for<'q> Encode<'q, Sqlite> + Type<Sqlite> + for<'q> Encode<'q, Postgres> + Type<Postgres>
{
}

impl<T> Value for T where T: for<'q> Encode<'q, Sqlite> + Type<Sqlite> + for<'q> Encode<'q, Postgres> + Type<Postgres> {}

/// A Rust value both backends can read from a column.
pub(crate) trait Decoded:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Decoded for T where T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres> {}

type RawQuery<DB> = sqlx::query::Query<'static, DB, <DB as Database>::Arguments>;

/// Where a statement runs: a connection (a transaction's, `&mut *tx`, or
/// one acquired) or the pool.
pub(crate) enum Exec<'e, DB: Database> {
    Conn(&'e mut DB::Connection),
    Pool(&'e Pool<DB>),
}

/// A database's connection type, pointing back at its database: what lets
/// `query(…).execute(&mut *tx)` infer the database from the connection.
pub(crate) trait SqlConnection: Send {
    type Db: Sql + Database<Connection = Self>;
}

impl SqlConnection for SqliteConnection {
    type Db = Sqlite;
}

impl SqlConnection for PgConnection {
    type Db = Postgres;
}

/// What a statement can run on: `&mut` a connection, or `&` a pool.
pub(crate) trait Executes<'e> {
    type Db: Sql;
    fn exec(self) -> Exec<'e, Self::Db>;
}

impl<'e, C: SqlConnection> Executes<'e> for &'e mut C {
    type Db = C::Db;
    #[inline]
    fn exec(self) -> Exec<'e, C::Db> {
        Exec::Conn(self)
    }
}

/// `&mut *tx` of a [`WriteTx`](crate::write_gate::WriteTx): its transaction's connection.
impl<'e, 'c, DB: Sql> Executes<'e> for &'e mut Transaction<'c, DB> {
    type Db = DB;
    #[inline]
    fn exec(self) -> Exec<'e, DB> {
        Exec::Conn(&mut **self)
    }
}

impl<'e, DB: Sql> Executes<'e> for &'e Pool<DB> {
    type Db = DB;
    #[inline]
    fn exec(self) -> Exec<'e, DB> {
        Exec::Pool(self)
    }
}

/// A column by position or by name.
pub(crate) enum Column<'n> {
    Index(usize),
    Name(&'n str),
}

/// What [`Row::try_get`] accepts: `0`, or `"name"`.
pub(crate) trait ColumnRef {
    fn column(&self) -> Column<'_>;
}

impl ColumnRef for usize {
    #[inline]
    fn column(&self) -> Column<'_> {
        Column::Index(*self)
    }
}

impl ColumnRef for &str {
    #[inline]
    fn column(&self) -> Column<'_> {
        Column::Name(self)
    }
}

/// The two databases orgplane runs on, and the primitives its queries use.
pub(crate) trait Sql: Database<Connection: SqlConnection<Db = Self>> {
    fn bind<T: Value>(query: RawQuery<Self>, value: T) -> RawQuery<Self>;
    fn execute(query: RawQuery<Self>, on: Exec<'_, Self>) -> impl Future<Output = sqlx::Result<u64>> + Send;
    fn fetch_optional(
        query: RawQuery<Self>,
        on: Exec<'_, Self>,
    ) -> impl Future<Output = sqlx::Result<Option<Self::Row>>> + Send;
    fn fetch_one(query: RawQuery<Self>, on: Exec<'_, Self>) -> impl Future<Output = sqlx::Result<Self::Row>> + Send;
    fn fetch_all(
        query: RawQuery<Self>,
        on: Exec<'_, Self>,
    ) -> impl Future<Output = sqlx::Result<Vec<Self::Row>>> + Send;
    fn get<T: Decoded>(row: &Self::Row, column: Column<'_>) -> sqlx::Result<T>;
    /// A transaction that will write, taking its turn in `lane` (SQLite's
    /// write gate; PostgreSQL ignores it): see `BeginWrite` in the crate root.
    fn begin_write_in(pool: &Pool<Self>, lane: Lane) -> impl Future<Output = sqlx::Result<WriteTx<Self>>> + Send;
    /// For one write statement run on the pool outside a transaction
    /// (autocommit): on SQLite, the write gate's turn in `lane`, held until
    /// dropped; on PostgreSQL, nothing to wait for.
    fn write_permit_in(pool: &Pool<Self>, lane: Lane)
    -> impl Future<Output = sqlx::Result<Option<WritePermit>>> + Send;
    /// [`Sql::write_permit_in`] in the requests' lane.
    fn write_permit(pool: &Pool<Self>) -> impl Future<Output = sqlx::Result<Option<WritePermit>>> + Send {
        Self::write_permit_in(pool, Lane::Request)
    }
}

/// Implements [`Sql`] for a concrete database by calling sqlx, where its
/// bounds hold. A macro only because both bodies are the same text; the
/// one difference (how a write transaction begins) is passed in.
macro_rules! impl_sql {
    ($db:ty, |$pool:ident, $lane:ident| $begin_write:expr, |$gated:ident, $permit_lane:ident| $write_permit:expr) => {
        impl Sql for $db {
            #[inline]
            fn bind<T: Value>(query: RawQuery<Self>, value: T) -> RawQuery<Self> {
                query.bind(value)
            }
            async fn execute(query: RawQuery<Self>, on: Exec<'_, Self>) -> sqlx::Result<u64> {
                let done = match on {
                    Exec::Conn(conn) => query.execute(conn).await?,
                    Exec::Pool(pool) => query.execute(pool).await?,
                };
                Ok(done.rows_affected())
            }
            async fn fetch_optional(query: RawQuery<Self>, on: Exec<'_, Self>) -> sqlx::Result<Option<Self::Row>> {
                match on {
                    Exec::Conn(conn) => query.fetch_optional(conn).await,
                    Exec::Pool(pool) => query.fetch_optional(pool).await,
                }
            }
            async fn fetch_one(query: RawQuery<Self>, on: Exec<'_, Self>) -> sqlx::Result<Self::Row> {
                match on {
                    Exec::Conn(conn) => query.fetch_one(conn).await,
                    Exec::Pool(pool) => query.fetch_one(pool).await,
                }
            }
            async fn fetch_all(query: RawQuery<Self>, on: Exec<'_, Self>) -> sqlx::Result<Vec<Self::Row>> {
                match on {
                    Exec::Conn(conn) => query.fetch_all(conn).await,
                    Exec::Pool(pool) => query.fetch_all(pool).await,
                }
            }
            #[inline]
            fn get<T: Decoded>(row: &Self::Row, column: Column<'_>) -> sqlx::Result<T> {
                match column {
                    Column::Index(index) => row.try_get(index),
                    Column::Name(name) => row.try_get(name),
                }
            }
            async fn begin_write_in($pool: &Pool<Self>, $lane: Lane) -> sqlx::Result<WriteTx<Self>> {
                $begin_write.await
            }
            async fn write_permit_in($gated: &Pool<Self>, $permit_lane: Lane) -> sqlx::Result<Option<WritePermit>> {
                $write_permit.await
            }
        }
    };
}

// `IMMEDIATE` takes the write lock up front: a deferred transaction that
// reads and then writes fails with SQLITE_BUSY under concurrency instead of
// waiting for the busy timeout. Writers reach it one at a time, in order,
// through the write gate.
impl_sql!(Sqlite, |pool, lane| write_gate::begin_sqlite(pool, lane), |pool, lane| async {
    write_gate::permit(pool, lane).await.map(Some)
});
impl_sql!(Postgres, |pool, _lane| async { pool.begin().await.map(WriteTx::ungated) }, |_pool, _lane| async {
    Ok(None)
});

/// A row of either database.
pub(crate) struct Row<DB: Database>(DB::Row);

impl<DB: Sql> Row<DB> {
    /// Column `column` (`0` or `"name"`) as a `T`, as sqlx's `Row::try_get`.
    #[inline]
    pub(crate) fn try_get<T: Decoded, C: ColumnRef>(&self, column: C) -> sqlx::Result<T> {
        DB::get(&self.0, column.column())
    }
}

/// How many rows a statement changed.
pub(crate) struct Done(u64);

impl Done {
    #[inline]
    pub(crate) fn rows_affected(&self) -> u64 {
        self.0
    }
}

/// `sqlx::query`, for either database.
pub(crate) struct Query<DB: Database>(RawQuery<DB>);

#[inline]
pub(crate) fn query<DB: Sql>(sql: impl SqlSafeStr) -> Query<DB> {
    Query(sqlx::query(sql))
}

impl<DB: Sql> Query<DB> {
    #[inline]
    pub(crate) fn bind<T: Value>(self, value: T) -> Self {
        Query(DB::bind(self.0, value))
    }

    pub(crate) async fn execute<'e>(self, on: impl Executes<'e, Db = DB>) -> sqlx::Result<Done> {
        Ok(Done(DB::execute(self.0, on.exec()).await?))
    }

    pub(crate) async fn fetch_optional<'e>(self, on: impl Executes<'e, Db = DB>) -> sqlx::Result<Option<Row<DB>>> {
        Ok(DB::fetch_optional(self.0, on.exec()).await?.map(Row))
    }

    pub(crate) async fn fetch_one<'e>(self, on: impl Executes<'e, Db = DB>) -> sqlx::Result<Row<DB>> {
        Ok(Row(DB::fetch_one(self.0, on.exec()).await?))
    }

    pub(crate) async fn fetch_all<'e>(self, on: impl Executes<'e, Db = DB>) -> sqlx::Result<Vec<Row<DB>>> {
        Ok(DB::fetch_all(self.0, on.exec()).await?.into_iter().map(Row).collect())
    }
}

/// A Rust value read from a whole row: the row structs, and tuples of
/// [`Decoded`] columns in order (as sqlx's `FromRow` for tuples).
pub(crate) trait FromSqlRow: Sized {
    fn from_row<DB: Sql>(row: &Row<DB>) -> sqlx::Result<Self>;
}

/// Tuple impls of [`FromSqlRow`], column `n` into field `n`.
macro_rules! tuple_from_row {
    ($($T:ident $n:tt),+) => {
        impl<$($T: Decoded),+> FromSqlRow for ($($T,)+) {
            #[inline]
            fn from_row<DB: Sql>(row: &Row<DB>) -> sqlx::Result<Self> {
                Ok(($(row.try_get::<$T, usize>($n)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15);

/// `sqlx::query_as`, for either database: each row read as a `T`.
pub(crate) struct QueryAs<DB: Database, T>(Query<DB>, PhantomData<fn() -> T>);

#[inline]
pub(crate) fn query_as<DB: Sql, T: FromSqlRow>(sql: impl SqlSafeStr) -> QueryAs<DB, T> {
    QueryAs(query(sql), PhantomData)
}

impl<DB: Sql, T: FromSqlRow> QueryAs<DB, T> {
    #[inline]
    pub(crate) fn bind<V: Value>(self, value: V) -> Self {
        QueryAs(self.0.bind(value), PhantomData)
    }

    pub(crate) async fn fetch_optional<'e>(self, on: impl Executes<'e, Db = DB>) -> sqlx::Result<Option<T>> {
        self.0.fetch_optional(on).await?.as_ref().map(T::from_row).transpose()
    }

    pub(crate) async fn fetch_one<'e>(self, on: impl Executes<'e, Db = DB>) -> sqlx::Result<T> {
        T::from_row(&self.0.fetch_one(on).await?)
    }

    pub(crate) async fn fetch_all<'e>(self, on: impl Executes<'e, Db = DB>) -> sqlx::Result<Vec<T>> {
        self.0.fetch_all(on).await?.iter().map(T::from_row).collect()
    }
}
