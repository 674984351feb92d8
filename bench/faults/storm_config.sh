# The catalog and Stripe secret of the Stripe storms (sourced by both, after bench/lib.sh).
STORM_SECRET=whsec_fault_storm
storm_config() {
  bench_stripe_catalog "$DATA/orgplane.toml" price_bench_business
  export ORGPLANE_BILLING_STRIPE_WEBHOOK_SECRETS="[\"$STORM_SECRET\"]"
}
