//! `orgplane backup` and `orgplane restore`, for the embedded SQLite database.
//!
//! Guarantees:
//! - a backup is one consistent snapshot, taken while the server serves
//!   (`VACUUM INTO` reads in one transaction; writers go on): every write
//!   committed before it started is in it, none half-done;
//! - a backup never overwrites a file, and is checked (`PRAGMA
//!   integrity_check`, the orgplane schema) before it is reported written;
//! - a restore checks the file the same way first, refuses a file from a
//!   newer build, and refuses to replace a database holding rows unless
//!   forced; the file is copied beside the target and renamed over it, so
//!   the target is either the old database or the whole backup;
//! - PostgreSQL is backed up and restored with PostgreSQL's own tools:
//!   both commands refuse, naming the exact commands to use.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use crate::{Backend, Result, Store, StoreError};

/// `pg_dump`'s command for `file`: online and consistent, like a SQLite backup.
pub fn pg_dump_advice(file: &str) -> String {
    format!(
        "PostgreSQL is backed up with its own tool, online and consistent: `pg_dump --format=custom --file={file} \"$DATABASE_URL\"`; restore it with `pg_restore --clean --if-exists --no-owner --dbname=\"$DATABASE_URL\" {file}`"
    )
}

/// What a checked backup file holds.
#[derive(Debug, Clone)]
pub struct BackupCheck {
    /// Its newest migration.
    pub version: i64,
    /// This build's newest migration (a restored older file is migrated at start).
    pub newest: i64,
    pub bytes: u64,
}

/// The file of a `sqlite:` URL (`None` for an in-memory database).
pub fn sqlite_path(url: &str) -> Result<PathBuf> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Config(format!("database_url: not a SQLite URL ({e})")))?;
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Err(StoreError::Config("database_url: an in-memory SQLite database has no file to back up".into()));
    }
    Ok(path.to_path_buf())
}

fn missing_folder(file: &Path) -> Option<StoreError> {
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty())?;
    (!parent.is_dir()).then(|| {
        StoreError::Config(format!(
            "the folder {} does not exist; create it first (`mkdir -p {}`)",
            parent.display(),
            parent.display()
        ))
    })
}

impl Store {
    /// SQLite: writes a consistent copy of the database to `to` while it
    /// serves, then checks the copy. PostgreSQL: refuses with `pg_dump`'s
    /// command.
    pub async fn backup_to(&self, to: &Path) -> Result<BackupCheck> {
        let Backend::Sqlite(pool) = &self.backend else {
            return Err(StoreError::Config(pg_dump_advice(&to.display().to_string())));
        };
        if to.exists() {
            return Err(StoreError::Config(format!(
                "{} exists; a backup never overwrites a file: pick a new name (e.g. with the date in it)",
                to.display()
            )));
        }
        if let Some(e) = missing_folder(to) {
            return Err(e);
        }
        let target = to.to_str().ok_or_else(|| StoreError::Config(format!("{}: not a UTF-8 path", to.display())))?;
        sqlx::query("VACUUM INTO $1").bind(target).execute(pool).await?;
        check_backup(to).await
    }
}

/// Opens `file` read-only and checks it is a whole orgplane database this
/// build can run: integrity, schema, migration version.
pub async fn check_backup(file: &Path) -> Result<BackupCheck> {
    let bytes = std::fs::metadata(file).map_err(|e| StoreError::Config(format!("{}: {e}", file.display())))?.len();
    let options = SqliteConnectOptions::new().filename(file).read_only(true).create_if_missing(false);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Config(format!("{} can't be opened as a SQLite database: {e}", file.display())))?;
    let result = check_open(&pool, file, bytes).await;
    pool.close().await;
    result
}

async fn check_open(pool: &SqlitePool, file: &Path, bytes: u64) -> Result<BackupCheck> {
    let not_sqlite = |e: sqlx::Error| StoreError::Config(format!("{} is not a SQLite database: {e}", file.display()));
    let problems: Vec<String> =
        sqlx::query_scalar("PRAGMA integrity_check").fetch_all(pool).await.map_err(not_sqlite)?;
    if problems != ["ok"] {
        return Err(StoreError::Config(format!(
            "{} fails SQLite's integrity check: {}",
            file.display(),
            problems.into_iter().take(5).collect::<Vec<_>>().join("; ")
        )));
    }
    let has_schema: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'orgplane_migrations'")
            .fetch_optional(pool)
            .await
            .map_err(not_sqlite)?;
    if has_schema.is_none() {
        return Err(StoreError::Config(format!(
            "{} is not an orgplane database (no orgplane_migrations table)",
            file.display()
        )));
    }
    let version: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM orgplane_migrations").fetch_one(pool).await?;
    let version = version.unwrap_or(0);
    let newest = crate::migrate::MIGRATIONS.last().map_or(0, |m| m.version);
    if version > newest {
        return Err(StoreError::Config(format!(
            "{} is at migration {version}, newer than this build ({newest}); restore it with the orgplane build that wrote it",
            file.display()
        )));
    }
    Ok(BackupCheck { version, newest, bytes })
}

/// The tables of the SQLite database at `file` that hold rows, with their
/// counts (migration bookkeeping and migration-seeded rows left out).
async fn occupied(file: &Path) -> Result<Vec<String>> {
    let options = SqliteConnectOptions::new().filename(file).create_if_missing(false);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await?;
    let mut found = Vec::new();
    for table in tables {
        if table.starts_with("orgplane_migration") || crate::copy::MIGRATION_SEEDED.contains(&table.as_str()) {
            continue;
        }
        if table.contains('"') {
            found.push(table);
            continue;
        }
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{table}\""))).fetch_one(&pool).await?;
        let rows: i64 = row.try_get(0)?;
        if rows > 0 {
            found.push(format!("{table} ({rows} row{})", if rows == 1 { "" } else { "s" }));
        }
    }
    pool.close().await;
    Ok(found)
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub check: BackupCheck,
    pub target: PathBuf,
    /// Rows of these tables were replaced (`--force`).
    pub replaced: Vec<String>,
}

/// Puts the backup `from` in place of the SQLite database of `url`. The
/// server must be stopped: the database's file is replaced.
pub async fn restore(from: &Path, url: &str, force: bool) -> Result<Restored> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::Config(format!(
            "PostgreSQL is restored with its own tool: `pg_restore --clean --if-exists --no-owner --dbname=\"$DATABASE_URL\" FILE` (from a `pg_dump --format=custom` file); to move a SQLite backup onto PostgreSQL, run `orgplane copy --from sqlite://{} --to \"$DATABASE_URL\"`",
            from.display()
        )));
    }
    let check = check_backup(from).await?;
    let target = sqlite_path(url)?;
    if let Some(e) = missing_folder(&target) {
        return Err(e);
    }
    let mut replaced = Vec::new();
    if target.exists() {
        if std::fs::canonicalize(&target).ok() == std::fs::canonicalize(from).ok() {
            return Err(StoreError::Config(format!(
                "{} is the database itself; restore from another file",
                from.display()
            )));
        }
        replaced = occupied(&target).await?;
        if !replaced.is_empty() && !force {
            return Err(StoreError::Config(format!(
                "{} is not empty: {}; nothing was changed. Stop the server and add --force to replace it with the backup",
                target.display(),
                replaced.join(", ")
            )));
        }
    }
    let io = |what: &str, path: &Path, e: std::io::Error| StoreError::Config(format!("{what} {}: {e}", path.display()));
    let mut staged = target.clone().into_os_string();
    staged.push(".restoring");
    let staged = PathBuf::from(staged);
    std::fs::copy(from, &staged).map_err(|e| io("copying the backup to", &staged, e))?;
    std::fs::File::open(&staged).and_then(|f| f.sync_all()).map_err(|e| io("syncing", &staged, e))?;
    // The old database's write-ahead log belongs to the old file: replayed
    // onto the backup it would corrupt it.
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = target.clone().into_os_string();
        side.push(suffix);
        let side = PathBuf::from(side);
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing", &side, e)),
        }
    }
    std::fs::rename(&staged, &target).map_err(|e| io("moving the backup onto", &target, e))?;
    Ok(Restored { check, target, replaced })
}
