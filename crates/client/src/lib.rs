//! orgplane's Rust client: typed calls on the API ([`Client`]), one error
//! type carrying the contract's code ([`Error`], [`ErrorCode`]), lists as
//! [`Stream`](futures_util::Stream)s, retries of idempotent calls, a live
//! [`EntitlementCache`] following the event stream, webhook verification
//! ([`verify_webhook`]) and, with the `axum` feature (default), the
//! [`RequireFeature`] / [`RequireLimit`] layers.
//!
//! It speaks HTTP only: it never links the server or the store.
//!
//! The crate's README follows (its example is compiled as a doctest).
#![doc = include_str!("../README.md")]

mod api;
mod cache;
mod client;
mod error;
mod events;
#[cfg(feature = "axum")]
mod guard;
mod types;
mod webhook;

pub use cache::{CacheOptions, CacheStatus, EntitlementCache};
pub use client::{Client, Credentials, RetryPolicy};
pub use error::{ApiError, Error, ErrorCode, Result};
pub use events::EventStream;
#[cfg(feature = "axum")]
pub use guard::{Guarded, OrgFrom, RequireFeature, RequireLimit, Verdict};
pub use types::*;
pub use webhook::{DEFAULT_TOLERANCE, WebhookError, sign_webhook, verify_webhook, verify_webhook_at};
