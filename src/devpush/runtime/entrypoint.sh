#!/bin/sh
# devpush runner entrypoint, shared by every runtime: build, pre-deploy, then the app.
# Commands arrive as environment entries (never spliced into this script). Each phase is
# announced on stdout with a marker line and written to $DEVPUSH_STATE_DIR/phase; the exit
# code of the whole run is written to $DEVPUSH_STATE_DIR/exit_code.
set -u
state="${DEVPUSH_STATE_DIR:-/tmp/devpush-state}"
mkdir -p "$state"
build_cmd="${DEVPUSH_BUILD_COMMAND:-}"
pre_cmd="${DEVPUSH_PRE_DEPLOY_COMMAND:-}"
start_cmd="${DEVPUSH_START_COMMAND:-}"
unset DEVPUSH_BUILD_COMMAND DEVPUSH_PRE_DEPLOY_COMMAND DEVPUSH_START_COMMAND

finish() {
    printf '%s\n' "$1" > "$state/exit_code"
    exit "$1"
}

phase() {
    printf '%s\n' "$1" > "$state/phase"
    printf '::devpush phase=%s\n' "$1"
    printf '::devpush phase=%s\n' "$1" >&2
}

cd "${DEVPUSH_APP_DIR:-/app}" || finish 125

if [ -n "$build_cmd" ]; then
    phase build
    sh -c "$build_cmd" || finish $?
fi
if [ -n "$pre_cmd" ]; then
    phase pre_deploy
    sh -c "$pre_cmd" || finish $?
fi

phase runtime
sh -c "$start_cmd" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
    wait "$child"
    rc=$?
    # wait returns >128 when a trapped signal interrupts it; keep waiting for the child
    if kill -0 "$child" 2>/dev/null; then continue; fi
    finish "$rc"
done
