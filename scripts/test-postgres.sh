#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL 15 cluster.
#
#   scripts/test-postgres.sh .venv/bin/python -m pytest -q
#   scripts/test-postgres.sh bash -c 'psql "$TEST_DATABASE_URL" -c "select 1"'
#
# The cluster lives in a fresh temporary folder, listens on 127.0.0.1 only (plus a unix socket
# inside that folder), on a free port in a high range, with trust auth for the bootstrap superuser
# `postgres`. The command runs with
#     TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:$PORT/postgres
# (also PGHOST/PGPORT/PGUSER/PGDATABASE) and its exit code is this script's exit code. The cluster
# is stopped and its folder deleted on exit, whatever happens (failure, Ctrl-C, SIGTERM).
#
# PostgreSQL refuses to run as root: when run as root the server runs as the `postgres` OS user
# (override with TEST_PG_OS_USER); otherwise it runs as the current user.
#
# Knobs (environment): PG_BIN (folder holding initdb/pg_ctl/postgres; default: derived from the
# `initdb` on PATH, else the newest /usr/lib/postgresql/*/bin), TEST_PG_TMPDIR (parent of the
# temporary folder, default /tmp), TEST_PG_PORT (use this port instead of picking one),
# TEST_PG_KEEP=1 (keep the folder after exit, for post-mortems; the server is still stopped).
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

log() { echo "test-postgres: $*" >&2; }

# --- locate the PostgreSQL binaries -----------------------------------------------------------
if [[ -z "${PG_BIN:-}" ]]; then
    if initdb_path="$(command -v initdb 2>/dev/null)"; then
        PG_BIN="$(dirname "$(readlink -f "$initdb_path")")"
    else
        PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    fi
fi
for tool in initdb pg_ctl postgres pg_isready; do
    if [[ ! -x "$PG_BIN/$tool" ]]; then
        log "cannot find $tool (looked in '${PG_BIN:-}'); install PostgreSQL 15 or set PG_BIN"
        exit 2
    fi
done

# --- who runs the server ----------------------------------------------------------------------
if [[ "$(id -u)" -eq 0 ]]; then
    PG_OS_USER="${TEST_PG_OS_USER:-postgres}"
    if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        log "running as root but OS user '$PG_OS_USER' does not exist (PostgreSQL refuses root)"
        exit 2
    fi
else
    PG_OS_USER=""
fi

# Run a PostgreSQL tool as the server's OS user, from inside the temporary folder (the caller's
# working directory may not be readable by that user).
as_pg() {
    if [[ -n "$PG_OS_USER" ]]; then
        (cd "$PGTMP" && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd "$PGTMP" && "$@")
    fi
}

# --- temporary folder and cleanup -------------------------------------------------------------
# Keep the parent short: unix socket paths are limited to ~107 bytes.
PGTMP="$(mktemp -d "${TEST_PG_TMPDIR:-/tmp}/intercom-sync-pg.XXXXXX")"
PGDATA_DIR="$PGTMP/data"
PGLOG="$PGTMP/server.log"
STARTED=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ "$STARTED" -eq 1 ]] || [[ -f "$PGDATA_DIR/postmaster.pid" ]]; then
        if ! as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 60 >/dev/null 2>&1; then
            log "fast shutdown failed; trying immediate"
            as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m immediate -w -t 30 >/dev/null 2>&1 || true
        fi
    fi
    if [[ "${TEST_PG_KEEP:-0}" == "1" ]]; then
        log "keeping $PGTMP (TEST_PG_KEEP=1)"
    else
        rm -rf "$PGTMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
# Turn signals into a normal exit so the EXIT trap runs (with the conventional 128+N status).
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [[ -n "$PG_OS_USER" ]]; then
    chown "$PG_OS_USER:" "$PGTMP"
fi
chmod 700 "$PGTMP"

# --- initdb -----------------------------------------------------------------------------------
if ! as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres -A trust -E UTF8 --locale=C \
        >"$PGTMP/initdb.log" 2>&1; then
    log "initdb failed:"
    cat "$PGTMP/initdb.log" >&2
    exit 1
fi

# Everything but the port goes into the config file (no quoting games with `pg_ctl -o`).
as_pg tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null <<EOF

# --- added by scripts/test-postgres.sh ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PGTMP'
fsync = on
max_connections = 200
logging_collector = off
log_min_messages = warning
EOF

# --- pick a free port and start ---------------------------------------------------------------
port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Htan "( sport = :$port )" 2>/dev/null)" ]] && return 0
    fi
    # Something accepting connections there?
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    return 1
}

pick_port() {
    local port i
    for i in $(seq 1 50); do
        port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

PORT=""
for attempt in 1 2 3 4 5; do
    if [[ -n "${TEST_PG_PORT:-}" ]]; then
        candidate="$TEST_PG_PORT"
    else
        candidate="$(pick_port)" || { log "no free port found"; exit 1; }
    fi
    if as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA_DIR" -l "$PGLOG" -w -t 60 \
            -o "-p $candidate -c fsync=on" >/dev/null 2>&1; then
        STARTED=1
        PORT="$candidate"
        break
    fi
    # Lost a race for the port (or another failure): show why and retry on another port.
    log "server failed to start on port $candidate (attempt $attempt):"
    tail -n 20 "$PGLOG" >&2 2>/dev/null || true
    if [[ -n "${TEST_PG_PORT:-}" ]]; then
        exit 1  # a fixed port was asked for: no point retrying it
    fi
done
if [[ -z "$PORT" ]]; then
    log "giving up starting PostgreSQL"
    exit 1
fi

for _ in $(seq 1 60); do
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres; then
        break
    fi
    sleep 0.5
done
if ! "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres; then
    log "server on port $PORT never became ready:"
    tail -n 50 "$PGLOG" >&2 || true
    exit 1
fi

export TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$PORT/postgres"
export PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER=postgres PGDATABASE=postgres
log "$("$PG_BIN/postgres" --version) ready in $PGTMP;" \
    "TEST_DATABASE_URL=$TEST_DATABASE_URL"

# --- run the command ---------------------------------------------------------------------------
set +e
"$@"
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
    log "command exited with status $rc"
fi
exit "$rc"
