#!/usr/bin/env bash
# Start a throwaway PostgreSQL server from the distribution's packages for the test suite.
#   eval "$(.ci/postgres.sh start)"   # exports ZOO_TEST_POSTGRES_URL and ZOO_TEST_PGDATA
#   .ci/postgres.sh stop "$ZOO_TEST_PGDATA"
set -euo pipefail
PORT=${ZOO_TEST_PG_PORT:-55432}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

case "${1:-}" in
start)
  if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/postgres" ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2
  fi
  BIN=$(pg_bin)
  DATA=$(mktemp -d /tmp/zoo-pg.XXXXXX)
  chown postgres "$DATA"
  su postgres -s /bin/sh -c "$BIN/initdb -D $DATA -A trust -U postgres" >/dev/null
  su postgres -s /bin/sh -c "$BIN/pg_ctl -D $DATA -o '-p $PORT -k /tmp -c listen_addresses=127.0.0.1' -l $DATA/server.log -w start" >&2
  echo "export ZOO_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PORT/postgres"
  echo "export ZOO_TEST_PGDATA=$DATA"
  ;;
stop)
  DATA=${2:?data directory}
  su postgres -s /bin/sh -c "$(pg_bin)/pg_ctl -D $DATA -m fast -w stop" >&2 || true
  rm -rf "$DATA"
  ;;
*)
  echo "usage: $0 start | stop DATADIR" >&2
  exit 2
  ;;
esac
