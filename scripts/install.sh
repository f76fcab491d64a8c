#!/usr/bin/env bash
# Install devpush on a Debian or Ubuntu server, for Docker Compose or podman-compose.
#
# Read it before you run it. Run it as root from a checkout of devpush:
#
#     sudo bash scripts/install.sh --app-hostname devpush.example.com \
#         --deploy-domain apps.example.com --email ops@example.com
#
# What it does, in order (each step is safe to repeat; a second run changes nothing that
# is already right, and never rewrites an existing .env):
#
#   1. Checks the options. Missing hostnames or email are asked for when a terminal is
#      attached; otherwise they are an error.
#   2. Packages (skip: --no-packages): apt-get installs python3, python3-venv, git,
#      ca-certificates and the container engine: Podman (the default, --engine podman), or
#      Docker (--engine docker: docker.io and a Docker Compose v2 package).
#   3. Service user (skip: --no-user): a system user and group `devpush`, uid/gid 10001,
#      the user the devpush containers run as. No login shell.
#   4. Install dir (--prefix, default /opt/devpush): copies this checkout there (without
#      .venv, .devpush, .env or caches), unless it is already running from there.
#   5. Virtualenv (skip: --no-venv): PREFIX/venv with the devpush CLI, from PyPI through pip;
#      with Podman also podman-compose from PyPI (the 1.x release devpush is tested with;
#      Debian 12 packages the older 1.0.3).
#   6. Data dir (--data-dir, default /var/lib/devpush): traefik/dynamic and traefik/acme,
#      owned by uid/gid 10001 (bind-mounted into the containers at /data).
#   7. PREFIX/.env, mode 0600, only when it does not exist yet: DEVPUSH_MODE=compose, the
#      hostnames, the ACME email and challenge provider, and freshly generated secrets (a
#      Fernet encryption key, the session secret, PostgreSQL and Redis passwords). DNS-01
#      credentials come from the environment (CF_DNS_API_TOKEN; AWS_ACCESS_KEY_ID,
#      AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_HOSTED_ZONE_ID) or are asked for.
#   8. systemd: renders deploy/devpush.service into --systemd-dir (default
#      /etc/systemd/system); then (skip: --no-systemctl) enables the engine's service and
#      devpush.service. It does not start devpush: `systemctl start devpush` does.
#
# No telemetry: the only network traffic is apt-get (your configured Debian/Ubuntu mirrors)
# and pip (PyPI, or the index in your pip configuration). Container images are fetched
# later by the engine, when devpush starts.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: sudo bash scripts/install.sh [options]

Where devpush is served:
  --app-hostname HOST     the dashboard's hostname, e.g. devpush.example.com
  --deploy-domain DOMAIN  apps are served at <name>.DOMAIN, e.g. apps.example.com
  --email EMAIL           the ACME (Let's Encrypt) account email
  --acme-provider NAME    default (HTTP-01, per hostname), cloudflare or route53 (DNS-01,
                          one wildcard certificate for *.DOMAIN); default: default
  --smtp-url URL          smtp://user:pass@host:port for sign-in mail (optional)

Where it goes:
  --prefix DIR            install dir (checkout, .env, venv); default /opt/devpush
  --data-dir DIR          host data dir mounted into the containers; default /var/lib/devpush
  --systemd-dir DIR       where devpush.service is written; default /etc/systemd/system
  --engine NAME           podman (default) or docker
  --python PATH           Python 3.11+ for the venv and key generation; default python3
                          (with --no-venv, one that has the cryptography package)

Skipping steps (for tests, or when you manage them yourself):
  --no-packages           do not run apt-get
  --no-user               do not create the devpush user
  --no-venv               do not create PREFIX/venv
  --no-systemctl          write the unit file but do not run systemctl
  --pip-args "ARGS"       extra arguments for pip install (e.g. --index-url of a mirror)
  -y, --yes               never prompt; a missing value is an error
  -h, --help              show this help
USAGE
}

die() {
    echo "install.sh: error: $*" >&2
    exit 2
}
step() { echo "==> $*"; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
app_hostname="" deploy_domain="" email="" provider="default" smtp_url=""
prefix="/opt/devpush" data_dir="/var/lib/devpush" systemd_dir="/etc/systemd/system"
engine="podman" python="python3" pip_args=""
podman_compose="podman-compose>=1.6,<2"  # the version devpush's compose tests run
do_packages=1 do_user=1 do_venv=1 do_systemctl=1 interactive=1 engine_given=0 data_dir_given=0
[ -t 0 ] || interactive=0

need_value() { if [ $# -lt 2 ] || [ -z "$2" ] || [[ "$2" == --* ]]; then die "$1 needs a value (see --help)"; fi; }
while [ $# -gt 0 ]; do
    case "$1" in
        --app-hostname) need_value "$@"; app_hostname="$2"; shift 2 ;;
        --deploy-domain) need_value "$@"; deploy_domain="$2"; shift 2 ;;
        --email) need_value "$@"; email="$2"; shift 2 ;;
        --acme-provider) need_value "$@"; provider="$2"; shift 2 ;;
        --smtp-url) need_value "$@"; smtp_url="$2"; shift 2 ;;
        --prefix) need_value "$@"; prefix="$2"; shift 2 ;;
        --data-dir) need_value "$@"; data_dir="$2"; data_dir_given=1; shift 2 ;;
        --systemd-dir) need_value "$@"; systemd_dir="$2"; shift 2 ;;
        --engine) need_value "$@"; engine="$2"; engine_given=1; shift 2 ;;
        --python) need_value "$@"; python="$2"; shift 2 ;;
        --pip-args) [ $# -ge 2 ] || die "--pip-args needs a value"; pip_args="$2"; shift 2 ;;
        --no-packages) do_packages=0; shift ;;
        --no-user) do_user=0; shift ;;
        --no-venv) do_venv=0; shift ;;
        --no-systemctl) do_systemctl=0; shift ;;
        -y | --yes) interactive=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

# ---- 1. options -----------------------------------------------------------------------------
ask() {  # ask VAR "question" [silent]: fill VAR from the terminal, or fail without one
    local var="$1" question="$2" answer=""
    [ -n "${!var}" ] && return 0
    [ "$interactive" = 1 ] || die "missing ${question} (pass it as an option, see --help)"
    if [ "${3:-}" = silent ]; then read -rsp "$question: " answer; echo; else read -rp "$question: " answer; fi
    printf -v "$var" '%s' "$answer"
}
host_re='^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$'
email_re='^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'
abs_dir() {  # the paths end up in the unit file and .env: keep them plain
    case "$2" in /*) ;; *) die "$1 must be an absolute path, got '$2'" ;; esac
    [[ "$2" =~ ^/[A-Za-z0-9._/-]*$ ]] || die "$1 may only contain letters, digits and . _ - /, got '$2'"
}
check_value() {  # values are written single-quoted into .env
    case "$2" in *"'"* | *$'\n'*) die "$1 must not contain a single quote or a newline" ;; esac
}
quoted() { printf "%s='%s'\n" "$1" "$2"; }  # literal for compose and python-dotenv alike

for part in deploy/devpush.service compose/base.yml pyproject.toml; do
    [ -f "$here/$part" ] || die "$here is not a devpush checkout ($part is missing); run the script from one"
done
abs_dir --prefix "$prefix"
abs_dir --data-dir "$data_dir"
abs_dir --systemd-dir "$systemd_dir"
case "$engine" in podman | docker) ;; *) die "--engine must be podman or docker, got '$engine'" ;; esac
case "$provider" in
    default | cloudflare | route53) ;;
    *) die "--acme-provider must be default, cloudflare or route53, got '$provider'" ;;
esac
existing_env=0
[ -e "$prefix/.env" ] && existing_env=1
env_value() { sed -n "s/^$1=//p" "$prefix/.env" | tail -n 1; }
if [ "$existing_env" = 1 ]; then
    # A re-run (e.g. after an update) keeps the engine and data dir the .env was written for.
    if [ "$engine_given" = 0 ] && [ "$(env_value DEVPUSH_DOCKER_SOCKET)" = /var/run/docker.sock ]; then
        engine=docker
    fi
    if [ "$data_dir_given" = 0 ] && [ -n "$(env_value DEVPUSH_HOST_DATA_DIR)" ]; then
        data_dir="$(env_value DEVPUSH_HOST_DATA_DIR)"
    fi
else
    ask app_hostname "the dashboard's hostname (--app-hostname)"
    ask deploy_domain "the domain apps are served under (--deploy-domain)"
    ask email "the ACME account email (--email)"
    app_hostname="${app_hostname,,}" deploy_domain="${deploy_domain,,}"
    [[ "$app_hostname" =~ $host_re ]] || die "--app-hostname '$app_hostname' is not a hostname"
    [[ "$deploy_domain" =~ $host_re ]] || die "--deploy-domain '$deploy_domain' is not a domain"
    [[ "$email" =~ $email_re ]] || die "--email '$email' is not an email address"
    case "$smtp_url" in "" | smtp://* | smtps://*) ;; *) die "--smtp-url must start with smtp:// or smtps://" ;; esac
    check_value --email "$email"
    check_value --smtp-url "$smtp_url"
    if [ "$provider" = cloudflare ]; then
        CF_DNS_API_TOKEN="${CF_DNS_API_TOKEN:-}"
        ask CF_DNS_API_TOKEN "Cloudflare API token with Zone:DNS:Edit (CF_DNS_API_TOKEN)" silent
        check_value CF_DNS_API_TOKEN "$CF_DNS_API_TOKEN"
    elif [ "$provider" = route53 ]; then
        for var in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_HOSTED_ZONE_ID; do
            printf -v "$var" '%s' "${!var:-}"
            ask "$var" "$var for Route 53" "$([ "$var" = AWS_SECRET_ACCESS_KEY ] && echo silent)"
            check_value "$var" "${!var}"
        done
    fi
fi
needs_root=$((do_packages + do_user + do_systemctl))
if [ "$needs_root" -gt 0 ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or skip the steps that need it: --no-packages --no-user --no-systemctl"
fi

# ---- 2. packages ----------------------------------------------------------------------------
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    step "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; }
}
if [ "$do_packages" = 1 ]; then
    # shellcheck source=/dev/null
    if [ -r /etc/os-release ]; then . /etc/os-release; fi
    case " ${ID:-} ${ID_LIKE:-} " in
        *" debian "* | *" ubuntu "*) ;;
        *) die "this script supports Debian and Ubuntu (apt); see the README to install by hand" ;;
    esac
    apt_install python3 python3-venv git ca-certificates
    if [ "$engine" = podman ]; then
        apt_install podman uidmap slirp4netns fuse-overlayfs
    else
        # devpush drives `docker compose` (v2). Debian 13 packages it as docker-compose,
        # Ubuntu as docker-compose-v2, Docker's own apt repository as docker-compose-plugin;
        # Debian 12 has only the old v1, which cannot read compose/*.yml.
        compose_pkg=""
        for pkg in docker-compose-plugin docker-compose-v2 docker-compose; do
            candidate="$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
            case "$candidate" in "" | "(none)" | 0:1.* | 1.*) ;; *) compose_pkg="$pkg"; break ;; esac
        done
        [ -n "$compose_pkg" ] || die "no Docker Compose v2 package for this release: use --engine podman, or add Docker's apt repository (docker-compose-plugin) first"
        apt_install docker.io "$compose_pkg"
    fi
fi

# ---- 3. service user ------------------------------------------------------------------------
if [ "$do_user" = 1 ]; then
    getent group devpush >/dev/null || { step "creating group devpush (gid 10001)"; groupadd --system --gid 10001 devpush; }
    if ! getent passwd devpush >/dev/null; then
        step "creating user devpush (uid 10001)"
        useradd --system --uid 10001 --gid 10001 --home-dir "$data_dir" --no-create-home \
            --shell /usr/sbin/nologin devpush
    fi
    [ "$(id -u devpush)" = 10001 ] || die "user devpush exists with uid $(id -u devpush), not 10001; the containers run as 10001"
fi

# ---- 4. install dir -------------------------------------------------------------------------
mkdir -p "$prefix"
if [ "$(cd "$prefix" && pwd -P)" != "$(cd "$here" && pwd -P)" ]; then
    step "copying $here to $prefix"
    tar -C "$here" --exclude=./.venv --exclude=./.devpush --exclude=./.env --exclude=./venv \
        --exclude='*/__pycache__' --exclude=./.pytest_cache --exclude=./.mypy_cache \
        --exclude=./.ruff_cache --exclude=./test-artifacts -cf - . | tar -C "$prefix" -xf -
fi

# ---- 5. virtualenv --------------------------------------------------------------------------
if [ "$do_venv" = 1 ]; then
    "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "devpush needs Python 3.11+")'
    [ -x "$prefix/venv/bin/python" ] || { step "creating $prefix/venv"; "$python" -m venv "$prefix/venv"; }
    step "installing the devpush CLI into $prefix/venv (pip)"
    packages=("$prefix")
    if [ "$engine" = podman ]; then packages+=("$podman_compose"); fi
    # shellcheck disable=SC2086  # pip_args is a list of words on purpose
    "$prefix/venv/bin/pip" install -q $pip_args "${packages[@]}"
fi

# ---- 6. data dir ----------------------------------------------------------------------------
mkdir -p "$data_dir/traefik/dynamic" "$data_dir/traefik/acme"
chmod 0750 "$data_dir"
chmod 0700 "$data_dir/traefik/acme"
if [ "$(id -u)" -eq 0 ]; then
    chown 10001:10001 "$data_dir" "$data_dir/traefik" "$data_dir/traefik/dynamic"
fi

# ---- 7. .env --------------------------------------------------------------------------------
socket=/var/run/docker.sock
[ "$engine" = podman ] && socket=/run/podman/podman.sock
if [ "$existing_env" = 1 ]; then
    step "keeping the existing $prefix/.env (edit it to change settings)"
else
    step "writing $prefix/.env with new keys"
    # The venv's Python has the cryptography package (a devpush dependency); else --python.
    keygen=""
    for candidate in "$prefix/venv/bin/python" "$python"; do
        if "$candidate" -c 'import cryptography' >/dev/null 2>&1; then keygen="$candidate"; break; fi
    done
    [ -n "$keygen" ] || die "no Python with the cryptography package to generate keys (pass --python)"
    secrets="$("$keygen" - <<'PY'
import secrets
from cryptography.fernet import Fernet

print(Fernet.generate_key().decode())
print(secrets.token_urlsafe(48))
print(secrets.token_hex(24))
print(secrets.token_hex(24))
PY
)" || die "could not generate keys with $keygen"
    { read -r fernet; read -r secret_key; read -r pg_password; read -r redis_password; } <<<"$secrets"
    tmp="$(mktemp "$prefix/.env.XXXXXX")"
    chmod 0600 "$tmp"
    {
        echo "# devpush settings (written by scripts/install.sh on $(date -u +%Y-%m-%d))."
        echo "# Keep a copy of DEVPUSH_ENCRYPTION_KEYS somewhere safe: without it the stored"
        echo "# env vars and tokens cannot be decrypted. Every variable is in the README."
        echo "DEVPUSH_MODE=compose"
        echo "DEVPUSH_APP_HOSTNAME=$app_hostname"
        echo "DEVPUSH_DEPLOY_DOMAIN=$deploy_domain"
        echo "DEVPUSH_URL_SCHEME=https"
        quoted DEVPUSH_ACME_EMAIL "$email"
        echo "DEVPUSH_CERT_CHALLENGE_PROVIDER=$provider"
        echo "DEVPUSH_SECRET_KEY=$secret_key"
        echo "DEVPUSH_ENCRYPTION_KEYS=$fernet"
        echo "DEVPUSH_POSTGRES_PASSWORD=$pg_password"
        echo "DEVPUSH_REDIS_PASSWORD=$redis_password"
        echo "DEVPUSH_HOST_DATA_DIR=$data_dir"
        echo "DEVPUSH_DOCKER_SOCKET=$socket"
        if [ -n "$smtp_url" ]; then quoted DEVPUSH_SMTP_URL "$smtp_url"; fi
        if [ "$provider" = cloudflare ]; then
            quoted CF_DNS_API_TOKEN "$CF_DNS_API_TOKEN"
        elif [ "$provider" = route53 ]; then
            for var in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_HOSTED_ZONE_ID; do
                quoted "$var" "${!var}"
            done
        fi
        echo "# GitHub App (docs/git-sources.md): DEVPUSH_GITHUB_APP_ID, DEVPUSH_GITHUB_APP_SLUG,"
        echo "# DEVPUSH_GITHUB_APP_PRIVATE_KEY, DEVPUSH_GITHUB_WEBHOOK_SECRET,"
        echo "# DEVPUSH_GITHUB_CLIENT_ID, DEVPUSH_GITHUB_CLIENT_SECRET"
    } >"$tmp"
    if [ -e "$prefix/.env" ]; then
        rm -f "$tmp"
        die "$prefix/.env appeared while writing it; left it as it is"
    fi
    mv "$tmp" "$prefix/.env"
fi

# ---- 8. systemd -----------------------------------------------------------------------------
engine_unit=podman.socket
[ "$engine" = docker ] && engine_unit=docker.service
mkdir -p "$systemd_dir"
unit="$systemd_dir/devpush.service"
rendered="$(sed -e "s|@PREFIX@|$prefix|g" -e "s|@ENGINE_UNIT@|$engine_unit|g" "$here/deploy/devpush.service")"
if [ ! -e "$unit" ] || [ "$(cat "$unit")" != "$rendered" ]; then
    step "writing $unit"
    printf '%s\n' "$rendered" >"$unit"
    chmod 0644 "$unit"
fi
if [ "$do_systemctl" = 1 ]; then
    systemctl daemon-reload
    systemctl enable --now "$engine_unit"
    systemctl enable devpush.service
fi

cat <<DONE

devpush is installed in $prefix (settings: $prefix/.env, data: $data_dir).
Next:
  1. DNS: A/AAAA records for the dashboard host and *.DEPLOY_DOMAIN pointing at this server.
  2. Build the devpush and runner images (README, "Production"), then:
     sudo systemctl start devpush
  3. cd $prefix && sudo venv/bin/devpush status
See the README's "Production" section.
DONE
