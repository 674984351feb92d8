//! `RequireFeature` and `RequireLimit`: tower layers for axum routes that
//! let a request through only when its org has the feature, or room under
//! the limit, and otherwise answer 403 with the contract's error body.
//!
//! The decision is read from an [`EntitlementCache`] (no network call on the
//! hot path). Only a cache miss reads the org's entitlements from orgplane,
//! and a refusal is confirmed with `POST /v1/orgs/{org}/check` before it is
//! answered: the server's reason becomes the message, and a cache that
//! missed an upgrade lets the request through (and drops its entry) instead
//! of refusing it wrongly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::cache::EntitlementCache;
use crate::error::Error;
use crate::types::{CheckRequest, Entitlements, LimitUsage};

/// Finds the org of a request (a path segment, a header, a session).
pub type OrgFrom = Arc<dyn Fn(&Request) -> Option<String> + Send + Sync>;

enum Requirement {
    Feature(String),
    Limit { key: String, amount: i64 },
}

impl Requirement {
    /// `None` when `entitlements` allow it; else the refusal (code, message, param).
    fn refusal(&self, e: &Entitlements) -> Option<(&'static str, String, String)> {
        match self {
            Requirement::Feature(feature) => (!e.has(feature)).then(|| {
                let message = format!("the {} plan does not include `{feature}`; upgrade to use it", e.plan);
                ("feature_not_entitled", message, feature.clone())
            }),
            Requirement::Limit { key, amount } => (!e.remaining(key).allows(*amount)).then(|| {
                let message = match e.limits.get(key) {
                    Some(LimitUsage { limit: Some(max), used }) => {
                        format!("the {} plan allows {max} {key} and {used} are in use; upgrade or remove some", e.plan)
                    }
                    _ => format!("the {} plan has no `{key}` limit", e.plan),
                };
                ("limit_reached", message, key.clone())
            }),
        }
    }

    fn check(&self) -> CheckRequest {
        match self {
            Requirement::Feature(feature) => CheckRequest::Feature { feature: feature.clone() },
            Requirement::Limit { key, amount } => CheckRequest::Limit { limit: key.clone(), amount: *amount },
        }
    }
}

#[derive(Clone)]
struct Guard {
    requirement: Arc<Requirement>,
    org_from: OrgFrom,
    cache: Option<EntitlementCache>,
}

/// What the cache alone says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// The cache would refuse it (to be confirmed by the server).
    Refuse { org: String },
    /// The cache holds nothing fresh for the org: ask the server.
    Miss { org: String },
    /// The request names no org: 404.
    NoOrg,
    /// No cache was given and none is in the request's extensions: 500.
    NoCache,
}

fn error_response(status: StatusCode, code: &str, message: String, param: Option<String>) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(param) = param {
        error["param"] = Value::String(param);
    }
    (status, Json(json!({ "error": error }))).into_response()
}

impl Guard {
    fn cache<'a>(&'a self, req: &'a Request) -> Option<&'a EntitlementCache> {
        self.cache.as_ref().or_else(|| req.extensions().get::<EntitlementCache>())
    }

    fn verdict(&self, req: &Request) -> Verdict {
        let Some(org) = (self.org_from)(req).filter(|o| !o.is_empty()) else { return Verdict::NoOrg };
        let Some(cache) = self.cache(req) else { return Verdict::NoCache };
        match cache.with_cached(&org, |e| self.requirement.refusal(e).is_none()) {
            Some(true) => Verdict::Allow,
            Some(false) => Verdict::Refuse { org },
            None => Verdict::Miss { org },
        }
    }

    /// The slow path: `None` lets the request through, `Some` answers it.
    async fn decide(&self, verdict: Verdict, cache: Option<EntitlementCache>) -> Option<Response> {
        let org = match verdict {
            Verdict::Allow => return None,
            Verdict::NoOrg => {
                return Some(error_response(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "this request names no organization".to_owned(),
                    None,
                ));
            }
            Verdict::NoCache => {
                return Some(error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the guard has no EntitlementCache: give one with `.with_cache(cache)` or `Extension(cache)`"
                        .to_owned(),
                    None,
                ));
            }
            Verdict::Refuse { org } | Verdict::Miss { org } => org,
        };
        let cache = cache?;
        let entitlements = match cache.get(&org).await {
            Ok(e) => e,
            Err(Error::Api(e)) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
                return Some((status, Json(e.to_body())).into_response());
            }
            Err(e) => {
                return Some(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("the entitlement service could not be reached; retry shortly ({e})"),
                    None,
                ));
            }
        };
        let (code, message, param) = self.requirement.refusal(&entitlements)?;
        // Confirm with the server; its word stands, and the cache's when it
        // can't be asked.
        let message = match cache.client().check_entitlement(&org, &self.requirement.check()).await {
            Ok(answer) if answer.allowed => {
                cache.invalidate(&org);
                return None;
            }
            Ok(answer) => answer.reason.unwrap_or(message),
            Err(_) => message,
        };
        Some(error_response(StatusCode::FORBIDDEN, code, message, Some(param)))
    }
}

/// Lets a request through only when its org's plan has `feature`; else 403
/// `feature_not_entitled`.
#[derive(Clone)]
pub struct RequireFeature {
    guard: Guard,
}

impl RequireFeature {
    /// `org_from` finds the request's org. The cache is the one given with
    /// [`RequireFeature::with_cache`], or else an `EntitlementCache` in the
    /// request's extensions (`Router::layer(Extension(cache))`).
    pub fn new(
        feature: impl Into<String>,
        org_from: impl Fn(&Request) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        let requirement = Arc::new(Requirement::Feature(feature.into()));
        RequireFeature { guard: Guard { requirement, org_from: Arc::new(org_from), cache: None } }
    }

    pub fn with_cache(mut self, cache: EntitlementCache) -> Self {
        self.guard.cache = Some(cache);
        self
    }

    /// What the cache alone says of `req` (the layer's hot path).
    pub fn verdict(&self, req: &Request) -> Verdict {
        self.guard.verdict(req)
    }
}

/// Lets a request through only when `amount` (default 1) more of `limit`
/// fit; else 403 `limit_reached`. A fast pre-check: creating the counted
/// thing with `create_resource` is what holds the limit atomically.
#[derive(Clone)]
pub struct RequireLimit {
    guard: Guard,
}

impl RequireLimit {
    pub fn new(
        limit: impl Into<String>,
        org_from: impl Fn(&Request) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        let requirement = Arc::new(Requirement::Limit { key: limit.into(), amount: 1 });
        RequireLimit { guard: Guard { requirement, org_from: Arc::new(org_from), cache: None } }
    }

    /// How many more the request needs (default 1).
    pub fn amount(mut self, amount: i64) -> Self {
        if let Requirement::Limit { key, .. } = &*self.guard.requirement {
            self.guard.requirement = Arc::new(Requirement::Limit { key: key.clone(), amount });
        }
        self
    }

    pub fn with_cache(mut self, cache: EntitlementCache) -> Self {
        self.guard.cache = Some(cache);
        self
    }

    pub fn verdict(&self, req: &Request) -> Verdict {
        self.guard.verdict(req)
    }
}

impl<S> tower_layer::Layer<S> for RequireFeature {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded { inner, guard: self.guard.clone() }
    }
}

impl<S> tower_layer::Layer<S> for RequireLimit {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded { inner, guard: self.guard.clone() }
    }
}

/// A service behind a [`RequireFeature`] or [`RequireLimit`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

impl<S> tower_service::Service<Request> for Guarded<S>
where
    S: tower_service::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let verdict = self.guard.verdict(&req);
        if verdict == Verdict::Allow {
            return Box::pin(self.inner.call(req));
        }
        // The ready service serves this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        let cache = guard.cache(&req).cloned();
        Box::pin(async move {
            match guard.decide(verdict, cache).await {
                None => inner.call(req).await,
                Some(answer) => Ok(answer),
            }
        })
    }
}
