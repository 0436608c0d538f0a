#!/usr/bin/env bash
# Tests start their own throwaway Redis and PostgreSQL; this makes sure the
# server binaries exist (installing them from Debian where missing). It never
# starts or touches a running service. The client tests (tests/clients) run
# real JavaScript clients, so Node >= 20 with npm must be on PATH: Debian's own
# nodejs is older, so a missing or old one stops the run here, saying so.
set -euo pipefail
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm are needed (Node >= 20) for tests/clients: install Node.js 20+" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "Node >= 20 is needed for tests/clients; found $(node --version)" >&2
  exit 1
fi
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing missing test servers: ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi
