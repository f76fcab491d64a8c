#!/usr/bin/env bash
# Everything the test suite needs beyond the virtualenv: git, bubblewrap, Podman with its
# API socket and the locally built runner images. Idempotent; fast when all is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/podman-setup.sh
bash scripts/swarm-setup.sh  # dockerd, a one-node swarm and a registry (tests/e2e/test_swarm.py)
python3 scripts/vendor.py  # the dashboard's chart library (src/devpush/web/static/vendor)

# A real browser for tests/browser: Debian's Chromium, driven by the playwright package
# (never `playwright install`, which downloads its own browser).
# tests/ops: Pebble (the ACME test server) for TLS, shellcheck for scripts/install.sh.
# tests/chaos: wrk sends the steady 200 requests a second of the redeploy-under-load scenario.
# tests/e2e (process runtime): Node apps build with the host's Node and npm (Debian's is fine:
# an app asking for a newer Node gets one fetched from the npm registry).
# The process runtime's network isolation (tests/security/test_process_network.py): ip, nft.
# `devpush up` as root (every platform test): setfacl gives PostgreSQL's user its way in.
missing=()
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
for pkg in chromium fonts-dejavu-core pebble shellcheck wrk nftables iproute2 acl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[test-setup] installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && \
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
