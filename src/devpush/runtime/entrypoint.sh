#!/bin/sh
# devpush runner entrypoint, shared by every runtime: install and build, pre-deploy, then the
# app. Commands arrive as environment entries (never spliced into this script). Each phase is
# announced on stdout with a marker line and written to $DEVPUSH_STATE_DIR/phase; the exit
# code of the whole run is written to $DEVPUSH_STATE_DIR/exit_code.
#
# With no argument it runs everything. A runtime that gives the build its own limits runs it
# twice: `entrypoint.sh build` (install, build, pre-deploy; exits 0 on success without
# recording an exit code) and then `entrypoint.sh run` (the app). Run again after the app
# exited (a container restarted by the monitor), it finds `built` in the state directory and
# only starts the app: the build and the pre-deploy command ran once, for this deployment.
set -u
# The docker runtime's fence gate: nothing runs until the runtime has isolated this
# container's bridge port and said so in $DEVPUSH_FENCE (eth0's peer index, root's file).
if [ -n "${DEVPUSH_FENCE:-}" ]; then
    link="$(cat /sys/class/net/eth0/iflink 2>/dev/null || echo none)"
    tries=$(( ${DEVPUSH_FENCE_WAIT:-30} * 10 ))
    until [ "$(cat "$DEVPUSH_FENCE" 2>/dev/null)" = "$link" ]; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            echo "devpush: this container's network was not isolated from the others in time; nothing was run" >&2
            exit 125
        fi
        sleep 0.1
    done
fi
unset DEVPUSH_FENCE DEVPUSH_FENCE_WAIT
mode="${1:-all}"
state="${DEVPUSH_STATE_DIR:-/tmp/devpush-state}"
app_dir="${DEVPUSH_APP_DIR:-/app}"
mkdir -p "$state"
if [ "$mode" = all ] && [ -f "$state/built" ]; then
    mode=run
fi
install_cmd="${DEVPUSH_INSTALL_COMMAND:-}"
build_cmd="${DEVPUSH_BUILD_COMMAND:-}"
pre_cmd="${DEVPUSH_PRE_DEPLOY_COMMAND:-}"
start_cmd="${DEVPUSH_START_COMMAND:-}"
unset DEVPUSH_INSTALL_COMMAND DEVPUSH_BUILD_COMMAND DEVPUSH_PRE_DEPLOY_COMMAND \
    DEVPUSH_START_COMMAND

# The plan's PATH entries (".venv/bin:node_modules/.bin", relative to the app, or a
# toolchain's absolute bin directory) come first.
if [ -n "${DEVPUSH_PATH:-}" ]; then
    prefix=""
    old_ifs=$IFS
    IFS=:
    for entry in $DEVPUSH_PATH; do
        case "$entry" in
            /*) prefix="$prefix$entry:" ;;  # a toolchain's own bin directory
            *) prefix="$prefix$app_dir/$entry:" ;;
        esac
    done
    IFS=$old_ifs
    PATH="$prefix$PATH"
    export PATH
fi
unset DEVPUSH_PATH
case "${DEVPUSH_INSTALL_CACHE:-}" in  # KEY (hex) : DIR (.venv or node_modules), or nothing
    *[!0-9a-f]*:* | :*) DEVPUSH_INSTALL_CACHE="" ;;
    *:.venv | *:node_modules) ;;
    *) DEVPUSH_INSTALL_CACHE="" ;;
esac

finish() {
    printf '%s\n' "$1" > "$state/exit_code"
    exit "$1"
}

now() { date +%s.%N 2>/dev/null || date +%s; }

took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# Runs one build step and says how long it took ("devpush: install took 1.52s").
step() {
    started=$(now)
    if [ "$1" = install ] && [ -n "${DEVPUSH_INSTALL_CACHE:-}" ] && restore_install; then
        :
    else
        sh -c "$2" || finish $?
    fi
    printf 'devpush: %s took %ss\n' "$1" "$(took "$started")"
    if [ "$1" = install ] && [ -n "${DEVPUSH_INSTALL_CACHE:-}" ] && [ -z "${restored:-}" ]; then
        keep_install
    fi
}

# The install's output (.venv, node_modules) is kept per project (/devpush/trees) under a key
# derived from the lockfile: an unchanged lockfile restores it instead of installing again.
# The newest three keys are kept.
restore_install() {
    key="${DEVPUSH_INSTALL_CACHE%%:*}"
    dir="${DEVPUSH_INSTALL_CACHE#*:}"
    [ -d "/devpush/trees/$key/$dir" ] || return 1
    rm -rf "./$dir" && cp -a "/devpush/trees/$key/$dir" "./$dir" || return 1
    touch "/devpush/trees/$key"
    restored=1
    echo "devpush: $dir restored from the cache: the lockfile did not change"
}

keep_install() {
    trees=/devpush/trees
    [ -d "$trees" ] && [ -w "$trees" ] && [ -d "./$dir" ] || return 0
    started=$(now)
    tmp="$trees/.tmp-$key-$$"
    if mkdir -p "$tmp" && cp -a "./$dir" "$tmp/"; then
        mv -T "$tmp" "$trees/$key" 2>/dev/null || rm -rf "$tmp"
    else
        rm -rf "$tmp"
    fi
    # shellcheck disable=SC2012
    ls -1t "$trees" | tail -n +4 | while IFS= read -r old; do
        rm -rf "${trees:?}/$old"
    done
    echo "devpush: kept $dir for the next deploy of this lockfile in $(took "$started")s"
}

phase() {
    printf '%s\n' "$1" > "$state/phase"
    printf '::devpush phase=%s\n' "$1"
    printf '::devpush phase=%s\n' "$1" >&2
}

cd "$app_dir" || finish 125

if [ "$mode" != run ]; then
    if [ -n "$install_cmd" ] || [ -n "$build_cmd" ]; then
        phase build
    fi
    if [ -n "$install_cmd" ]; then
        step install "$install_cmd"
    fi
    if [ -n "$build_cmd" ]; then
        step build "$build_cmd"
    fi
    if [ -n "$pre_cmd" ]; then
        phase pre_deploy
        step pre-deploy "$pre_cmd"
    fi
    : > "$state/built"
    if [ "$mode" = build ]; then
        exit 0
    fi
fi

phase runtime
# A stop's SIGTERM must reach the app, and its graceful shutdown must not be cut short. The
# shell running the start command outlives SIGTERM (a trap with a command, which the commands
# it runs do not inherit) and so ends with the app and its exit code. As the sandbox's or the
# container's init (the only process an engine signals), this script passes SIGTERM on to
# every process there; otherwise the runtime signals each one itself.
sh -c "trap : TERM INT; $start_cmd" &
child=$!
on_term() {
    if [ "$$" = 1 ]; then
        kill -TERM -1 2>/dev/null
    else
        kill -TERM "$child" 2>/dev/null
    fi
}
trap on_term TERM INT
while :; do
    wait "$child"
    rc=$?
    # wait returns >128 when a trapped signal interrupts it; keep waiting for the child
    if kill -0 "$child" 2>/dev/null; then continue; fi
    finish "$rc"
done
