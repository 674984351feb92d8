#!/usr/bin/env bash
# Regenerate the committed types from a running orgplane (`serve --dev`):
#   clients/typescript/scripts/generate.sh [--url http://127.0.0.1:8080] [--check]
# Installs the pinned dev dependencies first when node_modules is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
exec node scripts/generate.mjs "$@"
