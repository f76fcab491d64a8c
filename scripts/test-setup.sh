#!/usr/bin/env bash
# Everything the test suite needs beyond the virtualenv: git, bubblewrap, Podman with its
# API socket and the locally built runner images. Idempotent; fast when all is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/podman-setup.sh
