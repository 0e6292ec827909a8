#!/usr/bin/env bash
# Recording throughput into PostgreSQL next to SQLite, in the same run: the
# capture writer (`cargo bench --bench writer`) writes N synthetic
# exchanges per round into a fresh SQLite file and a fresh database on a
# throwaway PostgreSQL server (default settings: fsync and synchronous
# commit on), alternating.
#   N=200000 ROUNDS=3 bash bench/capture_stores.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/postgres.sh
start_postgres
TAPEDECK_BENCH_PG="$POSTGRES_URL" cargo bench --bench writer -- "${N:-200000}" "${ROUNDS:-3}"
