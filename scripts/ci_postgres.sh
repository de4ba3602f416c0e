#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the storage tests (CI and developers).
# Prints the SQLAlchemy URL on stdout; `bash scripts/ci_postgres.sh stop DIR` stops it. Needs root (apt, su).
set -euo pipefail
PORT="${SARCOSCOPE_PG_PORT:-55432}"
if [ "${1:-}" = "stop" ]; then
  su postgres -c "$(ls -d /usr/lib/postgresql/*/bin | tail -n1)/pg_ctl -D '$2' stop -m fast" >/dev/null 2>&1 || true
  exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
BIN="$(ls -d /usr/lib/postgresql/*/bin | tail -n1)"
DATA="$(mktemp -d /tmp/sarcoscope-pg.XXXXXX)"
chown postgres "$DATA"
su postgres -c "$BIN/initdb -D '$DATA' -A trust -U postgres" >/dev/null
su postgres -c "$BIN/pg_ctl -D '$DATA' -l '$DATA/server.log' -w \
  -o \"-c listen_addresses=127.0.0.1 -p $PORT -k '$DATA'\" start" >/dev/null
su postgres -c "$BIN/createdb -h 127.0.0.1 -p $PORT -U postgres sarcoscope_test"
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/sarcoscope_test $DATA"
