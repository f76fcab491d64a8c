#!/usr/bin/env bash
# Prepares a real single-node Docker Swarm for the swarm runtime's tests, as root: Debian's
# docker.io (dockerd with the cgroupfs driver, on a socket and data root of its own, beside
# Podman), `docker swarm init` on loopback, a local registry (Debian's docker-registry on
# 127.0.0.1:5055, which dockerd trusts without TLS) that built app images are pushed to, and the
# runner images the tests deploy with, taken from Podman's locally built ones
# (scripts/podman-setup.sh; no public registry is reachable). Idempotent; seconds on a re-run.
#
# Environment (all optional):
#   DEVPUSH_SWARM_SOCKET   dockerd's API socket (default /run/devpush-docker/docker.sock)
#   DEVPUSH_SWARM_IMAGES   runner images to load (default localhost/devpush-runner-python:3.11)
set -euo pipefail

socket="${DEVPUSH_SWARM_SOCKET:-/run/devpush-docker/docker.sock}"
run_dir="$(dirname "$socket")"
data_root=/var/lib/devpush-docker
log=/tmp/devpush-dockerd.log
images="${DEVPUSH_SWARM_IMAGES:-localhost/devpush-runner-python:3.11}"
registry=127.0.0.1:5055
docker=(/usr/bin/docker -H "unix://$socket")  # Debian's client, not another one on PATH

step() { printf '[swarm-setup] %s\n' "$*"; }
die() { printf '[swarm-setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (dockerd runs rootful)"
mkdir -p "$run_dir"
exec 9>"$run_dir/setup.lock"
flock 9

packages=(docker.io docker-registry)
if ! command -v dockerd >/dev/null 2>&1 || [ ! -x /usr/bin/docker ] \
    || ! command -v docker-registry >/dev/null 2>&1; then
    step "packages: installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null \
        || { apt-get update -qq \
             && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; }
fi

if ! "${docker[@]}" info >/dev/null 2>&1; then
    # Forwarding on first: dockerd that turns it on itself also sets iptables' FORWARD policy
    # to DROP, which would cut off Podman's and the process runtime's networks.
    sysctl -qw net.ipv4.ip_forward=1
    step "dockerd: starting on $socket (log $log)"
    setsid dockerd --host "unix://$socket" --data-root "$data_root" \
        --exec-opt native.cgroupdriver=cgroupfs --pidfile "$run_dir/dockerd.pid" \
        --userland-proxy=false \
        >"$log" 2>&1 < /dev/null 9>&- &
    for _ in $(seq 1 120); do
        "${docker[@]}" info >/dev/null 2>&1 && break
        sleep 0.5
    done
    "${docker[@]}" info >/dev/null 2>&1 || die "dockerd did not start; see $log"
fi

registry_up() { curl -fsS -o /dev/null "http://$registry/v2/" 2>/dev/null; }
if ! registry_up; then
    step "registry: starting on $registry (log /tmp/devpush-registry.log)"
    mkdir -p /var/lib/devpush-registry
    printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
        /var/lib/devpush-registry "$registry" > "$run_dir/registry.yml"
    setsid docker-registry serve "$run_dir/registry.yml" \
        >/tmp/devpush-registry.log 2>&1 < /dev/null 9>&- &
    for _ in $(seq 1 40); do
        registry_up && break
        sleep 0.25
    done
    registry_up || die "the registry did not start; see /tmp/devpush-registry.log"
fi

state="$("${docker[@]}" info --format '{{.Swarm.LocalNodeState}}')"
if [ "$state" != active ]; then
    step "swarm: init on 127.0.0.1"
    "${docker[@]}" swarm init --advertise-addr 127.0.0.1 >/dev/null
else
    step "swarm: active"
fi

for image in $images; do
    want="$(podman image inspect "$image" --format '{{.Id}}' 2>/dev/null)" \
        || die "runner image $image is missing in Podman: run scripts/podman-setup.sh"
    have="$("${docker[@]}" image inspect "$image" --format '{{.Id}}' 2>/dev/null || true)"
    if [ "${have#sha256:}" = "$want" ]; then
        step "image $image: present"
        continue
    fi
    step "image $image: loading from Podman"
    podman save "$image" | "${docker[@]}" load -q >/dev/null
done
