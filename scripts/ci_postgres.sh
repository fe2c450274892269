#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the search-storage tests.
#
#   export SCIDL_TEST_POSTGRES_URL="$(scripts/ci_postgres.sh)"
#
# Run as root on Debian/Ubuntu. Installs the `postgresql` package with apt-get if no
# server binaries are present, creates a private cluster (own data folder and port, so it
# never touches a system cluster), listens on 127.0.0.1 only, creates a user and a
# database, and prints the SQLAlchemy URL on stdout (everything else goes to stderr).
# Idempotent: a second call finds the server running and prints the URL again.
# Stop it with:  scripts/ci_postgres.sh stop
set -euo pipefail

PORT="${SCIDL_PG_PORT:-5433}"
DATA="${SCIDL_PG_DATA:-/tmp/scidl-postgres}"
DB="${SCIDL_PG_DB:-scidl_test}"
ROLE="${SCIDL_PG_USER:-scidl}"
PASS="${SCIDL_PG_PASSWORD:-scidl}"
log() { echo "ci_postgres: $*" >&2; }

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

BIN="$(find_bin || true)"
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  [ "$(id -u)" -eq 0 ] || { log "PostgreSQL is not installed and we are not root"; exit 1; }
  log "installing postgresql with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  BIN="$(find_bin)"
fi

# The server refuses to run as root: run it as the package's `postgres` user.
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$DATA" postgres
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

if [ "${1:-}" = "stop" ]; then
  as_pg "$BIN/pg_ctl" -D "$DATA" -m fast stop >&2 || true
  exit 0
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  log "creating cluster in $DATA"
  mkdir -p "$DATA"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$DATA"
  chmod 700 "$DATA"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres -A trust --no-sync >/dev/null
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $PORT"
    echo "unix_socket_directories = '$DATA'"
    echo "max_connections = 100"
    echo "fsync = off"                 # test server: speed over durability
    echo "synchronous_commit = off"
  } >> "$DATA/postgresql.conf"
  # Local socket: trust; TCP on loopback: password (scram) for the test role.
  cat > "$DATA/pg_hba.conf" <<HBA
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
HBA
fi

if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "starting server on 127.0.0.1:$PORT"
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start >&2
fi

psql_pg() { as_pg "$BIN/psql" -h "$DATA" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'")" != "1" ]; then
  psql_pg -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PASS'" >&2
fi
if [ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname='$DB'")" != "1" ]; then
  psql_pg -c "CREATE DATABASE $DB OWNER $ROLE" >&2
fi
echo "postgresql://$ROLE:$PASS@127.0.0.1:$PORT/$DB"
