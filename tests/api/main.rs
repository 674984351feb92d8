//! orgplane's API tests: the real server on 127.0.0.1, a real identity
//! provider serving a real JWKS, and a real database — every test runs once
//! on SQLite and once on PostgreSQL (see `helpers::Backend`).

mod helpers;

mod admin;
mod backup;
mod bad_input;
mod billing_change;
mod billing_email;
mod billing_failures;
mod billing_flows;
mod billing_invoices;
mod billing_link;
mod billing_orders;
mod billing_plan_hold;
mod billing_provider_keys;
mod billing_seats;
mod billing_support;
mod billing_webhooks;
mod cleanup;
mod cli;
mod client;
mod constraints;
mod copy;
mod db_proxy;
mod doctor;
mod entitlements;
mod first_run;
mod fuzz_findings;
mod harness;
mod idempotency;
mod identity;
mod invitations;
mod isolation;
mod keys;
mod leases;
mod limits;
mod members;
mod openapi;
mod operations;
mod orgs;
mod outage;
mod permissions;
mod portal;
mod presets;
mod quota_counter;
mod seed;
mod stream;
mod users;
mod webhook_retention;
mod webhooks_out;
mod workos_mirror;
