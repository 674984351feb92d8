//! The first connection, said so a newcomer can act on it: a database,
//! role or host that doesn't exist, nothing listening on the port, a SQLite
//! file in a folder that doesn't exist. Each message names what is wrong
//! once, where, and the command or setting that fixes it; a refused
//! connection is reported at once, not after the pool's acquire timeout.

use std::path::Path;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;

use crate::StoreError;

/// Opens (and closes) one PostgreSQL connection, within `timeout`.
pub(crate) async fn probe_postgres(options: &PgConnectOptions, timeout: Duration) -> Result<(), StoreError> {
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    match tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(postgres_error(options, e).await),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer from {host}:{port} within {} s; check the host and port in database_url and that a firewall lets the connection through",
            timeout.as_secs_f32()
        ))),
    }
}

async fn postgres_error(options: &PgConnectOptions, e: sqlx::Error) -> StoreError {
    let (host, port) = (options.get_host(), options.get_port());
    let user = options.get_username();
    let database = options.get_database().unwrap_or(user);
    match &e {
        sqlx::Error::Database(db) => {
            let message = db.message();
            match db.code().as_deref() {
                Some("3D000") => StoreError::Config(format!(
                    "database \"{database}\" does not exist on {host}:{port}; create it with `createdb -h {host} -p {port} -U {user} {database}`, or check the database name in database_url"
                )),
                Some("28000") => StoreError::Config(format!(
                    "{message} on {host}:{port}; create it with `createuser -h {host} -p {port} --createdb {user}` (as a PostgreSQL superuser), or check the user name in database_url"
                )),
                Some("28P01") => {
                    StoreError::Config(format!("{message} (on {host}:{port}); check the password in database_url"))
                }
                Some(code) => StoreError::Config(format!(
                    "PostgreSQL on {host}:{port} refused the connection: {message} (SQLSTATE {code})"
                )),
                None => StoreError::Config(format!("PostgreSQL on {host}:{port} refused the connection: {message}")),
            }
        }
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => StoreError::Unavailable(format!(
            "connection refused by {host}:{port}: nothing listens there. Is PostgreSQL running (`pg_isready -h {host} -p {port}`), and are the host and port in database_url right?"
        )),
        sqlx::Error::Io(io) => {
            if !host.starts_with('/') && tokio::net::lookup_host((host, port)).await.is_err() {
                StoreError::Config(format!(
                    "the host \"{host}\" in database_url is unknown (its name does not resolve); check the host name"
                ))
            } else {
                StoreError::Unavailable(format!("can't reach PostgreSQL on {host}:{port}: {io}"))
            }
        }
        _ => e.into(),
    }
}

/// The SQLite file at `path` could not be opened: say why when we can tell.
pub(crate) fn sqlite_error(path: &Path, e: sqlx::Error) -> StoreError {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !folder.is_dir()
    {
        return StoreError::Config(format!(
            "the folder {} of the SQLite database {} does not exist; create it (`mkdir -p {}`) or fix the path in database_url",
            folder.display(),
            path.display(),
            folder.display()
        ));
    }
    match &e {
        sqlx::Error::Database(db) => StoreError::Config(format!(
            "can't open the SQLite database {}: {}; check that the file and its folder are writable by this user",
            path.display(),
            db.message()
        )),
        _ => e.into(),
    }
}
