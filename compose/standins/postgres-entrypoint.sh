#!/bin/sh
# Initialise the cluster on first start (as the official image does), then run postgres.
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >"$pwfile"
    "$bin/initdb" -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    db="${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"
    if [ "$db" != "postgres" ]; then
        "$bin/createdb" -U "${POSTGRES_USER:-postgres}" "$db"
    fi
    "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
if [ "${1:-postgres}" = "postgres" ]; then
    [ $# -gt 0 ] && shift
    exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
