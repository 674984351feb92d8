# Shared by the bench and fault scripts: source it after `cd` to the repo root.
#
#   source bench/lib.sh
#   bench_init                     # temp dir $DATA, cleanup on exit, rate limits out of reach
#   bench_pg_db NAME               # a fresh PostgreSQL database (dropped on exit); sets ORGPLANE_DATABASE_URL
#   bench_start NAME PORT [ARGS…]  # `orgplane serve --dev` on 127.0.0.1:PORT in the background; pid in PID_NAME
#   bench_wait_healthy PORT        # /healthz answers 200 within 10 s, or exit 1
#   bench_stop NAME [SIGNAL]       # signal the server started as NAME and reap it
#   bench_stripe_catalog FILE PRICE  # the free/business catalog, business sold at Stripe price PRICE
#
# The servers' logs go to $DATA/NAME.log; with BENCH_LOGS=DIR they are kept
# there on exit. Every process started here is killed, and every database made here is
# dropped, when the script exits. Traffic goes to 127.0.0.1 only.

BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/orgplane}
BENCH_PIDS=()
BENCH_PGDBS=()

bench_cleanup() {
  set +e
  local pid db
  for pid in "${BENCH_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for db in "${BENCH_PGDBS[@]}"; do dropdb -h 127.0.0.1 -U postgres --if-exists --force "$db"; done
  if [ -n "${BENCH_LOGS:-}" ] && [ -n "${DATA:-}" ]; then mkdir -p "$BENCH_LOGS" && cp "$DATA"/*.log "$BENCH_LOGS"/; fi
  [ -n "${DATA:-}" ] && rm -rf "$DATA"
}

bench_init() {
  command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }
  [ -x "$BIN" ] || timeout 1200 cargo build --release --locked --quiet
  DATA=$(mktemp -d)
  trap bench_cleanup EXIT
  export ORGPLANE_DATA_DIR="$DATA"
  export ORGPLANE_LOG=${ORGPLANE_LOG:-warn}
  # The scripts send deliveries and requests far faster than [limits] lets
  # one provider or one credential: the rates are set out of reach (still checked).
  export ORGPLANE_LIMITS_WEBHOOK_RATE_PER_SECOND=1000000000 ORGPLANE_LIMITS_WEBHOOK_RATE_BURST=1000000000
  export ORGPLANE_LIMITS_RATE_PER_SECOND=1000000000 ORGPLANE_LIMITS_RATE_BURST=1000000000
  export ORGPLANE_LIMITS_MAX_IN_FLIGHT=4096
}

bench_pg_db() {
  command -v createdb >/dev/null || { echo "createdb is missing: apt-get install -y postgresql-client" >&2; exit 1; }
  local db="$1_$$_$(date +%s)"
  createdb -h 127.0.0.1 -U postgres "$db"
  BENCH_PGDBS+=("$db")
  export ORGPLANE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
  PGDB="$db"
}

bench_start() {
  local name=$1 port=$2
  shift 2
  "$BIN" serve --dev --listen "127.0.0.1:$port" "$@" >>"$DATA/$name.log" 2>&1 &
  local pid=$!
  BENCH_PIDS+=("$pid")
  printf -v "PID_$name" '%s' "$pid"
}

bench_wait_healthy() {
  local port=$1
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "the server on port $port did not start; its log:" >&2
  tail -20 "$DATA"/*.log >&2
  exit 1
}

bench_stop() {
  local name=$1 signal=${2:-TERM} var="PID_$1"
  local pid=${!var}
  kill "-$signal" "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}


# The catalog of the Stripe benches (bench/webhooks.sh, the storms under
# bench/faults/): free by default, business sold per seat at Stripe PRICE.
bench_stripe_catalog() {
  cat >"$1" <<TOML
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
prices = { stripe = ["$2"] }
TOML
}
