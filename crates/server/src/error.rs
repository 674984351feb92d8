//! The one mapping from errors to the contract's error body:
//! `{"error": {"code", "message", "param"?}}` with its status code.
//! Internal errors are logged with the request id and returned as a plain
//! 500 that names the request id, never the cause.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orgplane_core::DomainError;
use orgplane_store::StoreError;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// Seconds for the `Retry-After` header, when trying again soon may work.
    pub retry_after: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The contract's error object.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `unauthenticated`, `forbidden`, `not_found`, `invalid_request`, `conflict`, `feature_not_entitled`,
    /// `limit_reached`, `personal_org`, `last_owner`, `billing_admin_must_transfer`, `subscription_exists`,
    /// `invalid_signature`, `rate_limited`, `payload_too_large`, `invitation_expired`, `unavailable`, `internal_error`.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), param: None, retry_after: None }
    }

    /// `503 unavailable` with `Retry-After: {retry_after}`: something we
    /// depend on does not answer now; the same request may succeed later.
    pub fn unavailable(message: impl Into<String>, retry_after: u32) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes; send less (the limit is max_body_bytes)"),
        )
    }

    /// A failure on our side: logged in full, answered with the request id only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side; retry later, and quote the X-Request-Id header if it persists",
        )
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let message = e.to_string();
        match e {
            DomainError::NotFound { what } => ApiError::not_found(format!("{what} not found")),
            DomainError::Forbidden { .. } => ApiError::forbidden(message),
            DomainError::PersonalOrg { .. } => ApiError::new(StatusCode::FORBIDDEN, "personal_org", message),
            DomainError::LastOwner => ApiError::new(StatusCode::CONFLICT, "last_owner", message),
            DomainError::BillingAdminMustTransfer => {
                ApiError::new(StatusCode::CONFLICT, "billing_admin_must_transfer", message)
            }
            DomainError::LimitReached { limit, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "limit_reached", message).with_param(limit)
            }
            DomainError::FeatureNotEntitled { feature, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "feature_not_entitled", message).with_param(feature)
            }
            DomainError::SubscriptionExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "subscription_exists", message)
            }
            DomainError::Conflict { .. } => ApiError::conflict(message),
            DomainError::InvalidRequest { param, .. } => {
                let err = ApiError::invalid(message);
                match param {
                    Some(p) => err.with_param(p),
                    None => err,
                }
            }
            DomainError::InvitationExpired => {
                ApiError::new(StatusCode::BAD_REQUEST, "invitation_expired", message).with_param("token")
            }
        }
    }
}

/// The `Retry-After` of a database outage: about one acquire timeout.
const DATABASE_RETRY_AFTER_SECS: u32 = 2;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(d) => d.into(),
            StoreError::Constraint(violation) => {
                tracing::warn!(constraint = %violation.constraint, error = %violation.error,
                    "a database constraint refused the change");
                violation.error.into()
            }
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "the database is unavailable");
                ApiError::unavailable(
                    "the database is unavailable right now; nothing was changed, retry after the Retry-After seconds",
                    DATABASE_RETRY_AFTER_SECS,
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A body refused for its size was not read: close the connection so
        // the client sees this answer instead of a reset on its next write.
        let close = self.status == StatusCode::PAYLOAD_TOO_LARGE;
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message, param: self.param } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if close {
            response
                .headers_mut()
                .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
