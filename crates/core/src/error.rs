//! The domain's errors, in the domain's words. The server maps each to the
//! contract's `{"error": {"code", "message", "param"}}` in one place.

/// Something the rules refuse. Every variant carries enough to tell the
/// caller what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The thing does not exist, or the caller may not know that it does.
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The caller is known but lacks a permission.
    #[error("{message}")]
    Forbidden { message: String },
    /// A personal organization can't do this (invite, hold other members…).
    #[error("{message}")]
    PersonalOrg { message: String },
    /// The change would leave the organization without an owner.
    #[error("an organization must keep at least one owner: make another member owner first")]
    LastOwner,
    /// The billing admin must hand the role over before leaving or being removed.
    #[error(
        "this member is the billing admin: transfer the billing admin role (PUT /v1/orgs/{{org}}/billing_admin) before removing them"
    )]
    BillingAdminMustTransfer,
    /// The plan's limit is used up.
    #[error("{message}")]
    LimitReached { limit: String, message: String },
    /// The plan lacks a feature.
    #[error("{message}")]
    FeatureNotEntitled { feature: String, message: String },
    /// The organization already has a live subscription.
    #[error("{message}")]
    SubscriptionExists { message: String },
    /// The request conflicts with the current state.
    #[error("{message}")]
    Conflict { message: String },
    /// The request is malformed or names something unknown.
    #[error("{message}")]
    InvalidRequest { param: Option<String>, message: String },
    /// An invitation's time ran out.
    #[error("this invitation expired; ask an admin of the organization to resend it")]
    InvitationExpired,
}

impl DomainError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::InvalidRequest { param: Some(param.into()), message: message.into() }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        DomainError::Conflict { message: message.into() }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        DomainError::Forbidden { message: message.into() }
    }

    pub fn personal_org(message: impl Into<String>) -> Self {
        DomainError::PersonalOrg { message: message.into() }
    }
}
