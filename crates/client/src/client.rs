//! `Client`: one `reqwest` client, a base URL and a credential; every call
//! goes through [`Client::send`], which adds `Authorization` and an
//! `Idempotency-Key` on POSTs, retries what is safe to retry, and turns error
//! answers into [`Error::Api`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Error, ErrorCode, Result};
use crate::types::{Cursor, Page};

/// Who the client calls as.
#[derive(Clone)]
pub enum Credentials {
    /// A server API key `sk_…` (backends only): acts on any org.
    ApiKey(String),
    /// An end user's JWT, or an org API key `ok_…`.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self {
            Credentials::ApiKey(_) => f.write_str("ApiKey(…)"),
            Credentials::Bearer(_) => f.write_str("Bearer(…)"),
        }
    }
}

/// When a failed call is tried again.
///
/// Only idempotent calls are retried: GET, PUT and DELETE, and POST because
/// every POST carries one `Idempotency-Key` for all its attempts (the server
/// answers a repeat with the first response). PATCH is never retried.
/// A retry follows a connection failure, a timeout, 429 or 503, after
/// `base_delay · 2^attempt` (at most `max_delay`, at least the server's
/// `Retry-After`); a `Retry-After` longer than `max_delay` ends the retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first (0: no retries).
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 3, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(5) }
    }
}

impl RetryPolicy {
    pub const NONE: RetryPolicy = RetryPolicy { max_retries: 0, base_delay: Duration::ZERO, max_delay: Duration::ZERO };

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16));
        exp.min(self.max_delay)
    }
}

struct Inner {
    http: reqwest::Client,
    /// For event streams: no total timeout (a stream stays open for hours).
    stream_http: reqwest::Client,
    base: String,
    authorization: HeaderValue,
    retry: RetryPolicy,
    page_size: u32,
}

/// orgplane's API. Cheap to clone (one shared connection pool).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.inner.base).finish_non_exhaustive()
    }
}

/// A path segment with everything but unreserved characters escaped, so that
/// an id can never reach another route.
pub(crate) fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of the orgplane at `base_url` (e.g. `http://127.0.0.1:8080`),
    /// with a 30 s timeout per request and the default [`RetryPolicy`].
    pub fn new(base_url: impl Into<String>, credentials: Credentials) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let stream_http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().unwrap_or_default();
        let mut client = Client::with_http_client(http, base_url, credentials);
        client = client.rebuild(|inner| inner.stream_http = stream_http);
        client
    }

    /// Like [`Client::new`] with a `reqwest::Client` of yours (proxies,
    /// timeouts, TLS roots). It serves event streams too: give it no total
    /// timeout if you follow the stream.
    pub fn with_http_client(http: reqwest::Client, base_url: impl Into<String>, credentials: Credentials) -> Client {
        let secret = match &credentials {
            Credentials::ApiKey(s) | Credentials::Bearer(s) => s,
        };
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {secret}")).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        authorization.set_sensitive(true);
        let base = base_url.into().trim_end_matches('/').to_owned();
        Client {
            inner: Arc::new(Inner {
                stream_http: http.clone(),
                http,
                base,
                authorization,
                retry: RetryPolicy::default(),
                page_size: 100,
            }),
        }
    }

    /// The same client (and connection pool) calling as someone else: one
    /// `Client` per end user's request costs no new connections.
    pub fn with_credentials(&self, credentials: Credentials) -> Client {
        let fresh = Client::with_http_client(self.inner.http.clone(), self.inner.base.clone(), credentials);
        let authorization = fresh.inner.authorization.clone();
        self.clone().rebuild(|inner| inner.authorization = authorization)
    }

    /// The same client with another retry policy.
    pub fn with_retry(self, retry: RetryPolicy) -> Client {
        self.rebuild(|inner| inner.retry = retry)
    }

    /// The same client asking for `size` items per page (1 to 100; default 100).
    pub fn with_page_size(self, size: u32) -> Client {
        self.rebuild(|inner| inner.page_size = size.clamp(1, 100))
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Client {
        let mut inner = Inner {
            http: self.inner.http.clone(),
            stream_http: self.inner.stream_http.clone(),
            base: self.inner.base.clone(),
            authorization: self.inner.authorization.clone(),
            retry: self.inner.retry,
            page_size: self.inner.page_size,
        };
        change(&mut inner);
        Client { inner: Arc::new(inner) }
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Sends one call and reads its JSON answer; see [`RetryPolicy`] for
    /// what is retried. `path` starts with `/v1/`.
    pub async fn send<B, T>(&self, method: Method, path: &str, query: &[(&str, String)], body: Option<&B>) -> Result<T>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let retry = self.inner.retry;
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::POST);
        // One key for every attempt: that is what makes a retried POST safe.
        let idempotency_key = (method == Method::POST).then(|| uuid::Uuid::now_v7().to_string());
        let url = format!("{}{path}", self.inner.base);
        let mut attempt = 0;
        loop {
            let mut req = self
                .inner
                .http
                .request(method.clone(), &url)
                .header(reqwest::header::AUTHORIZATION, self.inner.authorization.clone());
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(key) = &idempotency_key {
                req = req.header("idempotency-key", key);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let error = match req.send().await {
                Ok(resp) if resp.status().is_success() => return read_json(resp).await,
                Ok(resp) => api_error(resp).await,
                Err(e) => Error::Transport(e),
            };
            let wait = match &error {
                Error::Api(e) if matches!(e.status, 429 | 503) => {
                    let backoff = retry.backoff(attempt);
                    match e.retry_after.map(Duration::from_secs) {
                        Some(after) if after > retry.max_delay => None,
                        Some(after) => Some(after.max(backoff)),
                        None => Some(backoff),
                    }
                }
                Error::Transport(e) if !e.is_builder() && !e.is_decode() => Some(retry.backoff(attempt)),
                _ => None,
            };
            match wait {
                Some(wait) if idempotent && attempt < retry.max_retries => {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => return Err(error),
            }
        }
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send::<(), T>(Method::GET, path, &[], None).await
    }

    pub(crate) async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    /// One page of a list route.
    pub async fn page<T: DeserializeOwned>(
        &self,
        path: &str,
        filters: &[(&str, String)],
        starting_after: Option<&str>,
    ) -> Result<Page<T>> {
        let mut query: Vec<(&str, String)> = filters.to_vec();
        query.push(("limit", self.inner.page_size.to_string()));
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_owned()));
        }
        self.send::<(), Page<T>>(Method::GET, path, &query, None).await
    }

    /// Every item of a list route, page after page (`?starting_after=` the
    /// last item), fetched as the stream is read. An error ends the stream
    /// after it is yielded.
    pub fn paginate<T>(
        &self,
        path: String,
        filters: Vec<(&'static str, String)>,
    ) -> impl Stream<Item = Result<T>> + Send + 'static
    where
        T: DeserializeOwned + Cursor + Send + 'static,
    {
        struct State<T> {
            client: Client,
            path: String,
            filters: Vec<(&'static str, String)>,
            ready: VecDeque<T>,
            after: Option<String>,
            done: bool,
        }
        let state: State<T> =
            State { client: self.clone(), path, filters, ready: VecDeque::new(), after: None, done: false };
        futures_util::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(item) = s.ready.pop_front() {
                    if s.ready.is_empty() {
                        s.after = Some(item.cursor().to_owned());
                    }
                    return Some((Ok(item), s));
                }
                if s.done {
                    return None;
                }
                match s.client.page::<T>(&s.path, &s.filters, s.after.as_deref()).await {
                    Ok(page) => {
                        s.done = !page.has_more || page.data.is_empty();
                        s.ready.extend(page.data);
                    }
                    Err(e) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                }
            }
        })
    }

    /// Opens `GET /v1/events/stream` (API key): every committed change after
    /// `last_event_id` (or, without one, from the next change on).
    pub async fn event_stream(&self, last_event_id: Option<&str>) -> Result<crate::events::EventStream> {
        let mut req = self
            .inner
            .stream_http
            .get(format!("{}/v1/events/stream", self.inner.base))
            .header(reqwest::header::AUTHORIZATION, self.inner.authorization.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        Ok(crate::events::EventStream::new(resp, last_event_id.map(str::to_owned)))
    }
}

async fn read_json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Decode { status, message: e.to_string() })
}

/// The contract's error from a failed answer; a body that is not the
/// contract's still gives the status and a code derived from it.
pub(crate) async fn api_error(resp: reqwest::Response) -> Error {
    let status = resp.status();
    let headers: HeaderMap = resp.headers().clone();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request_id = header("x-request-id");
    let retry_after = header("retry-after").and_then(|v| v.trim().parse().ok());
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Error::Transport(e),
    };
    #[derive(serde::Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
        message: String,
        param: Option<String>,
    }
    let (code, message, param) = match serde_json::from_slice::<Body>(&bytes) {
        Ok(Body { error }) => (ErrorCode::parse(&error.code), error.message, error.param),
        Err(_) => {
            let text = String::from_utf8_lossy(&bytes);
            let excerpt: String = text.chars().take(200).collect();
            (ErrorCode::for_status(status.as_u16()), format!("orgplane answered {status}: {excerpt}"), None)
        }
    };
    Error::Api(ApiError { status: status.as_u16(), code, message, param, request_id, retry_after })
}
