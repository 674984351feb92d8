//! Stripe: webhook signatures, webhook normalization, and the REST client.
//!
//! Everything that knows Stripe's field names lives under this module. It
//! must never leak Stripe's JSON types out of it: callers get
//! [`crate::ParsedWebhook`], [`SubscriptionSnapshot`](orgplane_core::subscription::SubscriptionSnapshot)
//! and [`crate::ProviderError`].

mod client;
mod invoices;
mod object;
pub mod signature;
mod webhook;

pub use client::{EventsPage, StripeClient};
pub use webhook::parse_event;
