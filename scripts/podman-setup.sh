#!/usr/bin/env bash
# Prepares Podman for devpush's tests and CI on a plain Debian/Ubuntu machine, as root:
# packages, containers.conf, the Docker-compatible API socket, the runner images (built
# locally by scripts/runner-images.sh: no registry is reachable) and the runner network.
# Idempotent; seconds on a re-run.
#
# Environment (all optional):
#   DEVPUSH_PODMAN_SOCKET   API socket path        (default /run/devpush-podman/podman.sock)
#   DEVPUSH_DEBIAN_MIRROR   debootstrap mirror     (default http://deb.debian.org/debian)
#   DEVPUSH_CACHE_DIR       rootfs tarballs, npm downloads (default /var/cache/devpush)
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
socket="${DEVPUSH_PODMAN_SOCKET:-/run/devpush-podman/podman.sock}"
run_dir="$(dirname "$socket")"
pid_file="$run_dir/podman-service.pid"
service_log=/tmp/devpush-podman.log
mirror="${DEVPUSH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache_dir="${DEVPUSH_CACHE_DIR:-/var/cache/devpush}"
network=devpush_runner
conf=/etc/containers/containers.conf

step() { printf '[podman-setup] %s\n' "$*"; }
die() { printf '[podman-setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (podman runs rootful here)"

# One run at a time: parallel test sessions share the images, the network and the service.
mkdir -p "$run_dir" "$cache_dir"
exec 9>"$run_dir/setup.lock"
flock 9

install_packages() {
    # netavark/aardvark-dns/iptables: the network stack (only Recommended by podman);
    # debian-archive-keyring: debootstrap verifies bookworm with it (also on Ubuntu).
    local required=(podman runc uidmap slirp4netns fuse-overlayfs debootstrap curl ca-certificates)
    local optional=(netavark aardvark-dns iptables debian-archive-keyring)
    local missing=() pkg
    for pkg in "${required[@]}" "${optional[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        step "packages: present"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    local install=()
    for pkg in "${missing[@]}"; do
        # An optional package this release does not have (older Ubuntu) is left out.
        if [[ " ${optional[*]} " == *" $pkg "* ]] && ! apt-cache show "$pkg" >/dev/null 2>&1; then
            step "packages: $pkg not available here, skipped"
            continue
        fi
        install+=("$pkg")
    done
    if [ "${#install[@]}" -eq 0 ]; then return; fi
    step "packages: installing ${install[*]}"
    apt-get install -y -qq --no-install-recommends "${install[@]}" >/dev/null
}

# Returns 0 when the file was (re)written.
write_conf() {
    local wanted
    wanted='# Written by devpush scripts/podman-setup.sh
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
'
    mkdir -p "$(dirname "$conf")"
    if [ -f "$conf" ] && [ "$(cat "$conf")" = "$(printf '%s' "$wanted")" ]; then
        step "containers.conf: up to date"
        return 1
    fi
    printf '%s' "$wanted" >"$conf.tmp"
    mv "$conf.tmp" "$conf"
    step "containers.conf: written"
    return 0
}

ping_ok() {
    [ "$(curl -s --max-time 2 --unix-socket "$socket" http://d/_ping 2>/dev/null)" = "OK" ]
}

stop_own_service() {
    # Only the service this script started (its pid file), never anything else.
    local pid cmdline
    [ -f "$pid_file" ] || return 0
    pid="$(cat "$pid_file")"
    cmdline="$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null || true)"
    if [[ -n "$pid" && "$cmdline" == *"podman system service"* ]]; then
        step "podman service: restarting (pid $pid) to apply containers.conf"
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pid_file"
}

start_service() {
    if ping_ok; then
        step "podman service: answering on $socket"
        return
    fi
    rm -f "$socket"
    # 9>&-: the service must not inherit (and hold forever) the setup lock. It runs in its own
    # directory: conmon drops files (an `oom` marker) into the service's working directory.
    (cd "$run_dir" && exec setsid nohup podman system service --time=0 "unix://$socket" \
        >>"$service_log" 2>&1 </dev/null 9>&-) &
    echo $! >"$pid_file"
    for _ in $(seq 100); do
        if ping_ok; then
            step "podman service: started on $socket (pid $(cat "$pid_file"), log $service_log)"
            return
        fi
        sleep 0.1
    done
    tail -n 20 "$service_log" >&2 || true
    die "podman service did not answer on $socket within 10 s"
}

build_runner_images() {
    # Every runner image, and the Debian base images they (and compose/standins) start from.
    # Rebuilt only when their inputs change.
    DEVPUSH_DEBIAN_MIRROR="$mirror" DEVPUSH_CACHE_DIR="$cache_dir" PODMAN=podman \
        bash "$repo_dir/scripts/runner-images.sh"
}

create_network() {
    if podman network exists "$network"; then
        step "network $network: present"
        return
    fi
    podman network create --driver bridge "$network" >/dev/null
    step "network $network: created ($(podman network inspect "$network" \
        --format '{{range .Subnets}}{{.Subnet}} gateway {{.Gateway}}{{end}}'))"
}

install_packages
if write_conf; then
    stop_own_service
fi
start_service
build_runner_images
create_network
step "ready: DOCKER_HOST=unix://$socket"
