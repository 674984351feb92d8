//! First-run errors, as a newcomer meets them from a fresh clone: each
//! says once what is wrong and what to do.

use std::process::{Command, Output};

use crate::helpers::{Backend, TestDb, postgres_admin_url};

fn orgplane() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orgplane"));
    cmd.env_remove("ORGPLANE_CONFIG").env("ORGPLANE_LOG", "warn");
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("orgplane_first_run_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// `postgres://…` of the test PostgreSQL server, with another user and database.
fn pg_url(user: &str, database: &str) -> String {
    let admin = postgres_admin_url();
    let rest = admin.split_once("://").map(|(_, r)| r).unwrap_or(&admin);
    let host = rest.split_once('@').map(|(_, h)| h).unwrap_or(rest);
    let host = host.split('/').next().unwrap_or(host);
    format!("postgres://{user}@{host}/{database}")
}

/// Runs `migrate` against `url`; its stderr (it must fail).
fn migrate_fails(url: &str) -> String {
    let out = orgplane().args(["migrate", "--database-url", url]).output().expect("runs");
    assert!(!out.status.success());
    stderr(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_postgres_database_or_role_is_said_once_with_the_command_that_creates_it() {
    // Reachable PostgreSQL first (the harness fails or skips loudly otherwise).
    let Some((_db, _)) = TestDb::create(Backend::Postgres).await else { return };
    let err = migrate_fails(&pg_url("postgres", "orgplane_no_such_db"));
    assert_eq!(err.matches("does not exist").count(), 1, "said once: {err}");
    assert!(err.contains("database \"orgplane_no_such_db\" does not exist on"), "{err}");
    assert!(err.contains("createdb -h ") && err.contains(" -U postgres orgplane_no_such_db`"), "{err}");
    assert!(!err.contains("at line"), "no PostgreSQL source line: {err}");

    let err = migrate_fails(&pg_url("orgplane_no_such_role", "postgres"));
    assert_eq!(err.matches("does not exist").count(), 1, "said once: {err}");
    assert!(err.contains("role \"orgplane_no_such_role\" does not exist"), "{err}");
    assert!(err.contains("createuser") && err.contains("check the user name in database_url"), "{err}");
}

#[test]
fn an_unknown_host_a_refused_port_and_a_missing_sqlite_folder_say_so() {
    let err = migrate_fails("postgres://postgres@orgplane-no-such-host.invalid:5432/db");
    assert!(err.contains("the host \"orgplane-no-such-host.invalid\" in database_url is unknown"), "{err}");

    // Nothing listens on port 1: refused, said as such, not a pool timeout.
    let err = migrate_fails("postgres://postgres@127.0.0.1:1/db");
    assert!(err.contains("connection refused by 127.0.0.1:1") && err.contains("pg_isready"), "{err}");
    assert!(!err.contains("timed out"), "{err}");

    let dir = temp_dir("sqlite");
    let missing = dir.join("not-yet").join("orgplane.db");
    let err = migrate_fails(&format!("sqlite://{}", missing.display()));
    let folder = dir.join("not-yet");
    assert!(err.contains(&format!("the folder {} of the SQLite database", folder.display())), "{err}");
    assert!(err.contains(&format!("mkdir -p {}", folder.display())), "{err}");
    assert_eq!(err.matches("does not exist").count(), 1, "said once: {err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn config_errors_name_the_key_and_the_absolute_file_without_figments_decorations() {
    let dir = temp_dir("config");
    std::fs::write(dir.join("orgplane.toml"), "lisen = \"127.0.0.1:8080\"\n").expect("write");
    let out = orgplane().current_dir(&dir).args(["serve", "-c", "orgplane.toml"]).output().expect("runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown key `lisen`; the top level takes listen, database_url"), "{err}");
    assert!(err.contains(&dir.join("orgplane.toml").display().to_string()), "the absolute path: {err}");
    assert!(!err.contains("default.") && !err.contains("``"), "{err}");

    let out = orgplane().current_dir(&dir).args(["serve", "-c", "missing.toml"]).output().expect("runs");
    assert!(stderr(&out).contains(&format!("config file {} does not exist", dir.join("missing.toml").display())));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn plans_check_validates_the_whole_config_as_serve_does_and_takes_database_url() {
    let dir = temp_dir("plans");
    let file = dir.join("roles.toml");
    std::fs::write(&file, "[roles.support]\npermissions = [\"members:teleport\"]\n").expect("write");
    let out = orgplane().args(["plans", "check", "-c"]).arg(&file).output().expect("runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("roles.support.permissions: unknown permission `members:teleport`"), "{err}");

    // What only the server's set-up used to refuse: an issuer listed twice.
    let issuer =
        "[[auth.issuers]]\nissuer = \"https://idp.example\"\njwks_url = \"https://idp.example/jwks\"\naudience = []\n";
    std::fs::write(&file, format!("{issuer}{issuer}")).expect("write");
    let out = orgplane().args(["plans", "check", "-c"]).arg(&file).output().expect("runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("auth.issuers[1] accepts issuer `https://idp.example`, which another entry accepts too"),
        "{err}"
    );

    let out = orgplane()
        .args(["plans", "check", "--database-url", "sqlite://orgplane-data/orgplane.db"])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the configuration is valid"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn listen_names_a_host_name_as_such() {
    let out = orgplane().args(["serve", "--listen", "localhost:8080"]).output().expect("runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("`localhost` is a host name; --listen takes an IP address and a port: use 127.0.0.1:8080"),
        "{err}"
    );
}

/// The port is bound before the database is opened: a taken port changes
/// nothing on disk.
#[test]
fn serve_binds_before_it_migrates() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("addr");
    let dir = temp_dir("bind");
    let out = orgplane()
        .args(["serve", "--listen", &addr.to_string()])
        .env("ORGPLANE_DATA_DIR", &dir)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("binding {addr}")) && err.contains("another process listens there"), "{err}");
    assert!(!dir.join("orgplane.db").exists(), "nothing migrated by a server that can't serve");
    let _ = std::fs::remove_dir_all(dir);
}

/// Without `--dev` and without an issuer, only API keys authenticate: said
/// once at start. Logs into a file (not a terminal) carry no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_an_issuer_warns_once_in_plain_text() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let dir = temp_dir("issuer");
    let log = std::fs::File::create(dir.join("serve.log")).expect("log file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("ORGPLANE_DATA_DIR", &dir)
        .env("ORGPLANE_LOG", "info")
        .env_remove("ORGPLANE_CONFIG")
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        ticks.tick().await;
        if http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not answer /healthz within 30 s");
    }
    child.kill().await.expect("stopped");
    let text = std::fs::read_to_string(dir.join("serve.log")).expect("log");
    assert_eq!(text.matches("no identity issuer is configured").count(), 1, "once: {text}");
    assert!(text.contains("[[auth.issuers]]") && text.contains("--dev"), "{text}");
    assert!(!text.contains('\u{1b}'), "no ANSI codes in a log file: {text:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `CREATE TABLE IF NOT EXISTS` at every start made PostgreSQL send a
/// NOTICE that sqlx logged: not any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_postgres_again_logs_no_already_exists_notice() {
    let Some((_db, url)) = TestDb::create(Backend::Postgres).await else { return };
    for _ in 0..2 {
        let out =
            orgplane().args(["migrate", "--database-url", &url]).env("ORGPLANE_LOG", "info").output().expect("runs");
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(!err.contains("already exists"), "{err}");
    }
}
