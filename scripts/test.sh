#!/usr/bin/env bash
# The whole test suite, the README's one test command:
#
#   1. prepares the Python tools the tests use (a venv under target/, from the
#      pinned scripts/requirements.txt; re-made only when that file changes),
#   2. runs every Rust test of the workspace (SQLite and PostgreSQL),
#   3. runs each suite in scripts/test.d/ in name order (suites that need a
#      built binary or another language's toolchain).
#
# Any failure stops the run with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/python-env.sh
source scripts/python-env.sh

cargo test --workspace --locked

shopt -s nullglob
for suite in scripts/test.d/*.sh; do
  echo "=== ${suite}"
  bash "$suite"
done
echo "=== all suites passed"
