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
# and, with TLS (openssl there), KYCSHARE_TEST_PG_CA=the test CA's PEM, for
# the database kycshare_tls, which takes TLS connections only;
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

# TLS, when openssl is there: a test CA and a server certificate for
# 127.0.0.1 and localhost. The database kycshare_tls takes only TLS
# connections (the others take both); KYCSHARE_TEST_PG_CA is the CA's PEM.
TLS=""
if command -v openssl >/dev/null 2>&1; then
    (
        cd "$DIR"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj "/CN=kycshare test CA" -keyout ca.key -out ca.pem \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=localhost" -keyout server.key -out server.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.crt
        cp server.crt server.key data/
        chown "$PGUSER_OS" data/server.crt data/server.key
        chmod 0600 data/server.key
        chmod 0644 ca.pem
    ) >"$DIR/tls.log" 2>&1 && TLS="-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
    if [ -n "$TLS" ]; then
        {
            echo "local all all trust"
            echo "hostssl kycshare_tls all 127.0.0.1/32 scram-sha-256"
            echo "hostnossl kycshare_tls all 127.0.0.1/32 reject"
            echo "host all all 127.0.0.1/32 scram-sha-256"
        } >"$DIR/data/pg_hba.conf"
    else
        echo "with-postgres: no TLS (openssl failed: $DIR/tls.log)" >&2
    fi
fi

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
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=100 $FAST $TLS" \
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
if [ -n "$TLS" ]; then
    as_pg "${PSQL[@]}" -c "CREATE DATABASE kycshare_tls OWNER kycshare" >/dev/null
    export KYCSHARE_TEST_PG_CA="$DIR/ca.pem"
fi

export KYCSHARE_TEST_PG_URL="postgres://kycshare:$PASS@127.0.0.1:$PORT/kycshare_test"
echo "with-postgres: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (KYCSHARE_TEST_PG_URL set)" >&2
set +e
"$@"
rc=$?
set -e
exit "$rc"
