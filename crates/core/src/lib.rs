//! orgplane's domain: typed ids, parsed values, and the rules of tenancy,
//! roles, invitations, subscriptions and entitlements as plain functions.
//!
//! This crate is pure and synchronous. It never does I/O, never reads the
//! clock (callers pass `now`), and knows nothing of HTTP, SQL or a payment
//! provider's JSON. The one exception to the clock rule: a new id is a
//! UUIDv7, which carries its creation time for sort order only; no rule
//! reads it.

pub mod entitlements;
pub mod error;
pub mod id;
pub mod invitation;
pub mod keys;
pub mod org;
pub mod plan_change;
pub mod plans;
pub mod roles;
pub mod subscription;
pub mod values;
pub mod webhooks;

pub use error::DomainError;
pub use id::*;
pub use values::{Email, Label, OrgName, TextKind};

/// Timestamps are UTC `OffsetDateTime`s; they serialize as RFC 3339.
pub type Timestamp = time::OffsetDateTime;

/// RFC 3339 serialization for timestamps, and for optional ones.
pub mod rfc3339 {
    pub use time::serde::rfc3339::*;
}
