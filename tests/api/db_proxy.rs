//! A TCP proxy between orgplane and the test PostgreSQL server, for the
//! PostgreSQL-only tests of a slow or lost database (SQLite is a file: it
//! has no link to lose). The proxy forwards every connection, and can make
//! the database's answers arrive late, hold every byte in both directions
//! (a black hole: nothing is refused, nothing answers), or cut every
//! connection and refuse new ones; then it forwards again, without a restart
//! on either side.
//!
//! Also here: [`Replica`], a second orgplane on the same database, reached
//! through a proxy.

use std::net::SocketAddr;
use std::time::Duration;

use orgplane_server::{Application, Config};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::helpers::{Res, TestApp, read_res};

/// What the link to the database does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Forwards; every chunk the database sends arrives `latency` late.
    Forward { latency: Duration },
    /// Holds every byte of open and new connections until the link changes.
    BlackHole,
    /// Cuts open connections and closes new ones at once.
    Down,
}

impl Link {
    pub const UP: Link = Link::Forward { latency: Duration::ZERO };
}

pub struct DbProxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    accepting: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    /// A proxy to the PostgreSQL server of `database_url` (a
    /// `postgres://user@host:port/db` URL as the test harness makes them).
    pub async fn start(database_url: &str) -> DbProxy {
        let (_, upstream, _) = split_host(database_url);
        let upstream = upstream.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (link, link_rx) = watch::channel(Link::UP);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream.clone(), link_rx.clone()));
            }
        });
        DbProxy { addr, link, accepting }
    }

    /// `database_url` with the proxy in place of the database server.
    pub fn url_for(&self, database_url: &str) -> String {
        let (scheme_and_user, _, rest) = split_host(database_url);
        format!("{scheme_and_user}{}{rest}", self.addr)
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.link.send_replace(Link::Down);
    }
}

/// `postgres://user@host:port/db` as (`postgres://user@`, `host:port`, `/db`).
fn split_host(url: &str) -> (&str, &str, &str) {
    let after_scheme = url.find("://").expect("a URL") + 3;
    let start = url[after_scheme..].find('@').map_or(after_scheme, |at| after_scheme + at + 1);
    let end = url[start..].find('/').map_or(url.len(), |slash| start + slash);
    (&url[..start], &url[start..end], &url[end..])
}

/// One client connection: waits out a black hole before connecting (the
/// client's first bytes wait in its socket), then pumps both ways.
async fn serve(client: TcpStream, upstream: String, mut link: watch::Receiver<Link>) {
    loop {
        match *link.borrow_and_update() {
            Link::Down => return,
            Link::BlackHole => {}
            Link::Forward { .. } => break,
        }
        if link.changed().await.is_err() {
            return;
        }
    }
    let Ok(server) = TcpStream::connect(&upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(pump(client_read, server_write, link.clone(), false), pump(server_read, client_write, link, true),);
}

/// Copies `from` to `to` chunk by chunk, as the link allows. With `late`,
/// each chunk is written `latency` after it was read (chunks stay
/// pipelined: a second chunk does not wait for the first one's delay).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: watch::Receiver<Link>, late: bool) {
    let (chunks, mut queued) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if chunks.send((Instant::now(), buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let mut writer_link = link.clone();
    let write = async move {
        while let Some((read_at, bytes)) = queued.recv().await {
            loop {
                let now = *writer_link.borrow_and_update();
                match now {
                    Link::Down => return,
                    Link::Forward { latency } => {
                        if late {
                            tokio::time::sleep_until(read_at + latency).await;
                        }
                        break;
                    }
                    Link::BlackHole => {
                        if writer_link.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let mut cut_link = link;
    let cut = async move {
        loop {
            if *cut_link.borrow_and_update() == Link::Down || cut_link.changed().await.is_err() {
                return;
            }
        }
    };
    // `Down` drops both halves at once, idle connections included.
    tokio::select! {
        _ = async { tokio::join!(read, write) } => {}
        _ = cut => {}
    }
}

/// A second orgplane serving the database of `app`, reached through
/// `proxy`, with `app`'s identity provider. It does not migrate (`app` did).
pub struct Replica {
    pub base: String,
    pub http: reqwest::Client,
}

impl Replica {
    pub async fn start(app: &TestApp, proxy: &DbProxy, adjust: impl FnOnce(&mut Config)) -> Replica {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            database_url: Some(proxy.url_for(&app.database_url)),
            data_dir: app.data_dir.join("replica"),
            migrate_on_start: false,
            max_connections: 4,
            ..Config::default()
        };
        config.auth.issuers = vec![app.idp.issuer_config()];
        adjust(&mut config);
        let replica = Application::build(config).await.expect("the replica builds");
        let base = format!("http://{}", replica.local_addr());
        tokio::spawn(replica.run_until(std::future::pending()));
        Replica { base, http: reqwest::Client::new() }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> Res {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        read_res(req.send().await.expect("request reaches the replica")).await
    }
}

#[test]
fn the_proxy_url_replaces_only_the_host() {
    assert_eq!(
        split_host("postgres://postgres@127.0.0.1:5432/db_1"),
        ("postgres://postgres@", "127.0.0.1:5432", "/db_1")
    );
    assert_eq!(split_host("postgres://127.0.0.1:5432/db"), ("postgres://", "127.0.0.1:5432", "/db"));
}
