//! One error type for every call: the contract's error body
//! (`{"error": {"code", "message", "param"?}}`) with its status, or a
//! transport or decoding failure. Never a panic, never a bare string.

use std::fmt;

/// The contract's error codes (API.md); a newer server may send others,
/// kept verbatim in [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotFound,
    InvalidRequest,
    Conflict,
    FeatureNotEntitled,
    LimitReached,
    PersonalOrg,
    LastOwner,
    BillingAdminMustTransfer,
    SubscriptionExists,
    InvalidSignature,
    InvitationExpired,
    RateLimited,
    PayloadTooLarge,
    Unavailable,
    InternalError,
    Other(String),
}

impl ErrorCode {
    const KNOWN: [(&'static str, ErrorCode); 17] = [
        ("unauthenticated", ErrorCode::Unauthenticated),
        ("forbidden", ErrorCode::Forbidden),
        ("not_found", ErrorCode::NotFound),
        ("invalid_request", ErrorCode::InvalidRequest),
        ("conflict", ErrorCode::Conflict),
        ("feature_not_entitled", ErrorCode::FeatureNotEntitled),
        ("limit_reached", ErrorCode::LimitReached),
        ("personal_org", ErrorCode::PersonalOrg),
        ("last_owner", ErrorCode::LastOwner),
        ("billing_admin_must_transfer", ErrorCode::BillingAdminMustTransfer),
        ("subscription_exists", ErrorCode::SubscriptionExists),
        ("invalid_signature", ErrorCode::InvalidSignature),
        ("invitation_expired", ErrorCode::InvitationExpired),
        ("rate_limited", ErrorCode::RateLimited),
        ("payload_too_large", ErrorCode::PayloadTooLarge),
        ("unavailable", ErrorCode::Unavailable),
        ("internal_error", ErrorCode::InternalError),
    ];

    pub fn parse(code: &str) -> ErrorCode {
        Self::KNOWN
            .iter()
            .find(|(name, _)| *name == code)
            .map(|(_, known)| known.clone())
            .unwrap_or_else(|| ErrorCode::Other(code.to_owned()))
    }

    /// The code as the wire spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Other(code) => code,
            known => Self::KNOWN.iter().find(|(_, k)| k == known).map(|(name, _)| *name).unwrap_or("internal_error"),
        }
    }

    /// The code a status means when the body is not the contract's (a
    /// proxy's HTML page, say).
    pub fn for_status(status: u16) -> ErrorCode {
        match status {
            400 | 415 | 422 => ErrorCode::InvalidRequest,
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            429 => ErrorCode::RateLimited,
            503 => ErrorCode::Unavailable,
            _ => ErrorCode::InternalError,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer of orgplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The contract's code, e.g. [`ErrorCode::LimitReached`].
    pub code: ErrorCode,
    /// What happened and what to do.
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// The server's `x-request-id`, to quote when reporting a problem.
    pub request_id: Option<String>,
    /// `Retry-After` in seconds, when the server sent one.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// The contract's error body for this error (what a guard answers).
    pub fn to_body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        if let Some(param) = &self.param {
            error["param"] = serde_json::Value::String(param.clone());
        }
        serde_json::json!({ "error": error })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// orgplane answered with an error status.
    #[error("orgplane answered {} {}: {}", .0.status, .0.code, .0.message)]
    Api(ApiError),
    /// The request did not complete (connection refused, reset, timed out).
    #[error("orgplane could not be reached: {0}")]
    Transport(#[from] reqwest::Error),
    /// An event stream stayed silent past its keep-alives.
    #[error("the event stream was silent for {0:?}; reconnect")]
    Idle(std::time::Duration),
    /// A success answer whose body is not what the route documents.
    #[error("orgplane answered {status} with a body this client can't read: {message}")]
    Decode { status: u16, message: String },
}

impl Error {
    /// The contract's code: the server's for [`Error::Api`], `unavailable`
    /// for a transport failure, `internal_error` for an unreadable answer.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Api(e) => e.code.clone(),
            Error::Transport(_) | Error::Idle(_) => ErrorCode::Unavailable,
            Error::Decode { .. } => ErrorCode::InternalError,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(e) => Some(e.status),
            Error::Decode { status, .. } => Some(*status),
            Error::Transport(_) | Error::Idle(_) => None,
        }
    }

    /// The server's error, when it answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
