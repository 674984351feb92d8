# The catalog and Stripe secret of the Stripe storms (sourced by both).
STORM_SECRET=whsec_fault_storm
storm_config() {
  cat >"$DATA/orgplane.toml" <<TOML
[plans.free]
default = true
tier = "free"
features = ["invitations"]
limits = { customers = 3, seats = 2, clients = 10 }
[plans.business]
tier = "business"
features = ["invitations", "api_tokens", "custom_roles", "audit_log"]
limits = { customers = 100, clients = 1000 }
seats = "per_unit"
prices = { stripe = ["price_bench_business"] }
TOML
  export ORGPLANE_BILLING_STRIPE_WEBHOOK_SECRETS="[\"$STORM_SECRET\"]"
}
