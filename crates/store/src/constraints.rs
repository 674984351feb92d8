//! Every constraint of the schema and the contract error its violation
//! means, in one place: a unique or foreign-key violation the store did not
//! expect is a `conflict` (or the contract's more specific code) or a
//! `not_found`, never a 500.
//!
//! PostgreSQL names the violated constraint; SQLite names only the table and
//! columns of a unique key (`UNIQUE constraint failed: t.a, t.b`) and
//! nothing at all for a foreign key, so each entry carries both. A CHECK
//! (or NOT NULL) violation means orgplane wrote a value its own types can't
//! produce: a bug, left as a database error (logged, answered 500).
//!
//! This module only classifies errors; it never runs a query. A migration
//! that adds a constraint adds its row to [`SCHEMA`]; a test compares the
//! list with the constraints of a migrated database on both backends.

use orgplane_core::DomainError;
use sqlx::error::ErrorKind;

/// What kind of constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A primary key, a `UNIQUE` constraint or a unique index.
    Unique,
    ForeignKey,
    Check,
}

/// One constraint of the schema.
#[derive(Debug)]
pub struct Constraint {
    /// PostgreSQL's name for it (an explicit `CONSTRAINT` name, or the
    /// default `table_pkey`, `table_col_key`, `table_col_fkey`, `table_col_check`).
    pub name: &'static str,
    pub table: &'static str,
    /// The key's columns in order; for a foreign key, the referencing
    /// column; for a check, the column checked.
    pub columns: &'static [&'static str],
    pub kind: Kind,
    /// The contract error a violation means; `None` for a check (a bug).
    meaning: Option<fn() -> DomainError>,
}

/// The same id drawn twice, or a row written concurrently by another
/// request: the request can simply be sent again.
fn retry() -> DomainError {
    DomainError::conflict("the change collided with a concurrent one; send the request again")
}

fn vanished_organization() -> DomainError {
    DomainError::NotFound { what: "organization" }
}

fn vanished_user() -> DomainError {
    DomainError::NotFound { what: "user" }
}

const fn unique(
    name: &'static str,
    table: &'static str,
    columns: &'static [&'static str],
    meaning: fn() -> DomainError,
) -> Constraint {
    Constraint { name, table, columns, kind: Kind::Unique, meaning: Some(meaning) }
}

const fn foreign_key(
    name: &'static str,
    table: &'static str,
    column: &'static [&'static str],
    meaning: fn() -> DomainError,
) -> Constraint {
    Constraint { name, table, columns: column, kind: Kind::ForeignKey, meaning: Some(meaning) }
}

const fn check(name: &'static str, table: &'static str, column: &'static [&'static str]) -> Constraint {
    Constraint { name, table, columns: column, kind: Kind::Check, meaning: None }
}

/// Every constraint the migrations create (0001 to 0009) and the migration
/// runner's own tables, by table.
pub const SCHEMA: &[Constraint] = &[
    unique("orgplane_migrations_pkey", "orgplane_migrations", &["version"], || {
        DomainError::conflict("another process applied this migration at the same time; run `orgplane migrate` again")
    }),
    unique("orgplane_migration_checksums_pkey", "orgplane_migration_checksums", &["version"], || {
        DomainError::conflict("another process applied this migration at the same time; run `orgplane migrate` again")
    }),
    // users
    unique("users_pkey", "users", &["id"], retry),
    unique("users_issuer_subject_key", "users", &["issuer", "subject"], retry),
    // orgs
    unique("orgs_pkey", "orgs", &["id"], retry),
    unique("orgs_personal_user_key", "orgs", &["personal_user_id"], || {
        DomainError::conflict("this user already has a personal organization; POST /v1/me/personal_org returns it")
    }),
    foreign_key("orgs_personal_user_id_fkey", "orgs", &["personal_user_id"], vanished_user),
    // A user can't be deleted while billing admin of an org: the role is
    // handed over first (the only foreign key to users without a cascade).
    foreign_key("orgs_billing_admin_user_id_fkey", "orgs", &["billing_admin_user_id"], || {
        DomainError::BillingAdminMustTransfer
    }),
    check("orgs_kind_check", "orgs", &["kind"]),
    // memberships
    unique("memberships_pkey", "memberships", &["org_id", "user_id"], || {
        DomainError::conflict("this user is already a member of this organization")
    }),
    foreign_key("memberships_org_id_fkey", "memberships", &["org_id"], vanished_organization),
    foreign_key("memberships_user_id_fkey", "memberships", &["user_id"], vanished_user),
    // invitations
    unique("invitations_pkey", "invitations", &["id"], retry),
    unique("invitations_token_hash_key", "invitations", &["token_hash"], retry),
    unique("invitations_pending_email_key", "invitations", &["org_id", "email"], || {
        DomainError::conflict(
            "this e-mail address already has a pending invitation to this organization; resend it (POST /v1/orgs/{org}/invitations/{inv}/resend) or revoke it first",
        )
    }),
    foreign_key("invitations_org_id_fkey", "invitations", &["org_id"], vanished_organization),
    check("invitations_status_check", "invitations", &["status"]),
    // api_keys
    unique("api_keys_pkey", "api_keys", &["id"], retry),
    unique("api_keys_key_hash_key", "api_keys", &["key_hash"], retry),
    check("api_keys_scope_check", "api_keys", &["scope"]),
    // org_api_keys (0009)
    unique("org_api_keys_pkey", "org_api_keys", &["id"], retry),
    unique("org_api_keys_key_hash_key", "org_api_keys", &["key_hash"], retry),
    foreign_key("org_api_keys_org_id_fkey", "org_api_keys", &["org_id"], vanished_organization),
    // events
    unique("events_pkey", "events", &["seq"], retry),
    unique("events_id_key", "events", &["id"], retry),
    // idempotency_keys
    unique("idempotency_keys_pkey", "idempotency_keys", &["principal", "key"], || {
        DomainError::conflict("a request with this Idempotency-Key is already running; retry it shortly")
    }),
    // subscriptions: the org's one subscription
    unique("subscriptions_pkey", "subscriptions", &["id"], retry),
    unique("subscriptions_org_key", "subscriptions", &["org_id"], || DomainError::SubscriptionExists {
        message: "this organization already has a subscription; change or cancel it instead of starting another".into(),
    }),
    unique("subscriptions_provider_key", "subscriptions", &["provider", "provider_subscription_id"], || {
        DomainError::conflict("this provider subscription already belongs to an organization")
    }),
    foreign_key("subscriptions_org_id_fkey", "subscriptions", &["org_id"], vanished_organization),
    // org_overrides
    unique("org_overrides_pkey", "org_overrides", &["org_id"], retry),
    foreign_key("org_overrides_org_id_fkey", "org_overrides", &["org_id"], vanished_organization),
    // org_trials (0011): one trial per org, ever. The claim inserts with
    // `ON CONFLICT DO NOTHING` and reads the row count, so the key does not
    // surface there; any other writer hitting it gets this answer.
    unique("org_trials_pkey", "org_trials", &["org_id"], || {
        DomainError::conflict("this organization has already had its free trial; check out without one")
    }),
    foreign_key("org_trials_org_id_fkey", "org_trials", &["org_id"], vanished_organization),
    check("org_trials_days_check", "org_trials", &["days"]),
    // resources and grants
    unique("resources_pkey", "resources", &["id"], retry),
    unique("resources_external_key", "resources", &["org_id", "type", "external_id"], || {
        DomainError::conflict("a resource of this type with this external_id already exists in this organization")
    }),
    foreign_key("resources_org_id_fkey", "resources", &["org_id"], vanished_organization),
    // resource_usage: one counter per (org, type), upserted
    unique("resource_usage_pkey", "resource_usage", &["org_id", "type"], retry),
    foreign_key("resource_usage_org_id_fkey", "resource_usage", &["org_id"], vanished_organization),
    check("resource_usage_used_check", "resource_usage", &["used"]),
    unique("resource_grants_pkey", "resource_grants", &["resource_id", "user_id"], || {
        DomainError::conflict("this member already has access to this resource")
    }),
    foreign_key("resource_grants_resource_id_fkey", "resource_grants", &["resource_id"], || DomainError::NotFound {
        what: "resource",
    }),
    foreign_key("resource_grants_user_id_fkey", "resource_grants", &["user_id"], vanished_user),
    foreign_key("resource_grants_org_id_fkey", "resource_grants", &["org_id"], vanished_organization),
    // provider_events
    unique("provider_events_pkey", "provider_events", &["id"], retry),
    unique("provider_events_event_key", "provider_events", &["provider", "event_id"], || {
        DomainError::conflict("this provider event is already stored")
    }),
    check("provider_events_status_check", "provider_events", &["status"]),
    check("provider_events_payment_check", "provider_events", &["payment"]),
    // billing_customers
    unique("billing_customers_pkey", "billing_customers", &["provider", "customer_id"], || {
        DomainError::conflict("this provider customer already belongs to an organization")
    }),
    foreign_key("billing_customers_org_id_fkey", "billing_customers", &["org_id"], vanished_organization),
    // checkouts
    unique("checkouts_pkey", "checkouts", &["id"], retry),
    foreign_key("checkouts_org_id_fkey", "checkouts", &["org_id"], vanished_organization),
    foreign_key("checkouts_started_by_fkey", "checkouts", &["started_by"], vanished_user),
    check("checkouts_status_check", "checkouts", &["status"]),
    // reconcile_leases
    unique("reconcile_leases_pkey", "reconcile_leases", &["org_id"], || {
        DomainError::conflict("another reconciliation pass holds this organization; try again shortly")
    }),
    // sandbox_subscriptions
    unique("sandbox_subscriptions_pkey", "sandbox_subscriptions", &["id"], retry),
    unique("sandbox_subscriptions_checkout_id_key", "sandbox_subscriptions", &["checkout_id"], || {
        DomainError::conflict("this sandbox checkout has already been paid")
    }),
    // sandbox_invoices (0012): one per paid period of a sandbox subscription
    unique("sandbox_invoices_pkey", "sandbox_invoices", &["id"], retry),
    unique(
        "sandbox_invoices_subscription_id_period_start_key",
        "sandbox_invoices",
        &["subscription_id", "period_start"],
        || DomainError::conflict("this sandbox period is already invoiced"),
    ),
    foreign_key("sandbox_invoices_subscription_id_fkey", "sandbox_invoices", &["subscription_id"], || {
        DomainError::NotFound { what: "sandbox subscription" }
    }),
    // provider_subscriptions (0004): every provider subscription's own state
    unique("provider_subscriptions_pkey", "provider_subscriptions", &["provider", "provider_subscription_id"], || {
        DomainError::conflict("this provider subscription already belongs to an organization")
    }),
    unique("provider_subscriptions_id_key", "provider_subscriptions", &["id"], retry),
    foreign_key("provider_subscriptions_org_id_fkey", "provider_subscriptions", &["org_id"], vanished_organization),
    // portal_sessions (0008): a link and the browser session it opened,
    // bound to one membership (deleted with it)
    unique("portal_sessions_pkey", "portal_sessions", &["id"], retry),
    unique("portal_sessions_link_hash_key", "portal_sessions", &["link_hash"], retry),
    unique("portal_sessions_cookie_hash_key", "portal_sessions", &["cookie_hash"], retry),
    foreign_key("portal_sessions_membership_fkey", "portal_sessions", &["org_id", "user_id"], || {
        DomainError::NotFound { what: "member" }
    }),
    // webhook endpoints, deliveries and attempts (0007)
    unique("webhook_endpoints_pkey", "webhook_endpoints", &["id"], retry),
    unique("webhook_deliveries_pkey", "webhook_deliveries", &["id"], retry),
    unique("webhook_deliveries_endpoint_event_key", "webhook_deliveries", &["endpoint_id", "event_id"], retry),
    foreign_key("webhook_deliveries_endpoint_id_fkey", "webhook_deliveries", &["endpoint_id"], || {
        DomainError::NotFound { what: "webhook endpoint" }
    }),
    check("webhook_deliveries_status_check", "webhook_deliveries", &["status"]),
    unique("webhook_attempts_pkey", "webhook_attempts", &["delivery_id", "attempt"], retry),
    foreign_key("webhook_attempts_delivery_id_fkey", "webhook_attempts", &["delivery_id"], || DomainError::NotFound {
        what: "webhook delivery",
    }),
    unique("webhook_fanout_pkey", "webhook_fanout", &["name"], retry),
    // WorkOS mirror (0013): targets are upserted, the position and the
    // organization map are written by the one replica holding them
    unique("workos_mirror_targets_pkey", "workos_mirror_targets", &["org_id", "user_id"], retry),
    check("workos_mirror_targets_status_check", "workos_mirror_targets", &["status"]),
    unique("workos_organizations_pkey", "workos_organizations", &["org_id"], retry),
    unique("workos_mirror_position_pkey", "workos_mirror_position", &["name"], retry),
    // unlinked_subscriptions (0016): what discovery found and no org holds,
    // listed once each (upserted on the provider's subscription id)
    unique("unlinked_subscriptions_pkey", "unlinked_subscriptions", &["id"], retry),
    unique(
        "unlinked_subscriptions_subscription_key",
        "unlinked_subscriptions",
        &["provider", "provider_subscription_id"],
        retry,
    ),
    // billing_email_syncs
    unique("billing_email_syncs_pkey", "billing_email_syncs", &["org_id", "customer_id"], retry),
    foreign_key("billing_email_syncs_org_id_fkey", "billing_email_syncs", &["org_id"], vanished_organization),
    check("billing_email_syncs_status_check", "billing_email_syncs", &["status"]),
];

/// A violated constraint and what it means for the caller.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ConstraintViolation {
    /// The constraint as the database named it: PostgreSQL's name, or
    /// SQLite's `table.column, …`.
    pub constraint: String,
    pub error: DomainError,
}

/// The contract error of a database error, if it is a unique or foreign-key
/// violation. `kind`, `constraint` and `message` are what the database
/// reported (`constraint` is `None` on SQLite).
pub fn classify(kind: ErrorKind, constraint: Option<&str>, message: &str) -> Option<ConstraintViolation> {
    let expected = match kind {
        ErrorKind::UniqueViolation => Kind::Unique,
        ErrorKind::ForeignKeyViolation => Kind::ForeignKey,
        _ => return None,
    };
    let named = match constraint {
        Some(name) => name.to_owned(),
        None => sqlite_columns(message).unwrap_or_else(|| message.to_owned()),
    };
    let known = SCHEMA.iter().find(|c| {
        c.kind == expected
            && match constraint {
                Some(name) => c.name == name,
                None => {
                    expected == Kind::Unique && sqlite_columns(message).is_some_and(|cols| cols == c.sqlite_columns())
                }
            }
    });
    let error = match (known.and_then(|c| c.meaning), expected) {
        (Some(meaning), _) => meaning(),
        // A constraint added without its row, or SQLite's foreign keys,
        // which name nothing: still the caller's conflict, not our crash.
        (None, Kind::Unique) => retry(),
        (None, _) => DomainError::NotFound { what: "a record this change refers to" },
    };
    Some(ConstraintViolation { constraint: named, error })
}

/// The `table.col, table.col` of SQLite's `UNIQUE constraint failed: …`.
fn sqlite_columns(message: &str) -> Option<String> {
    message.strip_prefix("UNIQUE constraint failed: ").map(|cols| cols.trim().to_owned())
}

impl Constraint {
    /// How SQLite names this key when it is violated.
    pub fn sqlite_columns(&self) -> String {
        self.columns.iter().map(|c| format!("{}.{c}", self.table)).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres(kind: ErrorKind, name: &str) -> DomainError {
        classify(kind, Some(name), "duplicate key value violates unique constraint").expect("a violation").error
    }

    fn sqlite_unique(columns: &str) -> DomainError {
        classify(ErrorKind::UniqueViolation, None, &format!("UNIQUE constraint failed: {columns}"))
            .expect("a violation")
            .error
    }

    #[test]
    fn a_unique_key_means_the_same_on_both_backends() {
        for c in SCHEMA.iter().filter(|c| c.kind == Kind::Unique) {
            let on_postgres = postgres(ErrorKind::UniqueViolation, c.name);
            let on_sqlite = sqlite_unique(&c.sqlite_columns());
            assert_eq!(on_postgres, on_sqlite, "{}", c.name);
        }
    }

    #[test]
    fn the_org_subscription_key_is_subscription_exists_on_both_backends() {
        assert!(matches!(
            postgres(ErrorKind::UniqueViolation, "subscriptions_org_key"),
            DomainError::SubscriptionExists { .. }
        ));
        assert!(matches!(sqlite_unique("subscriptions.org_id"), DomainError::SubscriptionExists { .. }));
    }

    #[test]
    fn provider_subscriptions_keys_are_conflicts() {
        let pk = sqlite_unique("provider_subscriptions.provider, provider_subscriptions.provider_subscription_id");
        assert!(matches!(pk, DomainError::Conflict { .. }), "{pk:?}");
        assert_eq!(pk, postgres(ErrorKind::UniqueViolation, "provider_subscriptions_pkey"));
        let id = sqlite_unique("provider_subscriptions.id");
        assert!(matches!(id, DomainError::Conflict { .. }), "{id:?}");
    }

    #[test]
    fn a_vanished_parent_is_not_found_naming_it_on_postgres() {
        let err = classify(
            ErrorKind::ForeignKeyViolation,
            Some("resource_grants_user_id_fkey"),
            "insert or update on table \"resource_grants\" violates foreign key constraint \"resource_grants_user_id_fkey\"",
        )
        .expect("a violation");
        assert_eq!(err.error, DomainError::NotFound { what: "user" });
        assert_eq!(err.constraint, "resource_grants_user_id_fkey");
        assert_eq!(
            postgres(ErrorKind::ForeignKeyViolation, "orgs_billing_admin_user_id_fkey"),
            DomainError::BillingAdminMustTransfer
        );
    }

    #[test]
    fn sqlite_foreign_keys_name_nothing_and_are_not_found() {
        let err = classify(ErrorKind::ForeignKeyViolation, None, "FOREIGN KEY constraint failed").expect("a violation");
        assert!(matches!(err.error, DomainError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn an_unlisted_unique_key_is_still_a_conflict() {
        let err = classify(ErrorKind::UniqueViolation, Some("orgs_name_key"), "duplicate key").expect("a violation");
        assert!(matches!(err.error, DomainError::Conflict { .. }));
        assert!(matches!(sqlite_unique("orgs.name"), DomainError::Conflict { .. }));
    }

    #[test]
    fn checks_and_other_errors_stay_database_errors() {
        assert!(classify(ErrorKind::CheckViolation, Some("orgs_kind_check"), "violates check constraint").is_none());
        assert!(
            classify(ErrorKind::CheckViolation, None, "CHECK constraint failed: kind IN ('personal', 'team')")
                .is_none()
        );
        assert!(classify(ErrorKind::NotNullViolation, None, "NOT NULL constraint failed: orgs.name").is_none());
        assert!(classify(ErrorKind::Other, None, "database is locked").is_none());
    }

    #[test]
    fn every_constraint_is_listed_once() {
        let mut names: Vec<&str> = SCHEMA.iter().map(|c| c.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a constraint is listed twice");
        let mut unique_keys: Vec<String> =
            SCHEMA.iter().filter(|c| c.kind == Kind::Unique).map(Constraint::sqlite_columns).collect();
        unique_keys.sort_unstable();
        let before = unique_keys.len();
        unique_keys.dedup();
        assert_eq!(unique_keys.len(), before, "two unique keys SQLite can't tell apart");
    }
}
