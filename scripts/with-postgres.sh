#!/usr/bin/env bash
# scripts/with-postgres.sh CMD...: runs CMD with a throwaway PostgreSQL.
#
# Installs Debian's `postgresql` when no initdb is found (root only), starts
# a cluster in a temp dir on a loopback port (socket in that dir too), as an
# unprivileged user (`kycshare-pg`, created when run as root: PostgreSQL
# refuses to run as root; as anyone else, as that user), creates the role
# `kycshare` (random password, CREATEDB so tests make a database each) and
# the database `kycshare_test`, then runs CMD with
#
#   KYCSHARE_TEST_PG_URL=postgres://kycshare:PASSWORD@127.0.0.1:PORT/kycshare_test
#
# (WITH_PG_DURABLE=1: the server's own fsync settings, for benchmarks)
# and stops and removes the cluster when CMD ends, whatever its exit (the
# exit code is CMD's). Tests that need PostgreSQL read that variable and
# skip, saying so, when it is absent.
set -euo pipefail

if [ $# -eq 0 ]; then
    echo "usage: scripts/with-postgres.sh CMD..." >&2
    exit 2
fi

find_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
        fi
    done | sort -V | tail -n 1
}

PGBIN=$(find_bin)
if [ -z "$PGBIN" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "with-postgres: no PostgreSQL server found; install it: sudo apt-get install postgresql" >&2
        exit 2
    fi
    echo "with-postgres: installing postgresql (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    PGBIN=$(find_bin)
    if [ -z "$PGBIN" ]; then
        echo "with-postgres: postgresql installed but no initdb under /usr/lib/postgresql/*/bin" >&2
        exit 2
    fi
fi

# The user the server runs as.
if [ "$(id -u)" -eq 0 ]; then
    PGUSER_OS=kycshare-pg
    if ! id -u "$PGUSER_OS" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PGUSER_OS"
    fi
    as_pg() { runuser -u "$PGUSER_OS" -- "$@"; }
else
    PGUSER_OS=$(id -un)
    as_pg() { "$@"; }
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/kycshare-pg.XXXXXX")
chmod 0700 "$DIR"
chown "$PGUSER_OS" "$DIR"
started=""
cleanup() {
    if [ -n "$started" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PASS=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 || {
    cat "$DIR/initdb.log" >&2
    exit 2
}

# Throwaway: no fsync (tests and a bench of kycshare, not of the disk);
# WITH_PG_DURABLE=1 keeps the server's defaults.
FAST="-c fsync=off -c full_page_writes=off"
if [ "${WITH_PG_DURABLE:-}" = 1 ]; then
    FAST=""
fi

# A free loopback port: a few random tries (the server says when it is taken).
for _ in 1 2 3 4 5 6 7 8; do
    PORT=$((20000 + RANDOM % 40000))
    if as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=100 $FAST" \
        start >/dev/null 2>&1; then
        started=1
        break
    fi
done
if [ -z "$started" ]; then
    echo "with-postgres: the server did not start; its log:" >&2
    cat "$DIR/server.log" >&2 || true
    exit 2
fi

PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres -d postgres)
as_pg "${PSQL[@]}" -c "CREATE ROLE kycshare LOGIN CREATEDB PASSWORD '$PASS'" \
    -c "CREATE DATABASE kycshare_test OWNER kycshare" >/dev/null

export KYCSHARE_TEST_PG_URL="postgres://kycshare:$PASS@127.0.0.1:$PORT/kycshare_test"
echo "with-postgres: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (KYCSHARE_TEST_PG_URL set)" >&2
set +e
"$@"
rc=$?
set -e
exit "$rc"
