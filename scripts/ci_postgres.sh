#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the search-storage tests.
#
#   export SCIDL_TEST_POSTGRES_URL="$(scripts/ci_postgres.sh)"
#   ...
#   scripts/ci_postgres.sh stop
#
# Run as root on Debian/Ubuntu (or as a user who has the server binaries). Installs the
# `postgresql` package with apt-get if no server binaries are present, creates a private
# cluster in a fresh folder made by `mktemp -d` (mode 0700, random name: never a
# predictable path another user could plant a symlink at), listens on 127.0.0.1 only,
# creates a user with a random password and a database, and prints the SQLAlchemy URL on
# stdout (everything else goes to stderr).
#
# The cluster's folder and URL are remembered in a state file (mode 0600, default
# build/ci_postgres.state in the repository, or $SCIDL_PG_STATE): a second call finds the
# server running and prints the URL again; `stop` stops the server and deletes the folder.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${SCIDL_PG_STATE:-$REPO/build/ci_postgres.state}"
PORT="${SCIDL_PG_PORT:-5433}"
DB="${SCIDL_PG_DB:-scidl_test}"
ROLE="${SCIDL_PG_USER:-scidl}"
TMPBASE="${TMPDIR:-/tmp}"
log() { echo "ci_postgres: $*" >&2; }

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# The state file: line 1 the cluster folder, line 2 the URL. Read without sourcing it,
# and only when it is a regular file (not a symlink).
read_state() {
  DATA="" URL=""
  [ -f "$STATE" ] && [ ! -L "$STATE" ] || return 1
  { IFS= read -r DATA && IFS= read -r URL; } < "$STATE" || return 1
  # Only a folder this script made: under the temp base, our prefix, a real directory.
  case "$DATA" in "$TMPBASE"/scidl-postgres.*) ;; *) return 1 ;; esac
  [ -d "$DATA" ] && [ ! -L "$DATA" ]
}

write_state() {
  mkdir -p "$(dirname "$STATE")"
  local tmp
  tmp="$(umask 077 && mktemp "$(dirname "$STATE")/.ci_postgres.XXXXXXXX")"
  printf '%s\n%s\n' "$DATA" "$URL" > "$tmp"
  mv -f -T "$tmp" "$STATE"  # replaces (never follows) whatever is at $STATE
}

BIN="$(find_bin || true)"
if [ "${1:-}" != "stop" ] && { [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; }; then
  [ "$(id -u)" -eq 0 ] || { log "PostgreSQL is not installed and we are not root"; exit 1; }
  log "installing postgresql with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  BIN="$(find_bin)"
fi

# The server refuses to run as root: run it as the package's `postgres` user.
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
  as_pg() { (cd / && runuser -u postgres -- "$@"); }
else
  as_pg() { "$@"; }
fi

if [ "${1:-}" = "stop" ]; then
  if read_state; then
    [ -n "$BIN" ] && as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2 || true
    rm -rf -- "$DATA"
    log "stopped; removed $DATA"
  else
    log "no server started by this script (no usable state file $STATE)"
  fi
  rm -f -- "$STATE"
  exit 0
fi

if read_state && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  echo "$URL"  # already running
  exit 0
fi

DATA="$(mktemp -d "$TMPBASE/scidl-postgres.XXXXXXXX")"  # fresh, 0700, ours
[ "$(id -u)" -eq 0 ] && chown postgres: "$DATA"
PASS="${SCIDL_PG_PASSWORD:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
URL="postgresql://$ROLE:$PASS@127.0.0.1:$PORT/$DB"
log "creating cluster in $DATA"
# Local socket (in the 0700 folder): trust; TCP on loopback: password (scram).
as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --no-sync >/dev/null
write_state

log "starting server on 127.0.0.1:$PORT"
# Settings on the command line: no file in the cluster folder is written by root.
OPTS="-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DATA"
OPTS="$OPTS -c max_connections=100 -c fsync=off -c synchronous_commit=off"  # test server
as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -o "$OPTS" -w -t 60 start >&2

psql_pg() { as_pg "$BIN/psql" -h "$DATA" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
psql_pg -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PASS'" >&2
psql_pg -c "CREATE DATABASE $DB OWNER $ROLE" >&2
echo "$URL"
