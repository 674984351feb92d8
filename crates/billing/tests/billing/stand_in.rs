//! A local stand-in for a provider's API: a real HTTP server on
//! 127.0.0.1:0 that answers every request with one canned response and
//! records each request exactly (method, path, query, headers, body).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as form fields, in order (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> Vec<(String, String)> {
        let text = std::str::from_utf8(&self.body).expect("form bodies are UTF-8");
        // The url crate's query parser is the form-urlencoded decoder.
        let url = reqwest::Url::parse(&format!("http://form.invalid/?{text}")).expect("parses");
        url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Clone)]
struct Shared {
    status: StatusCode,
    body: Arc<String>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

pub struct StandIn {
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl StandIn {
    /// Serves `body` as JSON with `status` to every request.
    pub async fn start(status: u16, body: impl Into<String>) -> StandIn {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            status: StatusCode::from_u16(status).expect("valid status"),
            body: Arc::new(body.into()),
            requests: requests.clone(),
        };
        let app = Router::new().fallback(record).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let origin = format!("http://{}", listener.local_addr().expect("has an address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
        StandIn { origin, requests }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("not poisoned").clone()
    }

    /// The one request the test made.
    pub fn only_request(&self) -> Recorded {
        let mut all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one request, got {all:#?}");
        all.remove(0)
    }
}

async fn record(State(shared): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    shared.requests.lock().expect("not poisoned").push(Recorded {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: body.to_vec(),
    });
    (shared.status, [(header::CONTENT_TYPE, "application/json")], shared.body.as_str().to_owned()).into_response()
}

/// A base URL where nothing listens: a port that was just free.
pub async fn unreachable_origin() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    drop(listener);
    format!("http://{addr}")
}
