#!/usr/bin/env bash
# Create the virtualenv and install devpush with its dev tools. Installs the few system
# packages it needs (python3-venv, git, bubblewrap, acl, nftables, iproute2) where missing,
# on Debian/Ubuntu.
set -euo pipefail
venv="${1:-.venv}"
cd "$(dirname "$0")/.."

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "==> installing system packages: ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
        || { $sudo apt-get update -q >/dev/null && \
             $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
}

if command -v dpkg >/dev/null 2>&1; then
    # acl: setfacl, for `devpush up` as root (PostgreSQL); nftables and iproute2: each app
    # of the process runtime in its own network namespace.
    apt_install git bubblewrap acl nftables iproute2
    python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null \
        || apt_install python3-venv
fi

python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "devpush needs Python 3.11+")'
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
echo "==> installing devpush into $venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e '.[dev]'
# The dashboard's chart library, from the npm registry (pinned, hash-checked; not committed).
"$venv/bin/python" scripts/vendor.py
touch "$venv/bin/devpush"
