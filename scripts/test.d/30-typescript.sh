#!/usr/bin/env bash
# The TypeScript client (clients/typescript): pinned npm dependencies
# (`npm ci`, again whenever package-lock.json changes), a type-check of the
# package and of its README quick start, then `node --test` against the
# release binary started by the tests in --dev mode: the client, the README
# quick start run as written, and the check that the committed generated
# types match the binary's OpenAPI document.
#
# Without node/npm this suite is skipped with a loud message, or fails when
# CI is set (.ci/run installs Debian's nodejs and npm).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ -n "${CI:-}" ]; then
    echo "node and npm are required for the TypeScript client tests (apt-get install nodejs npm)" >&2
    exit 1
  fi
  echo "*** SKIPPING the TypeScript client tests: node and npm are not installed (apt-get install nodejs npm)" >&2
  exit 0
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "the TypeScript client needs Node >= 20, found $(node --version)" >&2
  exit 1
fi

cargo build --release --locked --bin orgplane
export ORGPLANE_TEST_BIN="$PWD/target/release/orgplane"

cd clients/typescript
stamp=node_modules/.package-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi
rm -rf build dist
npm run --silent typecheck
npm test
