#!/usr/bin/env bash
# Installs Debian's pgbouncer when it is missing: the end-to-end tests run
# once more through a PgBouncer in transaction mode that they start
# themselves (tests/support/pgbouncer.py). Needs root and apt.
set -euo pipefail

if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
# The package may start its own instance; the tests start theirs.
if command -v service >/dev/null 2>&1; then
  service pgbouncer stop >/dev/null 2>&1 || true
fi
