#!/usr/bin/env bash
# The OpenAPI document against the real server: a `serve --dev` on a free
# loopback port with a fresh data directory; its served document must pass
# openapi-spec-validator, then schemathesis runs every check twice (a user's
# token, an API key), each bounded in time, and must find nothing.
#
# Exclusions of real false positives live in schemathesis.toml, each with
# its reason. Needs the Python tools of scripts/requirements.txt (made by
# scripts/python-env.sh); without them the suite is skipped loudly, or fails
# when CI is set.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${ORGPLANE_TEST_PYTHON:-}" ]; then
  # shellcheck source=scripts/python-env.sh
  source scripts/python-env.sh || true
fi
venv_bin="$(dirname "${ORGPLANE_TEST_PYTHON:-/nonexistent/python}")"
if [ ! -x "$venv_bin/schemathesis" ] || [ ! -x "$venv_bin/openapi-spec-validator" ]; then
  if [ -n "${CI:-}" ]; then
    echo "FAIL: schemathesis / openapi-spec-validator are missing (scripts/python-env.sh installs them)" >&2
    exit 1
  fi
  echo "!!! SKIPPING the OpenAPI checks: schemathesis / openapi-spec-validator are not installed" >&2
  echo "!!! (run scripts/test.sh, which prepares them from scripts/requirements.txt)" >&2
  exit 0
fi

cargo build --locked --quiet --bin orgplane
binary="$PWD/target/debug/orgplane"

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$("$ORGPLANE_TEST_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
export ORGPLANE_DATA_DIR="$work/data"
# The fuzzer sends far more than a person would: no rate limits in this run
# (429 stays documented on every operation).
export ORGPLANE_LIMITS_RATE_PER_SECOND=0 ORGPLANE_LIMITS_ANONYMOUS_RATE_PER_SECOND=0
export ORGPLANE_LIMITS_WEBHOOK_RATE_PER_SECOND=0
export ORGPLANE_LOG="${ORGPLANE_LOG:-warn}"

"$binary" serve --dev --listen "127.0.0.1:$port" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/readyz" > /dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "FAIL: the server did not start" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$base/readyz" > /dev/null

echo "--- openapi-spec-validator"
curl -fsS "$base/v1/openapi.json" > "$work/openapi.json"
"$venv_bin/openapi-spec-validator" "$work/openapi.json"

user_token=$(curl -fsS -X POST "$base/dev/token" -H 'content-type: application/json' \
  -d '{"email": "fuzzer@orgplane.test", "name": "Fuzzer"}' | "$ORGPLANE_TEST_PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["token"])')
api_key=$("$binary" keys create --name schemathesis 2> /dev/null)

# Each run: at most 120 s (two runs, within the 5 minutes CI allows). The
# credential goes to both security schemes (schemathesis.toml reads them from
# the environment): routes that take the other kind answer 403, documented.
# One worker: CPython 3.11's parser is not safe for hypothesis's lambda
# descriptions in several threads ("AST constructor recursion depth mismatch").
export ORGPLANE_ROOT="$PWD"
run_schemathesis() {
  local who=$1 token=$2
  echo "--- schemathesis ($who)"
  (cd "$work" && ORGPLANE_FUZZ_USER_TOKEN="$token" ORGPLANE_FUZZ_API_KEY="$token" \
    "$venv_bin/schemathesis" --config-file "$ORGPLANE_ROOT/schemathesis.toml" run "$base/v1/openapi.json" \
    --url "$base" \
    --checks all \
    --max-examples 25 \
    --max-time 120 \
    --workers 1 \
    --request-timeout 10 \
    --report junit --report-dir "$work/report-$who")
}

status=0
run_schemathesis user-token "$user_token" || status=1
run_schemathesis api-key "$api_key" || status=1
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "FAIL: the server died during the run" >&2
  status=1
fi
if grep -q ' ERROR \|panicked' "$work/server.log"; then
  echo "FAIL: the server logged errors:" >&2
  grep ' ERROR \|panicked' "$work/server.log" | head -20 >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "FAIL: the OpenAPI checks found problems (above)" >&2
  exit 1
fi
echo "OpenAPI: the document is valid and schemathesis found nothing (user token and API key)"
