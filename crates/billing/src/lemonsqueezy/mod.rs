//! Lemon Squeezy: webhook signatures, webhook normalization, and the
//! JSON:API REST client.
//!
//! Everything that knows Lemon Squeezy's field names and statuses lives
//! under this module. It must never leak Lemon Squeezy's JSON out of it:
//! callers get [`crate::ParsedWebhook`],
//! [`SubscriptionSnapshot`](orgplane_core::subscription::SubscriptionSnapshot)
//! and [`crate::ProviderError`].

mod client;
mod discovery;
mod invoices;
mod object;
pub mod signature;
mod webhook;

pub use client::LemonSqueezyClient;
pub use discovery::{ListedSubscription, SubscriptionList};
pub use webhook::parse_event;
