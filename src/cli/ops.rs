//! `orgplane copy`, `backup` and `restore`: moving and keeping the data.
//! The work and its guarantees are the store's (`orgplane_store::copy`,
//! `orgplane_store::backup`); this prints what happened.

use std::path::Path;

use orgplane_store::{ConnectOptions, Store};

fn redact(url: &str) -> String {
    orgplane_server::redact(url)
}

async fn connect(url: &str) -> Result<Store, String> {
    let options = ConnectOptions { max_connections: 4, ..ConnectOptions::new(url) };
    Store::connect(&options).await.map_err(|e| format!("opening the database {}: {e}", redact(url)))
}

/// `orgplane copy --from sqlite://… --to postgres://…`.
pub async fn copy(from: &str, to: &str) -> Result<(), String> {
    if !from.starts_with("sqlite:") {
        return Err(format!(
            "--from: `{}` is not a sqlite:// URL; copy reads the embedded SQLite database",
            redact(from)
        ));
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err(format!("--to: `{}` is not a postgres:// URL; copy writes a new PostgreSQL database", redact(to)));
    }
    let file = orgplane_store::backup::sqlite_path(from).map_err(|e| format!("--from: {e}"))?;
    if !file.is_file() {
        return Err(format!(
            "--from: {} does not exist; pass the SQLite file orgplane serves from (e.g. sqlite://orgplane-data/orgplane.db)",
            file.display()
        ));
    }
    let source = connect(from).await?;
    let target = connect(to).await?;
    let result = source.copy_into(&target).await;
    source.close().await;
    target.close().await;
    let report = result.map_err(|e| format!("copy {} → {}: {e}", file.display(), redact(to)))?;
    let width = report.tables.iter().map(|t| t.table.len()).max().unwrap_or(0).max("TABLE".len());
    println!("{:<width$}  {:>10}  CHECKSUM", "TABLE", "ROWS");
    for table in &report.tables {
        println!("{:<width$}  {:>10}  {}", table.table, table.rows, table.checksum);
    }
    for sequence in &report.sequences {
        println!("sequence {}.{} continues at {}", sequence.table, sequence.column, sequence.next);
    }
    let rows: u64 = report.tables.iter().map(|t| t.rows).sum();
    println!(
        "copied {rows} rows in {} tables at migration {} into {}; row counts and checksums verified on both sides",
        report.tables.len(),
        report.version,
        redact(to)
    );
    println!(
        "next: start orgplane with database_url = {} and the same data_dir (or webhooks.secret_key), then keep the SQLite file as a fallback",
        redact(to)
    );
    Ok(())
}

/// `orgplane backup --to FILE`.
pub async fn backup(url: &str, to: &Path) -> Result<(), String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(orgplane_store::backup::pg_dump_advice(&to.display().to_string()));
    }
    let file = orgplane_store::backup::sqlite_path(url).map_err(|e| e.to_string())?;
    if !file.is_file() {
        return Err(format!(
            "{} does not exist: there is no database to back up (check --database-url or data_dir)",
            file.display()
        ));
    }
    let store = connect(url).await?;
    let result = store.backup_to(to).await;
    store.close().await;
    let check = result.map_err(|e| format!("backup to {}: {e}", to.display()))?;
    println!(
        "backup written: {} ({} bytes, migration {}, integrity ok); restore it with `orgplane restore --from {}`",
        to.display(),
        check.bytes,
        check.version,
        to.display()
    );
    Ok(())
}

/// `orgplane restore --from FILE [--force]`.
pub async fn restore(url: &str, from: &Path, force: bool) -> Result<(), String> {
    if !from.is_file() {
        return Err(format!("--from: {} does not exist", from.display()));
    }
    let restored = orgplane_store::backup::restore(from, url, force).await.map_err(|e| format!("restore: {e}"))?;
    if !restored.replaced.is_empty() {
        println!("replaced the database's rows: {}", restored.replaced.join(", "));
    }
    println!(
        "restored {} onto {} (integrity ok, migration {}){}",
        from.display(),
        restored.target.display(),
        restored.check.version,
        if restored.check.version < restored.check.newest {
            format!("; `orgplane serve` or `orgplane migrate` brings it to migration {}", restored.check.newest)
        } else {
            String::new()
        }
    );
    Ok(())
}
