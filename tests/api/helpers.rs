//! Test harness: `spawn_app(backend)` starts orgplane on a free port with a
//! fresh database (a temporary SQLite file, or a PostgreSQL database created
//! for the test and dropped after it), pointed at a local identity provider
//! whose RS256, ES256 and EdDSA keys are served over real HTTP.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use orgplane_auth::IssuerConfig;
use orgplane_auth::keys::{KeyAlg, SigningKey};
use orgplane_server::clock::ManualClock;
use orgplane_server::state::AppState;
use orgplane_server::{Application, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const ISSUER: &str = "https://idp.orgplane.test";
pub const AUDIENCE: &str = "orgplane-tests";

/// Runs each named `async fn name(backend: Backend)` as two tests, one per
/// backend: `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Whether the developer chose to skip the PostgreSQL half of every test
/// (`ORGPLANE_TEST_SKIP_POSTGRES=1`) when PostgreSQL is unreachable.
fn skip_postgres() -> bool {
    std::env::var("ORGPLANE_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

/// The admin URL of the PostgreSQL server tests create databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("ORGPLANE_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A database that exists for one test.
pub enum TestDb {
    Sqlite { dir: PathBuf },
    Postgres { name: String },
}

impl TestDb {
    /// `None` when PostgreSQL is unreachable and the developer asked to skip
    /// it with `ORGPLANE_TEST_SKIP_POSTGRES=1` (a message says the half is
    /// skipped). Otherwise an unreachable PostgreSQL fails the test: a skip
    /// that passes silently proves nothing (and on SQLite, whose writers are
    /// serialized, the race tests can't fail). With `CI` set it always fails.
    pub async fn create(backend: Backend) -> Option<(TestDb, String)> {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique("orgplane_test"));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let url = format!("sqlite://{}", dir.join("orgplane.db").display());
                Some((TestDb::Sqlite { dir }, url))
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let admin = postgres_admin_url();
                let mut conn = match sqlx::PgConnection::connect(&admin).await {
                    Ok(c) => c,
                    Err(e) => {
                        if std::env::var_os("CI").is_some() {
                            panic!("CI is set and PostgreSQL at {admin} is unreachable: {e}");
                        }
                        if !skip_postgres() {
                            panic!(
                                "PostgreSQL at {admin} is unreachable: {e}.\n\
                                 Start PostgreSQL (trust auth, user postgres) or point ORGPLANE_TEST_POSTGRES_URL at one; \
                                 to skip the PostgreSQL half on purpose, set ORGPLANE_TEST_SKIP_POSTGRES=1 \
                                 (the race tests then prove no atomicity: SQLite serializes writers)"
                            );
                        }
                        eprintln!(
                            "\n!!! PostgreSQL at {admin} is unreachable ({e}): SKIPPING the PostgreSQL half of this test \
                             (ORGPLANE_TEST_SKIP_POSTGRES=1).\n"
                        );
                        return None;
                    }
                };
                drop_stale_databases(&mut conn).await;
                let name = unique("orgplane_t");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin.clone());
                Some((TestDb::Postgres { name: name.clone() }, format!("{base}/{name}")))
            }
        }
    }
}

/// Databases left behind by test processes that died (a panic in a test
/// still drops its database; a killed process can't).
async fn drop_stale_databases(conn: &mut sqlx::PgConnection) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let names: Vec<(String,)> = sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'orgplane_t_%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    for (name,) in names {
        let pid: Option<u32> = name.split('_').nth(2).and_then(|p| p.parse().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut *conn)
                .await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            TestDb::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            TestDb::Postgres { name } => {
                let name = name.clone();
                // Drop runs inside the test's runtime: do the async work on a
                // thread of its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    rt.block_on(async move {
                        use sqlx::Connection;
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&mut conn)
                            .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// A local identity provider: three signing keys, a JWKS over HTTP, and a
/// count of JWKS fetches.
pub struct Idp {
    pub rsa: SigningKey,
    pub ec: SigningKey,
    pub ed: SigningKey,
    pub jwks_url: String,
    pub fetches: Arc<AtomicUsize>,
    pub keys: Arc<Mutex<Value>>,
}

impl Idp {
    pub async fn start() -> Idp {
        let rsa = SigningKey::generate(KeyAlg::Rs256, "rsa-1").expect("rsa key");
        let ec = SigningKey::generate(KeyAlg::Es256, "ec-1").expect("ec key");
        let ed = SigningKey::generate(KeyAlg::EdDsa, "ed-1").expect("ed key");
        let keys = Arc::new(Mutex::new(json!({"keys": [rsa.public_jwk(), ec.public_jwk(), ed.public_jwk()]})));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (k, f) = (keys.clone(), fetches.clone());
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (k, f) = (k.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    axum::Json(k.lock().expect("jwks").clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind idp");
        let addr = listener.local_addr().expect("idp addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Idp { rsa, ec, ed, jwks_url: format!("http://{addr}/jwks.json"), fetches, keys }
    }

    pub fn issuer_config(&self) -> IssuerConfig {
        IssuerConfig::new(ISSUER, self.jwks_url.clone(), vec![AUDIENCE.to_owned()])
    }

    /// Standard claims for `subject` with `email` (verified), valid 10 minutes.
    pub fn claims(subject: &str, email: &str) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "email": email, "email_verified": true,
            "name": email.split('@').next().unwrap_or("someone"), "iat": now, "nbf": now - 5, "exp": now + 600,
        })
    }

    pub fn token(&self, subject: &str, email: &str) -> String {
        self.rsa.sign(&Self::claims(subject, email)).expect("sign")
    }
}

/// A running orgplane with its database and identity provider.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub idp: Idp,
    pub backend: Backend,
    pub database_url: String,
    pub data_dir: PathBuf,
    /// The server's clock: runs with the machine's until a test advances it.
    pub clock: Arc<ManualClock>,
    /// The running server's state, for stepping background work directly.
    pub state: AppState,
    _db: TestDb,
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// Like [`spawn_app`], with a chance to adjust the config first.
pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<TestApp> {
    let (db, url) = TestDb::create(backend).await?;
    let idp = Idp::start().await;
    let data_dir = std::env::temp_dir().join(unique("orgplane_data"));
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: Some(url.clone()),
        data_dir: data_dir.clone(),
        max_connections: 8,
        ..Config::default()
    };
    config.auth.issuers = vec![idp.issuer_config()];
    config.auth.jwks_refresh_min_interval_secs = 0;
    adjust(&mut config);
    let clock = Arc::new(ManualClock::running());
    let app = Application::build_with_clock(config, clock.clone()).await.expect("orgplane builds");
    let addr = app.local_addr();
    let state = app.state().clone();
    tokio::spawn(app.run_until(std::future::pending()));
    Some(TestApp {
        addr,
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        idp,
        backend,
        database_url: url,
        data_dir,
        clock,
        state,
        _db: db,
    })
}

/// A signed-in user of a test.
#[derive(Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub token: String,
    pub personal_org: String,
}

/// A response: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Res {
    /// The contract's error code, if this is an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        &self.body
    }

    /// Asserts an error status and code, with a non-empty message.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        assert_eq!(self.code(), code, "unexpected code; body: {}", self.body);
        assert!(
            self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error body carries a message: {}",
            self.body
        );
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> Res {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Res { status, body, headers }
    }

    pub async fn get(&self, path: &str, token: &str) -> Res {
        self.send(reqwest::Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Res {
        self.send(reqwest::Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Res {
        self.send(reqwest::Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Res {
        self.send(reqwest::Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Res {
        self.send(reqwest::Method::DELETE, path, Some(token), None).await
    }

    /// A user signed in through the test IdP, provisioned via `GET /v1/me`.
    pub async fn user(&self, email: &str) -> TestUser {
        let subject = format!("sub-{email}");
        let token = self.idp.token(&subject, email);
        let me = self.get("/v1/me", &token).await;
        let body = me.expect(200);
        let personal = body["memberships"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["kind"] == "personal"))
            .and_then(|m| m["org_id"].as_str())
            .expect("a new user has a personal org")
            .to_owned();
        TestUser {
            id: body["id"].as_str().expect("user id").to_owned(),
            email: email.to_owned(),
            token,
            personal_org: personal,
        }
    }

    /// A team org owned by `owner`; returns its id.
    pub async fn team(&self, owner: &TestUser, name: &str) -> String {
        let res = self.post("/v1/orgs", &owner.token, json!({"name": name})).await;
        res.expect(201)["id"].as_str().expect("org id").to_owned()
    }

    /// Invites `email` to `org` as `role` and returns the accept token.
    pub async fn invite(&self, org: &str, by: &TestUser, email: &str, role: &str) -> String {
        let res =
            self.post(&format!("/v1/orgs/{org}/invitations"), &by.token, json!({"email": email, "role": role})).await;
        res.expect(201)["token"].as_str().expect("token").to_owned()
    }

    /// Makes `user` a member of `org` with `role`, through a real invitation.
    pub async fn add_member(&self, org: &str, owner: &TestUser, user: &TestUser, role: &str) {
        let token = self.invite(org, owner, &user.email, role).await;
        self.post("/v1/invitations/accept", &user.token, json!({"token": token})).await.expect(200);
    }

    /// A server API key, created the way `orgplane keys create` does.
    pub async fn api_key(&self) -> String {
        let store = orgplane_store::Store::connect(&orgplane_store::ConnectOptions {
            max_connections: 2,
            ..orgplane_store::ConnectOptions::new(self.database_url.clone())
        })
        .await
        .expect("store");
        let (key, hash) = orgplane_auth::api_key::generate();
        store.create_api_key("tests", &hash, time::OffsetDateTime::now_utc()).await.expect("api key");
        store.close().await;
        key
    }

    /// Runs one SQL statement against the app's database (to set up states
    /// the API can't reach in a test's time, such as an expired invitation).
    pub async fn sql(&self, statement: &str) {
        use sqlx::Connection;
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url).await.expect("sqlite");
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut c).await.expect("sql");
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.database_url).await.expect("pg");
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut c).await.expect("sql");
            }
        }
    }

    /// One number from the database (`SELECT COUNT(*) …`).
    pub async fn count(&self, query: &str) -> i64 {
        use sqlx::Connection;
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url).await.expect("sqlite");
                sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_one(&mut c).await.expect("count")
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.database_url).await.expect("pg");
                sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_one(&mut c).await.expect("count")
            }
        }
    }
}

impl TestApp {
    /// The first column of every row of `query`, as text.
    pub async fn strings(&self, query: &str) -> Vec<String> {
        use sqlx::Connection;
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url).await.expect("sqlite");
                sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_all(&mut c).await.expect("rows")
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.database_url).await.expect("pg");
                sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_all(&mut c).await.expect("rows")
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Reads a response into a [`Res`].
pub async fn read_res(resp: reqwest::Response) -> Res {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Res { status, body, headers }
}

/// base64url without padding, as JOSE uses it.
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS assembled by hand: `b64(header).b64(claims).b64(signature)`.
pub fn handmade_jwt(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64url(header.to_string()), b64url(claims.to_string()), b64url(signature))
}

/// A well-formed id of type `prefix` that names nothing.
pub fn unknown_id(prefix: &str) -> String {
    let text = uuid::Uuid::now_v7().simple().to_string();
    // 26 characters of the id alphabet, the first one at most `7`.
    let tail: String = text.chars().filter(|c| c.is_ascii_digit()).chain(std::iter::repeat('0')).take(25).collect();
    format!("{prefix}_0{tail}")
}

impl TestApp {
    /// Sends a request built by the caller (custom headers, raw bodies).
    pub async fn send_request(&self, req: reqwest::RequestBuilder) -> Res {
        read_res(req.send().await.expect("request reaches the server")).await
    }

    /// A request with a raw body and content type.
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Res {
        let mut req = self.http.request(method, self.url(path)).header("content-type", content_type).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send_request(req).await
    }

    /// A GET without `Authorization`.
    pub async fn get_anonymous(&self, path: &str) -> Res {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    /// A signed-in user whose token carries exactly `claims` (signed RS256),
    /// provisioned via `GET /v1/me`.
    pub async fn user_with_claims(&self, claims: &Value) -> TestUser {
        let token = self.idp.rsa.sign(claims).expect("sign");
        let me = self.get("/v1/me", &token).await;
        let body = me.expect(200);
        let personal = body["memberships"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["kind"] == "personal"))
            .and_then(|m| m["org_id"].as_str())
            .expect("a new user has a personal org")
            .to_owned();
        TestUser {
            id: body["id"].as_str().expect("user id").to_owned(),
            email: claims["email"].as_str().unwrap_or_default().to_owned(),
            token,
            personal_org: personal,
        }
    }

    /// `user`'s role in `org` as `GET /v1/me` lists it (None: not listed),
    /// with the org's name.
    pub async fn me_membership(&self, user: &TestUser, org: &str) -> Option<(String, String)> {
        let me = self.get("/v1/me", &user.token).await;
        me.expect(200)["memberships"].as_array().expect("memberships").iter().find(|m| m["org_id"] == org).map(|m| {
            (m["role"].as_str().unwrap_or_default().to_owned(), m["org_name"].as_str().unwrap_or_default().to_owned())
        })
    }

    /// How many members `org` has (SQL).
    pub async fn member_count(&self, org: &str) -> i64 {
        self.count(&format!("SELECT COUNT(*) FROM memberships WHERE org_id = '{org}'")).await
    }

    /// How many owners `org` has (SQL).
    pub async fn owner_count(&self, org: &str) -> i64 {
        self.count(&format!("SELECT COUNT(*) FROM memberships WHERE org_id = '{org}' AND role = 'owner'")).await
    }

    /// `user`'s role in `org` via `GET /v1/orgs/{org}/members`, as seen by `by`.
    pub async fn role_of(&self, org: &str, by: &TestUser, user: &TestUser) -> Option<String> {
        let res = self.get(&format!("/v1/orgs/{org}/members?limit=100"), &by.token).await;
        res.expect(200)["data"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["user_id"] == user.id.as_str())
            .and_then(|m| m["role"].as_str())
            .map(str::to_owned)
    }
}

/// The router's source: tests read the routes from it, so that a route added
/// there is covered (documented in OpenAPI, isolated between tenants)
/// without editing a list.
pub const ROUTER_SOURCE: &str = include_str!("../../crates/server/src/lib.rs");

/// Every `.route("path", method(handler).method(handler))` of the router,
/// as (path, [lower-case methods]).
pub fn router_routes() -> Vec<(String, Vec<String>)> {
    let mut routes = Vec::new();
    let mut rest = ROUTER_SOURCE;
    while let Some(at) = rest.find(".route(\"") {
        let call = &rest[at + ".route(".len()..];
        // The call's arguments, up to its closing parenthesis.
        let mut depth = 1;
        let mut end = call.len();
        for (i, c) in call.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let args = &call[..end];
        let path = args[1..].split('"').next().expect("a path literal").to_owned();
        let handlers = &args[path.len() + 2..];
        let mut methods = Vec::new();
        for method in ["get", "post", "put", "patch", "delete"] {
            let needle = format!("{method}(");
            let mut from = 0;
            while let Some(pos) = handlers[from..].find(&needle) {
                let start = from + pos;
                let before = handlers[..start].chars().last();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    methods.push(method.to_owned());
                    break;
                }
                from = start + needle.len();
            }
        }
        routes.push((path, methods));
        rest = &call[end..];
    }
    routes
}

/// A second orgplane on a test app's database, that a test stops and
/// starts again (the same listen address): a server restart as its
/// clients see it.
pub struct StoppableServer {
    pub addr: SocketAddr,
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Starts another orgplane on this app's database, listening on
    /// `listen` (`127.0.0.1:0` for a free port, or a stopped server's address).
    pub async fn start_server(&self, listen: SocketAddr) -> StoppableServer {
        let mut config = Config {
            listen,
            database_url: Some(self.database_url.clone()),
            data_dir: self.data_dir.join(unique("server")),
            migrate_on_start: false,
            max_connections: 4,
            ..Config::default()
        };
        config.auth.issuers = vec![self.idp.issuer_config()];
        let server = Application::build(config).await.expect("the second server builds");
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async move {
            let _ = stopped.await;
        }));
        StoppableServer { addr, base: format!("http://{addr}"), stop, task }
    }
}

impl StoppableServer {
    /// Stops it the way a deploy does: in-flight requests finish, event
    /// streams end, the port is released.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the server task").expect("the server stops cleanly");
    }
}
